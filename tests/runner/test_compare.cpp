// Tests of the regression gate `tunebench compare BASELINE CURRENT`: the baseline is a copy
// of the hand-written shard fixtures; each test injects one change into a copy of it (a
// quality drop, a speed drop, a memory rise, a run that fails, a changed configuration, a
// malformed record) and checks the exit code and that the output names the run and metric.
#include <gtest/gtest.h>

#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/compare.h"
#include "tests/runner/test_report_cli.h"

namespace tb::test {
namespace {

class CompareCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    base_ = dir_ / "baseline";
    cur_ = dir_ / "current";
    for (const auto& d : {base_, cur_}) {
      fs::create_directories(d);
      for (const char* shard : {"shard0", "shard1"})
        for (const auto& e : fs::directory_iterator(fixtures() / "results" / shard)) fs::copy_file(e.path(), d / e.path().filename());
    }
  }
  // Edits one record of CURRENT.
  template <class F>
  void edit(const std::string& file, F f) {
    auto j = read_json(cur_ / file);
    f(j);
    write_json(cur_ / file, j);
  }
  CliResult compare(const std::string& extra = "") {
    return run("compare " + shell_quote(base_.string()) + " " + shell_quote(cur_.string()) + extra);
  }
  fs::path base_, cur_;
};

// The regression table's line for a run and metric (text output: "  run  what  ...").
bool names_regression(const std::string& out, const std::string& run, const std::string& what) {
  const auto section = out.find("Regressions:");
  if (section == std::string::npos) return false;
  const auto end = out.find("\nImprovements:", section);
  const std::string regs = out.substr(section, end == std::string::npos ? std::string::npos : end - section);
  std::istringstream in(regs);
  for (std::string line; std::getline(in, line);)
    if (line.find(run) != std::string::npos && line.find(" " + what + " ") != std::string::npos) return true;
  return false;
}

TEST_F(CompareCli, IdenticalResultsPass) {
  const auto r = compare();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("compare: ok — 15 runs matched, 0 regressions, 0 improvements, 0 missing, 0 new"), std::string::npos)
      << r.out;
}

TEST_F(CompareCli, AQualityDropIsARegressionNamingRunAndMetric) {
  edit("lora__spam__seed0.json", [](auto& j) { j["metrics"]["accuracy"]["value"] = 0.90; });  // 0.95 -> 0.90
  const auto r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(names_regression(r.out, "lora / spam / seed 0", "accuracy")) << r.out;
  EXPECT_NE(r.out.find("-0.0500"), std::string::npos) << r.out;
}

TEST_F(CompareCli, AQualityDropWithinOneStderrOrTheFloorPasses) {
  // full on imdb seed 0: accuracy 0.79 ± 0.023; a drop of 0.02 is within one stderr.
  edit("full__sentiment-imdb__seed0.json", [](auto& j) { j["metrics"]["accuracy"]["value"] = 0.77; });
  EXPECT_EQ(compare().exit_code, 0);
  // spam full: 0.97 ± 0.005; a drop of 0.008 is above one stderr but under the 0.01 floor...
  edit("full__spam__seed0.json", [](auto& j) { j["metrics"]["accuracy"]["value"] = 0.962; });
  EXPECT_EQ(compare().exit_code, 0);
  // ...and a regression once the floor is lowered on the command line or in a tolerance file.
  const auto r = compare(" --quality-floor 0.005");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "full / spam / seed 0", "accuracy")) << r.out;
  write_json(dir_ / "tol.json", {{"metrics", {{"accuracy", {{"floor", 0.001}}}}}});
  EXPECT_EQ(compare(" --tolerance " + shell_quote((dir_ / "tol.json").string())).exit_code, 1);
  write_json(dir_ / "tol.json", {{"quality_floor", 0.02}});
  EXPECT_EQ(compare(" --tolerance " + shell_quote((dir_ / "tol.json").string())).exit_code, 0);
}

