// Record conformance (issue 14): the records of head, full, lora, adapter, prefix,
// softprompt and feature against counts this test makes itself — train tokens = the train
// split's real tokens × epochs, eval tokens = the test split's real tokens, rates = figure /
// seconds, the peak fraction ≤ 1 and divided by the peak of the precision that ran, measured
// at the profiler's size, train_info.timing's phases carrying exactly the flat figures — and the
// same seed twice gives bitwise-identical metrics and counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "harness/core/dnnl/dnn.h"
#include "harness/runner/meter.h"
#include "harness/tools/profile.h"
#include "tasks/registry.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;

class RecordConformance : public RunnerTest {
 protected:
  // Real tokens of a split under the head objective (encode as text, capped, at least one).
  int64_t real_tokens(const std::string& split, int64_t max_len) const {
    const auto reg = tasks::Registry::from_dir(task_file_.parent_path());
    const auto task = reg.load("tiny-sst2");
    const auto tok = Tokenizer::from_dir(model_dir_.string());
    int64_t n = 0;
    for (const auto& ex : task->split(split)) {
      const auto k = static_cast<int64_t>(tok.encode(ex.text, SpecialTokens::as_text).size());
      n += std::min<int64_t>(std::max<int64_t>(k, 1), max_len);
    }
    return n;
  }

  // Rates and peak fractions of a record follow from its own figures and peak.
  static void check_rates(const json& rec, const std::string& peak_key) {
    const auto& ti = rec["train_info"];
    const auto& mi = rec["meta_info"];
    ASSERT_TRUE(mi.contains(peak_key) && mi[peak_key].is_number()) << peak_key;
    const double peak = mi[peak_key].get<double>() * 1e9;
    EXPECT_EQ(mi["matmul_peak_size"].get<int64_t>(), runner::kPeakMatmulSize);
    for (const char* side : {"train", "eval"}) {
      const std::string s = side;
      const double flops = ti[s + "_flops"].get<double>(), secs = ti[s + "_seconds"].get<double>();
      const int64_t tokens = ti[s + "_tokens"].get<int64_t>();
      ASSERT_GT(flops, 0.0) << s;
      ASSERT_GT(secs, 0.0) << s;
      EXPECT_NEAR(ti[s + "_tokens_per_s"].get<double>(), double(tokens) / secs, 1e-9 * double(tokens) / secs) << s;
      EXPECT_NEAR(ti[s + "_flop_per_s"].get<double>(), flops / secs, 1e-9 * flops / secs) << s;
      const double frac = ti[s + "_peak_fraction"].get<double>();
      EXPECT_NEAR(frac, flops / secs / peak, 1e-9 * frac) << s;
      EXPECT_LE(frac, 1.0) << s;
    }
    EXPECT_LE(ti["train_seconds"].get<double>(), ti["prepare_seconds"].get<double>());
    EXPECT_LE(ti["eval_seconds"].get<double>(), ti["predict_seconds"].get<double>());
    EXPECT_FALSE(ti["cache_hit"].get<bool>());
  }

  // train_info.timing: the flat train_* / eval_* figures are the train and test_eval phases'
  // own, the rates follow from each phase's figures, and the per-unit spread is ordered.
  static void check_timing(const json& rec) {
    const auto& ti = rec["train_info"];
    ASSERT_TRUE(ti.contains("timing") && ti["timing"].is_object());
    const auto& tm = ti["timing"];
    for (const auto& [phase, side] : {std::pair<std::string, std::string>{"train", "train"}, {"test_eval", "eval"}}) {
      SCOPED_TRACE(phase);
      ASSERT_TRUE(tm.contains(phase));
      const auto& t = tm[phase];
      EXPECT_EQ(t["tokens"].get<int64_t>(), ti[side + "_tokens"].get<int64_t>());
      EXPECT_EQ(t["seconds"].get<double>(), ti[side + "_seconds"].get<double>());
      EXPECT_EQ(t["flops"].get<double>(), ti[side + "_flops"].get<double>());
      for (const char* f : {"tokens_per_s", "flop_per_s", "peak_fraction"})
        EXPECT_EQ(t[f].dump(), ti[side + "_" + f].dump()) << f;
      if (t["peak_fraction"].is_number()) {
        EXPECT_LE(t["peak_fraction"].get<double>(), 1.0);
      }
      const auto& u = t["unit_tokens_per_s"];
      if (t["units"].get<int64_t>() > 0) {
        ASSERT_TRUE(u.is_object());
        EXPECT_EQ(u["n"].get<int64_t>(), t["units"].get<int64_t>());
        EXPECT_LE(u["p10"].get<double>(), u["p25"].get<double>());
        EXPECT_LE(u["p25"].get<double>(), u["median"].get<double>());
        EXPECT_LE(u["median"].get<double>(), u["p75"].get<double>());
        EXPECT_LE(u["p75"].get<double>(), u["p90"].get<double>());
        EXPECT_GT(u["p10"].get<double>(), 0.0);
      }
    }
  }
};

