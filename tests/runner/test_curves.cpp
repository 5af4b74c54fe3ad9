// Learning curves and tuning (issue #16 items 1 and 5): the class-balanced nested train
// subsets, the records a --train-sizes matrix writes (run_info.train_size, file names per
// size, --resume), the curve and crossover the report computes from records and the SVG it
// draws, --tune's choice on dev and its record, and the errors of the new inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "harness/base/errors.h"
#include "harness/runner/record.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/curves.h"
#include "reports/report.h"
#include "reports/results.h"
#include "tasks/task.h"
#include "tests/runner/runner_fixture.h"
#include "tests/runner/test_report_cli.h"

namespace tb::testing {
namespace {

using nlohmann::json;

std::vector<tasks::Example> labelled(const std::vector<int>& class_sizes) {
  std::vector<tasks::Example> v;
  int id = 0;
  for (std::size_t c = 0; c < class_sizes.size(); ++c)
    for (int i = 0; i < class_sizes[c]; ++i) {
      tasks::Example e;
      e.id = "ex" + std::to_string(id++ * 7919 % 1000);  // not sorted by class
      e.text = "text " + e.id;
      e.label = static_cast<int>(c);
      v.push_back(e);
    }
  // Sorted by label as many split files are: a prefix would be one class only.
  return v;
}

std::map<int, int> class_counts(const std::vector<tasks::Example>& v) {
  std::map<int, int> c;
  for (const auto& e : v) ++c[e.label];
  return c;
}

std::set<std::string> ids(const std::vector<tasks::Example>& v) {
  std::set<std::string> s;
  for (const auto& e : v) s.insert(e.id);
  return s;
}

TEST(TrainSubsets, AreNestedClassBalancedAndStable) {
  const auto all = labelled({60, 25, 15});
  std::vector<tasks::Example> prev;
  for (int64_t n : {1, 2, 3, 8, 20, 32, 45, 64, 99}) {
    SCOPED_TRACE(n);
    const auto sub = tasks::balanced_subset(all, n);
    ASSERT_EQ(static_cast<int64_t>(sub.size()), n);
    EXPECT_EQ(ids(sub).size(), sub.size());  // no example twice
    // Nested: the smaller subset is part of this one.
    for (const auto& id : ids(prev)) EXPECT_TRUE(ids(sub).count(id)) << id;
    // Balanced: while every class still has examples left, counts differ by at most one; a
    // class that ran out keeps all of its examples.
    const auto counts = class_counts(sub);
    int lo = 1 << 30, hi = 0;
    const int sizes[] = {60, 25, 15};
    for (int c = 0; c < 3; ++c) {
      const int k = counts.count(c) ? counts.at(c) : 0;
      if (k == sizes[c]) continue;  // exhausted
      lo = std::min(lo, k), hi = std::max(hi, k);
    }
    if (hi > 0) {
      EXPECT_LE(hi - lo, 1) << "n=" << n;
    }
    for (int c = 0; c < 3; ++c) {
      if (counts.count(c) && counts.at(c) < sizes[c]) {
        EXPECT_GE(counts.at(c), std::min<int64_t>(n / 3, sizes[c]) - 1);
      }
    }
    // In split order, and the same every time.
    for (std::size_t i = 1; i < sub.size(); ++i) {
      const auto pos = [&all](const std::string& id) {
        return std::find_if(all.begin(), all.end(), [&id](const auto& e) { return e.id == id; }) - all.begin();
      };
      EXPECT_LT(pos(sub[i - 1].id), pos(sub[i].id));
    }
    EXPECT_EQ(ids(tasks::balanced_subset(all, n)), ids(sub));
    prev = sub;
  }
  // At 8 of three classes: 3, 3, 2 — never 8 of the first class as a prefix would take.
  const auto eight = class_counts(tasks::balanced_subset(all, 8));
  EXPECT_EQ(eight.size(), 3u);
  for (const auto& [c, k] : eight) EXPECT_GE(k, 2) << c;
  // n <= 0 or n >= size: the whole split.
  EXPECT_EQ(tasks::balanced_subset(all, 0).size(), all.size());
  EXPECT_EQ(tasks::balanced_subset(all, 1000).size(), all.size());
}

TEST(TrainSizes, ParseAndReject) {
  EXPECT_EQ(runner::parse_train_sizes("8, 32,128,512,all", "--train-sizes"),
            (std::vector<std::string>{"8", "32", "128", "512", "all"}));
  for (const char* bad : {"32,8", "8,8", "all,8", "0,8", "-4", "eight", ""}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(runner::parse_train_sizes(bad, "--train-sizes"), InputError);
  }
}

// The committed learning-curve suite parses and asks for what its comment says.
TEST(TrainSizes, TheLearningCurveSuiteParses) {
  const auto s = runner::read_suite(fs::path(TB_SOURCE_DIR) / "suites" / "learning-curves.ini", methods::registry());
  ASSERT_TRUE(s.train_sizes && s.methods && s.tasks && s.seeds);
  EXPECT_EQ(*s.train_sizes, (std::vector<std::string>{"8", "32", "128", "all"}));
  EXPECT_EQ(*s.methods, (std::vector<std::string>{"majority", "icl", "head", "lora", "full"}));
  EXPECT_EQ(s.tasks->size(), 3u);
  EXPECT_EQ(s.seeds->size(), 3u);
  // The default suite has no learning curve (make run stays within its 15 minutes).
  EXPECT_FALSE(runner::read_suite(fs::path(TB_SOURCE_DIR) / "suites" / "default.ini", methods::registry()).train_sizes);
}

TEST(TuneGrid, EntriesAreCheckedAndApplyPerMethod) {
  const auto& reg = methods::registry();
  runner::TuneGrid g;
  runner::add_tune_flag(g, "lr=1e-4,3e-4,1e-3", reg);
  runner::add_tune_flag(g, "lora.lr=1e-3,5e-3", reg);
  // The shared grid applies to methods that learn from train and declare lr; lora's own
  // replaces it; methods without the option (feature, majority) are not tuned.
  EXPECT_EQ(runner::tune_grid_for(g, methods::find("full")).at("lr"), (std::vector<std::string>{"1e-4", "3e-4", "1e-3"}));
  EXPECT_EQ(runner::tune_grid_for(g, methods::find("lora")).at("lr"), (std::vector<std::string>{"1e-3", "5e-3"}));
  EXPECT_TRUE(runner::tune_grid_for(g, methods::find("feature")).empty());
  EXPECT_TRUE(runner::tune_grid_for(g, methods::find("majority")).empty());
  auto message = [&reg](const std::string& flag) {
    runner::TuneGrid g2;
    try {
      runner::add_tune_flag(g2, flag, reg);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("lr"), "--tune: 'lr' is not OPTION=V1,V2,... (e.g. lr=1e-4,3e-4,1e-3 or lora.lr=1e-4,1e-3)");
  EXPECT_EQ(message("nosuch.lr=1"), "--tune: nosuch.lr: no method 'nosuch'");
  EXPECT_EQ(message("feature.lr=1"), "--tune: feature.lr: feature has no option 'lr'");
  EXPECT_EQ(message("speed=1,2"), "--tune: speed: no method has an option 'speed'");
  EXPECT_EQ(message("lr=1e-3,1e-3"), "--tune: lr: value '1e-3' listed twice");
  EXPECT_EQ(message("lr="), "--tune: lr: no values to try (expected e.g. lr = 1e-4,3e-4,1e-3)");
}

TEST(CurveRecords, FileNamesAndFieldsAreValidated) {
  EXPECT_EQ(runner::record_filename("lora", "spam", 2, "32"), "lora__spam__n32__seed2.json");
  EXPECT_EQ(runner::record_filename("lora", "spam", 2, "all"), "lora__spam__nall__seed2.json");
  EXPECT_EQ(runner::record_filename("lora", "spam", 2), "lora__spam__seed2.json");
  EXPECT_TRUE(runner::is_record_filename("lora__spam__n32__seed2.json"));
  json j = tb::test::read_json(tb::test::fixtures() / "results" / "shard1" / "lora__spam__seed0.json");
  runner::validate_record(j, "x");  // without the fields: valid
  j["run_info"]["train_subset"] = "32";
  EXPECT_THROW(runner::validate_record(j, "x"), FormatError);  // train_size missing
  j["run_info"]["train_size"] = 32;
  runner::validate_record(j, "x");
  j["run_info"]["train_subset"] = "thirty";
  EXPECT_THROW(runner::validate_record(j, "x"), FormatError);
  j["run_info"]["train_subset"] = "32";
  j["run_info"]["tuning"] = {{"split", "dev"}, {"metric", "accuracy"}, {"higher_is_better", true}, {"seconds", 1.0},
                             {"grid", {{"lr", {"1e-3"}}}}, {"chosen", {{"lr", "1e-3"}}},
                             {"trials", {{{"options", {{"lr", "1e-3"}}}, {"status", "ok"}, {"dev", 0.5}}}}};
  runner::validate_record(j, "x");
  j["run_info"]["tuning"]["trials"][0].erase("dev");
  try {
    runner::validate_record(j, "x");
    ADD_FAILURE() << "a trial without its dev score validated";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("run_info.tuning.trials"), std::string::npos) << e.what();
  }
}

// A --train-sizes matrix on the tiny task: head (learns from train) runs at each size,
// majority once; records carry train_size and are named per size; --resume skips them all.
TEST_F(RunnerTest, TrainSizesRunEachLearningMethodAtEachSizeAndResume) {
  const fs::path out = dir_ / "out";
  const std::string flags = "--train-sizes 2,4,all --head.epochs 1 --head.batch 2 --head.max-length 24";
  const auto r = cli(run_args("majority,head", out, flags));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), (std::set<std::string>{"head__tiny-sst2__n2__seed0.json", "head__tiny-sst2__n4__seed0.json",
                                                       "head__tiny-sst2__nall__seed0.json", "majority__tiny-sst2__seed0.json"}));
  const auto all_train = runner::read_record(out / "majority__tiny-sst2__seed0.json").json["run_info"]["examples"]["train"].get<int64_t>();
  ASSERT_GT(all_train, 4);
  std::set<std::string> hashes;
  for (const auto& [subset, size] : std::vector<std::pair<std::string, int64_t>>{{"2", 2}, {"4", 4}, {"all", all_train}}) {
    const auto rec = runner::read_record(out / ("head__tiny-sst2__n" + subset + "__seed0.json"));
    EXPECT_EQ(rec.status, "ok") << rec.message;
    EXPECT_EQ(rec.train_subset, subset);
    EXPECT_EQ(rec.train_size, size);
    EXPECT_EQ(rec.json["run_info"]["train_size"], size);
    EXPECT_EQ(rec.json["run_info"]["examples"]["train"], size);
    hashes.insert(rec.config_hash);
  }
  EXPECT_EQ(hashes.size(), 3u);  // one configuration per size
  EXPECT_FALSE(runner::read_record(out / "majority__tiny-sst2__seed0.json").json["run_info"].contains("train_size"));
  const auto again = cli(run_args("majority,head", out, flags + " --resume"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("0 runs executed, 4 resumed"), std::string::npos) << again.out;
  // Without --resume the records are never overwritten.
  EXPECT_EQ(cli(run_args("majority,head", out, flags)).exit_code, 2);
  // The report draws the curve from these records.
  const auto rs = reports::read_results({out}, runner::method_names(methods::registry()));
  const auto curves = reports::learning_curves(rs);
  ASSERT_EQ(curves.size(), 1u);
  ASSERT_EQ(curves[0].methods.size(), 1u);
  EXPECT_EQ(curves[0].methods[0].method, "head");
  ASSERT_EQ(curves[0].methods[0].points.size(), 3u);
  EXPECT_EQ(curves[0].methods[0].points[0].n, 2);
  EXPECT_EQ(curves[0].methods[0].points[2].n, static_cast<double>(all_train));
  EXPECT_NE(reports::report_html(rs).find("<svg id=\"curve-tiny-sst2\" class=\"chart chart-curve\""), std::string::npos);
}

TEST_F(RunnerTest, TrainSizesAndTuneInputErrorsNameTheirSource) {
  auto r = cli(run_args("head", dir_ / "o1", "--train-sizes 8,4"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--train-sizes: sizes must increase"), std::string::npos) << r.err;
  r = cli(run_args("head", dir_ / "o2", "--tune head.rank=1,2"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--tune: head.rank: head has no option 'rank'"), std::string::npos) << r.err;
  const fs::path suite = dir_ / "s.ini";
  std::ofstream(suite) << "[run]\nmethods = head\ntrain-sizes = 4, all\n\n[tune]\nlr = 1e-3, 1e-2\nlora.alpha =\n";
  r = cli("run --suite " + shell_quote(suite.string()) + " --out " + shell_quote((dir_ / "o3").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("s.ini:7: [tune]: lora.alpha: no values to try"), std::string::npos) << r.err;
  std::ofstream(suite) << "[run]\nmethods = head\ntrain-sizes = all, 4\n";
  r = cli("run --suite " + shell_quote(suite.string()) + " --out " + shell_quote((dir_ / "o4").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("s.ini:3: train-sizes: 'all' must be the last size"), std::string::npos) << r.err;
}

// --tune: one training per value on train, dev scores recorded, the best value used for the
// run whose test metrics the record holds; a suite's [tune] section does the same.
TEST_F(RunnerTest, TuneChoosesOnDevRecordsEveryTrialAndUsesTheWinner) {
  const fs::path out = dir_ / "out";
  const std::string flags = "--tune head.lr=1e-4,1e-2 --head.epochs 2 --head.batch 2 --head.max-length 24 --head.patience 5";
  const auto r = cli(run_args("head", out, flags));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rec = runner::read_record(out / "head__tiny-sst2__seed0.json");
  ASSERT_EQ(rec.status, "ok") << rec.message;
  const auto& t = rec.json["run_info"]["tuning"];
  EXPECT_EQ(t["split"], "dev");
  EXPECT_EQ(t["metric"], "accuracy");
  EXPECT_EQ(t["grid"], json({{"lr", {"1e-4", "1e-2"}}}));
  ASSERT_EQ(t["trials"].size(), 2u);
  double best = -1;
  std::string best_lr;
  for (const auto& tr : t["trials"]) {
    ASSERT_EQ(tr["status"], "ok") << tr.dump();
    ASSERT_TRUE(tr["dev"].is_number());
    if (tr["dev"].get<double>() > best) best = tr["dev"].get<double>(), best_lr = tr["options"]["lr"].get<std::string>();
  }
  EXPECT_EQ(t["chosen"]["lr"], best_lr);
  EXPECT_EQ(rec.json["run_info"]["options"]["lr"], best_lr);  // the test run used the winner
  EXPECT_GT(t["seconds"].get<double>(), 0.0);
  // The report says the run was tuned and how.
  const auto rs = reports::read_results({out}, runner::method_names(methods::registry()));
  const auto md = reports::report_markdown(rs);
  EXPECT_NE(md.find("| tiny-sst2 | head |  | lr ∈ {1e-4,1e-2} | seed 0: chose lr=" + best_lr), std::string::npos) << md;
  // Resume keeps it; another grid is another configuration (an error, not a silent mix).
  EXPECT_EQ(cli(run_args("head", out, flags + " --resume")).exit_code, 0);
  const auto other = cli(run_args("head", out, "--tune head.lr=1e-3 --head.epochs 2 --head.batch 2 --head.max-length 24 "
                                               "--head.patience 5 --resume"));
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_NE(other.err.find("another configuration"), std::string::npos) << other.err;
}


// The curve, levels and crossover of hand-made records: lora on spam at 8/32/128 examples
// (two seeds each), icl at 8/32 with details.by_k, majority once. Numbers worked by hand.
class CurveReport : public tb::test::CliTest {
 protected:
  json base() { return tb::test::read_json(tb::test::fixtures() / "results" / "shard1" / "lora__spam__seed0.json"); }
  void put(const std::string& method, const std::string& subset, int64_t n, uint64_t seed, double acc, double se,
           const json& by_k = nullptr) {
    json j = base();
    j["run_info"]["method"] = method;
    j["run_info"]["seed"] = seed;
    j["run_info"]["config_hash"] = method + subset;
    if (!subset.empty()) {
      j["run_info"]["train_subset"] = subset;
      j["run_info"]["train_size"] = n;
    }
    j["metrics"] = {{"accuracy", {{"value", acc}, {"stderr", se}, {"higher_is_better", true}}}};
    if (!by_k.is_null()) j["train_info"]["details"] = {{"by_k", by_k}, {"prediction_k", 4}};
    tb::test::write_json(dir_ / runner::record_filename(method, "spam", seed, subset), j);
  }
};

TEST_F(CurveReport, CrossoverIsWhereAMethodFirstBeatsTheBestInContextSetting) {
  put("lora", "8", 8, 0, 0.60, 0.02);
  put("lora", "8", 8, 1, 0.62, 0.02);
  put("lora", "32", 32, 0, 0.70, 0.02);
  put("lora", "32", 32, 1, 0.72, 0.02);
  put("lora", "128", 128, 0, 0.90, 0.01);
  put("lora", "128", 128, 1, 0.92, 0.01);
  put("icl", "8", 8, 0, 0.68, 0.02, {{"0", {{"accuracy", 0.55}}}, {"4", {{"accuracy", 0.68}}}});
  put("icl", "32", 32, 0, 0.74, 0.02, {{"0", {{"accuracy", 0.55}}}, {"1", {{"accuracy", 0.66}}}, {"4", {{"accuracy", 0.74}}}});
  put("majority", "", 0, 0, 0.50, 0.03);
  const auto rs = reports::read_results({dir_}, runner::method_names(methods::registry()));
  const auto curves = reports::learning_curves(rs);
  ASSERT_EQ(curves.size(), 1u);
  const auto& c = curves[0];
  EXPECT_EQ(c.task, "spam");
  ASSERT_EQ(c.methods.size(), 2u);
  EXPECT_EQ(c.methods[0].method, "icl");  // the registry's order
  const auto& lora = c.methods[1];
  ASSERT_EQ(lora.points.size(), 3u);
  EXPECT_NEAR(lora.points[1].value, 0.71, 1e-12);
  EXPECT_NEAR(lora.points[1].err, std::sqrt(0.02 * 0.02 + 0.0002 / 2), 1e-12);  // results.h's combination
  EXPECT_EQ(lora.points[1].seeds, 2);
  EXPECT_NEAR(c.zero_shot.value, 0.55, 1e-12);
  EXPECT_EQ(c.best_icl.k, 4);
  EXPECT_EQ(c.best_icl.n, 32);
  EXPECT_NEAR(c.best_icl.value, 0.74, 1e-12);
  EXPECT_NEAR(c.majority, 0.50, 1e-12);
  ASSERT_EQ(c.crossovers.size(), 1u);
  const auto& x = c.crossovers[0];
  EXPECT_TRUE(x.found);
  EXPECT_EQ(x.n, 128);
  EXPECT_EQ(x.n_before, 32);
  EXPECT_NEAR(x.diff, 0.91 - 0.74, 1e-12);
  EXPECT_TRUE(x.clear);
  EXPECT_EQ(x.n_clear, 128);
  const auto html = reports::report_html(rs);
  EXPECT_NE(html.find("<section id=\"learning-curves\">"), std::string::npos);
  EXPECT_NE(html.find("<svg id=\"curve-spam\" class=\"chart chart-curve\""), std::string::npos);
  EXPECT_NE(html.find("class=\"crossover-mark\""), std::string::npos);
  EXPECT_NE(html.find("lora first beats the best in-context setting (icl k=4 from 32 examples, accuracy 0.7400 ± 0.0200) on "
                      "spam between 32 and 128 labelled examples: by +0.1700 ± "),
            std::string::npos)
      << html;
  const auto md = reports::report_markdown(rs);
  EXPECT_NE(md.find("| lora | 0.6100 ± "), std::string::npos) << md;
  EXPECT_NE(md.find("- zero-shot (icl k=0): 0.5500 ± "), std::string::npos) << md;
  // Change a record, the curve and the crossover move: lora at 32 now beats icl's best.
  put("lora", "32", 32, 0, 0.80, 0.01);
  put("lora", "32", 32, 1, 0.82, 0.01);
  const auto moved = reports::learning_curves(reports::read_results({dir_}, runner::method_names(methods::registry())));
  EXPECT_EQ(moved[0].crossovers[0].n, 32);
  EXPECT_EQ(moved[0].crossovers[0].n_before, 8);
  // No size beats it: the sentence says so, with the largest size run.
  for (uint64_t seed : {0, 1}) {
    put("lora", "32", 32, seed, 0.60, 0.01);
    put("lora", "128", 128, seed, 0.60, 0.01);
  }
  const auto none = reports::learning_curves(reports::read_results({dir_}, runner::method_names(methods::registry())));
  EXPECT_FALSE(none[0].crossovers[0].found);
  EXPECT_NE(reports::report_markdown(reports::read_results({dir_}, runner::method_names(methods::registry())))
                .find("lora does not beat the best in-context setting (icl k=4 from 32 examples, accuracy 0.7400 ± 0.0200) on "
                      "spam at any size up to 128 labelled examples."),
            std::string::npos);
}

}  // namespace
}  // namespace tb::testing