TEST_F(CompareCli, ALowerIsBetterMetricRegressesWhenItRises) {
  edit("lora__spam__seed0.json", [](auto& j) { j["metrics"]["forgetting"]["value"] = 0.2; });  // 0.03 -> 0.2
  const auto r = compare();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(names_regression(r.out, "lora / spam / seed 0", "forgetting")) << r.out;
}

TEST_F(CompareCli, ASpeedDropIsARegression) {
  edit("head__sentiment-imdb__seed0.json", [](auto& j) { j["train_info"]["train_tokens_per_s"] = 15800.0 * 0.85; });
  auto r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "head / sentiment-imdb / seed 0", "train_tokens_per_s")) << r.out;
  EXPECT_NE(r.out.find("-15.0%"), std::string::npos) << r.out;
  // 5% slower is within the default 10%.
  edit("head__sentiment-imdb__seed0.json", [](auto& j) { j["train_info"]["train_tokens_per_s"] = 15800.0 * 0.95; });
  EXPECT_EQ(compare().exit_code, 0);
  edit("full__spam__seed0.json", [](auto& j) { j["train_info"]["eval_tokens_per_s"] = 4000.0; });
  r = compare();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(names_regression(r.out, "full / spam / seed 0", "eval_tokens_per_s")) << r.out;
}

// Per-step timing: the median of each step's tokens/s, judged against the larger of the
// minimum effect and each run's spread (half the interquartile range over the median).
nlohmann::json unit_timing(double median, double rel_half_iqr, int64_t n = 40) {
  return {{"seconds", 1.0}, {"tokens", 1000}, {"flops", 1e9}, {"units", n}, {"tokens_per_s", median},
          {"flop_per_s", 1e9}, {"peak_fraction", 0.5},
          {"unit_tokens_per_s",
           {{"n", n}, {"median", median}, {"p10", median * (1 - 2 * rel_half_iqr)}, {"p25", median * (1 - rel_half_iqr)},
            {"p75", median * (1 + rel_half_iqr)}, {"p90", median * (1 + 2 * rel_half_iqr)}}}};
}

TEST_F(CompareCli, PerStepSpeedIsJudgedAgainstTheSpreadOfBothRuns) {
  const std::string f = "lora__spam__seed0.json";
  auto set = [&](const fs::path& dir, double median, double spread) {
    auto j = read_json(dir / f);
    j["train_info"]["timing"] = {{"train", unit_timing(median, spread)}, {"test_eval", unit_timing(5000, 0.02)}};
    write_json(dir / f, j);
  };
  // 15% slower but both runs' steps spread ±20% around their medians: noise, not a regression.
  set(base_, 1000, 0.20);
  set(cur_, 850, 0.20);
  auto r = compare();
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // The same drop in steady runs (±2%) exceeds the 10% minimum effect and both spreads.
  set(base_, 1000, 0.02);
  set(cur_, 850, 0.03);
  r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "lora / spam / seed 0", "timing.train.tokens_per_s")) << r.out;
  EXPECT_NE(r.out.find("-15.0%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max(min 10.0%, spreads 2.0%, 3.0%) = 10.0%"), std::string::npos) << r.out;
  // A spread on one side only is enough to excuse the move; the eval phase stays judged.
  set(cur_, 850, 0.16);
  EXPECT_EQ(compare().exit_code, 0);
  // 8% slower, steady: under the minimum effect.
  set(cur_, 920, 0.02);
  EXPECT_EQ(compare().exit_code, 0);
  // The flat field alone no longer decides when per-step timing is there.
  edit(f, [](auto& j) { j["train_info"]["train_tokens_per_s"] = j["train_info"]["train_tokens_per_s"].template get<double>() * 0.5; });
  EXPECT_EQ(compare().exit_code, 0);
  // A phase the baseline timed and the current run did not is a regression.
  edit(f, [](auto& j) { j["train_info"]["timing"].erase("test_eval"); });
  r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "lora / spam / seed 0", "timing.test_eval.tokens_per_s")) << r.out;
}