TEST_F(RecordConformance, TrainingMethodsCountWhatTheyRanAndRepeatBitForBit) {
  // Every method on the shared trainer runs 2 epochs; feature extracts its features once.
  const std::vector<std::pair<std::string, int64_t>> methods = {
      {"head", 2}, {"full", 2}, {"lora", 2}, {"adapter", 2}, {"prefix", 2}, {"softprompt", 2}, {"feature", 1}};
  std::string names, flags = "--feature.max-length 24";
  for (const auto& [m, epochs] : methods) {
    names += (names.empty() ? "" : ",") + m;
    if (m != "feature")
      flags += " --" + m + ".epochs 2 --" + m + ".patience 9 --" + m + ".batch 2 --" + m + ".max-length 24";
  }
  const auto a = cli(run_args(names, dir_ / "a", flags));
  const auto b = cli(run_args(names, dir_ / "b", flags));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const int64_t train_real = real_tokens("train", 24), test_real = real_tokens("test", 24);
  ASSERT_GT(train_real, 0);
  for (const auto& [method, epochs] : methods) {
    SCOPED_TRACE(method);
    const std::string file = method + "__tiny-sst2__seed0.json";
    const auto ra = runner::read_record(dir_ / "a" / file);
    const auto rb = runner::read_record(dir_ / "b" / file);
    ASSERT_EQ(ra.status, "ok") << ra.message;
    const auto& ti = ra.json["train_info"];
    if (method != "feature") {
      EXPECT_EQ(ti["epochs"].get<int64_t>(), epochs);
    }
    EXPECT_EQ(ti["train_tokens"].get<int64_t>(), epochs * train_real);
    EXPECT_EQ(ti["eval_tokens"].get<int64_t>(), test_real);
    check_rates(ra.json, "matmul_peak_gflop_per_s");
    check_timing(ra.json);
    EXPECT_FALSE(ra.json["run_info"].contains("injected_step_delay_ms"));
    const auto& tm = ti["timing"];
    if (method != "feature") {
      // One unit per training step and one per test batch (batch 2) or per lm scoring call.
      EXPECT_EQ(tm["train"]["units"].get<int64_t>(), ti["steps"].get<int64_t>());
      EXPECT_GT(tm["test_eval"]["units"].get<int64_t>(), 0);
      // The per-epoch dev passes are their own phase, the figures details.dev_eval reports.
      ASSERT_TRUE(tm.contains("dev_eval"));
      const auto& dev = ti["details"]["dev_eval"];
      EXPECT_EQ(tm["dev_eval"]["tokens"].get<int64_t>(), dev["tokens"].get<int64_t>());
      EXPECT_EQ(tm["dev_eval"]["flops"].get<double>(), dev["flops"].get<double>());
      EXPECT_EQ(tm["dev_eval"]["units"].get<int64_t>(), tm["dev_eval"]["unit_tokens_per_s"]["n"].get<int64_t>());
    }
    // The same seed: bitwise-identical metrics and counts (timing fields aside).
    EXPECT_EQ(ra.json["metrics"].dump(), rb.json["metrics"].dump());
    for (const char* k : {"train_tokens", "eval_tokens", "train_flops", "eval_flops", "steps", "loss_curve"})
      EXPECT_EQ(ti[k].dump(), rb.json["train_info"][k].dump()) << k;
  }
}

// TB_TEST_STEP_DELAY_MS (a test fault) slows every training step and is written into the
// record, so a slowed run can never pass for a normal one.
TEST_F(RecordConformance, InjectedStepDelayShowsInTheRecordAndInEveryStep) {
  const std::string flags = "--head.epochs 1 --head.batch 2 --head.max-length 24";
  ASSERT_EQ(::setenv("TB_TEST_STEP_DELAY_MS", "40", 1), 0);  // inherited by the CLI's process
  const auto r = cli(run_args("head", dir_ / "slow", flags));
  ASSERT_EQ(::unsetenv("TB_TEST_STEP_DELAY_MS"), 0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rec = runner::read_record(dir_ / "slow" / "head__tiny-sst2__seed0.json");
  ASSERT_EQ(rec.status, "ok") << rec.message;
  EXPECT_EQ(rec.json["run_info"]["injected_step_delay_ms"].get<int64_t>(), 40);
  const auto& ti = rec.json["train_info"];
  const auto& train = ti["timing"]["train"];
  const int64_t steps = ti["steps"].get<int64_t>();
  ASSERT_GT(steps, 0);
  EXPECT_GE(train["seconds"].get<double>(), 0.040 * static_cast<double>(steps));
  EXPECT_GE(ti["train_seconds"].get<double>(), 0.040 * static_cast<double>(steps));
}

// `tunebench profile` and the records measure the peak the same way, at the same size.
TEST(PeakMeasurement, ProfileAndRunnerShareOneSize) {
  EXPECT_EQ(tools::ProfileSpec{}.peak_size, runner::kPeakMatmulSize);
}

// A bf16 run's FLOP rate is a fraction of the bf16 peak, not of the fp32 one.
TEST_F(RecordConformance, Bf16RunsAreDividedByTheBf16Peak) {
  if (!dnn::info().bf16_supported)
    GTEST_SKIP() << "CPU has no native bf16 (AVX512-BF16/AMX): a bf16 run cannot start here";
  const auto r = cli(run_args("head", dir_ / "bf", "--precision bf16 --head.epochs 2 --head.batch 2 --head.max-length 24"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rec = runner::read_record(dir_ / "bf" / "head__tiny-sst2__seed0.json");
  ASSERT_EQ(rec.status, "ok") << rec.message;
  check_rates(rec.json, "matmul_peak_bf16_gflop_per_s");
  EXPECT_GT(rec.json["meta_info"]["matmul_peak_gflop_per_s"].get<double>(), 0.0);
}

}  // namespace
}  // namespace tb::testing