TEST_F(CompareCli, TheSuiteWallTimeIsJudgedLikeSpeed) {
  auto scale_all = [&](double k) {
    for (const auto& e : fs::directory_iterator(cur_)) {
      auto j = read_json(e.path());
      auto base = read_json(base_ / e.path().filename());
      j["train_info"]["run_seconds"] = base["train_info"]["run_seconds"].get<double>() * k;
      write_json(e.path(), j);
    }
  };
  scale_all(1.05);  // 5% slower in all: under the 10% minimum effect
  EXPECT_EQ(compare().exit_code, 0);
  scale_all(1.30);
  auto r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "suite (", "run_seconds")) << r.out;
  EXPECT_NE(r.out.find("+30.0%"), std::string::npos) << r.out;
  // Runs whose steps spread ±40% excuse the same rise: the suite's spread is their
  // time-weighted spread.
  for (const auto& dir : {base_, cur_})
    for (const auto& e : fs::directory_iterator(dir)) {
      auto j = read_json(e.path());
      j["train_info"]["timing"] = {{"train", unit_timing(1000, 0.40)}};
      write_json(e.path(), j);
    }
  EXPECT_EQ(compare().exit_code, 0) << compare().out;
}

// Records of real runs made by bench/speed_gate.sh (see tests/runner/fixtures/speed_gate/README.md:
// the machine, the load and the command): two identical runs under a competing busy process
// must pass the gate, and the same runs with an injected per-step delay (a 30% drop of the
// slowest-stepping run's training throughput) must fail it on the training speed.
TEST_F(CompareCli, RealRunsIdenticalUnderLoadPassAndAnInjectedSlowdownFails) {
  const fs::path g = fixtures() / "speed_gate";
  auto gate = [&](const char* cur) {
    return run("compare " + shell_quote((g / "baseline").string()) + " " + shell_quote((g / cur).string()));
  };
  auto r = gate("identical");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("0 regressions"), std::string::npos) << r.out;
  r = gate("slowed");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  for (const char* m : {"head", "lora"})
    EXPECT_TRUE(names_regression(r.out, std::string(m) + " / spam / seed 0", "timing.train.tokens_per_s")) << m << "\n" << r.out;
  // The slowed records say that they were slowed, and by how much.
  for (const auto& e : fs::directory_iterator(g / "slowed"))
    EXPECT_GT(read_json(e.path())["run_info"].value("injected_step_delay_ms", 0), 0) << e.path();
  for (const auto& e : fs::directory_iterator(g / "identical"))
    EXPECT_FALSE(read_json(e.path())["run_info"].contains("injected_step_delay_ms")) << e.path();
}

TEST_F(CompareCli, AMemoryRiseIsARegression) {
  edit("lora__sentiment-imdb__seed1.json", [](auto& j) {
    j["train_info"]["peak_rss_bytes"] = static_cast<int64_t>(96 * 1.2 * 1024 * 1024);
  });
  const auto r = compare();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(names_regression(r.out, "lora / sentiment-imdb / seed 1", "peak_rss_bytes")) << r.out;
  EXPECT_NE(r.out.find("+20.0%"), std::string::npos) << r.out;
}

TEST_F(CompareCli, ARunThatIsNoLongerOkIsARegression) {
  edit("head__spam__seed0.json", [](auto& j) {
    j["train_info"]["status"] = "oom";
    j["train_info"]["message"] = "allocation failed (std::bad_alloc)";
    j["metrics"] = nlohmann::json::object();
  });
  const auto r = compare();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(names_regression(r.out, "head / spam / seed 0", "status")) << r.out;
  EXPECT_NE(r.out.find("oom: allocation failed"), std::string::npos) << r.out;
}

TEST_F(CompareCli, ImprovementsAndAFixedRunPass) {
  edit("head__sentiment-imdb__seed0.json", [](auto& j) {
    j["metrics"]["accuracy"]["value"] = 0.80;
    j["train_info"]["train_tokens_per_s"] = 20000.0;
  });
  edit("prefix__spam__seed0.json", [](auto& j) {
    j["train_info"]["status"] = "ok";
    j["train_info"]["message"] = "";
    j["metrics"]["accuracy"] = {{"value", 0.93}, {"stderr", 0.007}, {"higher_is_better", true}};
  });
  const auto r = compare(" --markdown");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("# tunebench compare: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("## Improvements"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| head / sentiment-imdb / seed 0 | accuracy | 0.7100 | 0.8000 | +0.0900 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| prefix / spam / seed 0 | status |"), std::string::npos) << r.out;
}

TEST_F(CompareCli, AChangedConfigurationIsMissingPlusNewNotARegression) {
  edit("lora__spam__seed0.json", [](auto& j) {
    j["run_info"]["config_hash"] = "00112233aabbccdd";
    j["metrics"]["accuracy"]["value"] = 0.5;
  });
  fs::remove(cur_ / "majority__spam__seed0.json");
  auto r = compare();
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("13 runs matched, 0 regressions, 0 improvements, 2 missing, 1 new"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("majority / spam / seed 0 (config "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lora / spam / seed 0 (config 00112233aabbccdd)"), std::string::npos) << r.out;
  write_json(dir_ / "tol.json", {{"fail_on_missing", true}});
  r = compare(" --tolerance " + shell_quote((dir_ / "tol.json").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(names_regression(r.out, "majority / spam / seed 0", "run")) << r.out;
}

TEST_F(CompareCli, AMalformedRecordExitsTwoNamingTheFile) {
  const auto bad = cur_ / "lora__spam__seed0.json";
  {
    std::ofstream out(bad, std::ios::trunc);
    out << "{\"run_info\": {\"method\": \"lora\",";  // truncated
  }
  auto r = compare();
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find(bad.string() + ": not valid JSON"), std::string::npos) << r.err;

  write_json(bad, [&] {
    auto j = read_json(base_ / "lora__spam__seed0.json");
    j["metrics"]["accuracy"]["stderr"] = "small";
    return j;
  }());
  r = compare();
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(bad.string() + ": metrics.accuracy.stderr: missing or not a number"), std::string::npos) << r.err;
}

TEST_F(CompareCli, BadUsageAndToleranceFilesExitTwo) {
  auto r = run("compare " + shell_quote(base_.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("expected two results directories"), std::string::npos) << r.err;
  write_json(dir_ / "tol.json", {{"quality_flor", 0.02}});
  r = compare(" --tolerance " + shell_quote((dir_ / "tol.json").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tol.json: quality_flor: unknown key"), std::string::npos) << r.err;
  write_json(dir_ / "tol.json", {{"peak_memory_rise", -0.1}});
  r = compare(" --tolerance " + shell_quote((dir_ / "tol.json").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("peak_memory_rise must be a non-negative number"), std::string::npos) << r.err;
  r = compare(" --quality-floor -1");
  EXPECT_EQ(r.exit_code, 2);
  fs::remove_all(cur_);
  fs::create_directories(cur_);
  r = compare();
  EXPECT_EQ(r.exit_code, 2);  // a night that wrote no record must not pass the gate
  EXPECT_NE(r.err.find("has no records"), std::string::npos) << r.err;
}

TEST(CompareLib, UsesTheLargerStderrOfTheTwoRuns) {
  // Baseline stderr 0.01, current 0.05: a drop of 0.04 is within max(0.05, 0.01).
  const auto rs = reports::read_results({fixtures() / "results" / "shard1"}, runner::method_names(methods::registry()));
  auto cur = rs;
  for (auto& r : cur.records)
    if (r.method == "head") {
      r.json["metrics"]["accuracy"]["value"] = 0.87;
      r.json["metrics"]["accuracy"]["stderr"] = 0.05;
    }
  EXPECT_FALSE(reports::compare_results(rs, cur, {}).regressed());
  reports::Tolerance strict;
  strict.quality_stderr = 0.5;  // 0.025 < 0.04
  const auto c = reports::compare_results(rs, cur, strict);
  ASSERT_EQ(c.regressions.size(), 1u);
  EXPECT_EQ(c.regressions[0].run, "head / spam / seed 0");
  EXPECT_EQ(c.regressions[0].what, "accuracy");
}

}  // namespace
}  // namespace tb::test
