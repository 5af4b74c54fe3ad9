// train_info.timing (harness/runner/record.h): percentiles by linear interpolation, one
// phase's figures and their nulls, and validate_record's checks (optional, typed when
// present).
#include <gtest/gtest.h>

#include <cmath>

#include "harness/base/errors.h"
#include "harness/runner/record.h"

namespace {

using nlohmann::json;
using tb::runner::percentile;
using tb::runner::phase_timing_json;

TEST(Timing, PercentilesInterpolateLinearlyBetweenRanks) {
  const std::vector<double> v = {4, 1, 3, 2};  // sorted: 1 2 3 4, ranks 0..3
  EXPECT_DOUBLE_EQ(percentile(v, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile(v, 0.1), 1.3);
  EXPECT_DOUBLE_EQ(percentile(v, 0.25), 1.75);
  EXPECT_DOUBLE_EQ(percentile(v, 0.75), 3.25);
  EXPECT_DOUBLE_EQ(percentile(v, 0.9), 3.7);
  EXPECT_DOUBLE_EQ(percentile(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(percentile(v, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(percentile({7.0}, 0.9), 7.0);
  EXPECT_TRUE(std::isnan(percentile({}, 0.5)));
}

TEST(Timing, PhaseFiguresFollowFromTotalsAndUnits) {
  // Units of 10, 20, 30, 40 tokens/s.
  const auto t = phase_timing_json(4.0, 100, 8e9, {1.0, 1.0, 1.0, 1.0}, {10, 20, 30, 40}, 1e10);
  EXPECT_EQ(t["seconds"].get<double>(), 4.0);
  EXPECT_EQ(t["tokens"].get<int64_t>(), 100);
  EXPECT_EQ(t["flops"].get<double>(), 8e9);
  EXPECT_EQ(t["units"].get<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(t["tokens_per_s"].get<double>(), 25.0);
  EXPECT_DOUBLE_EQ(t["flop_per_s"].get<double>(), 2e9);
  EXPECT_DOUBLE_EQ(t["peak_fraction"].get<double>(), 0.2);
  const auto& u = t["unit_tokens_per_s"];
  EXPECT_EQ(u["n"].get<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(u["median"].get<double>(), 25.0);
  EXPECT_DOUBLE_EQ(u["p10"].get<double>(), 13.0);
  EXPECT_DOUBLE_EQ(u["p25"].get<double>(), 17.5);
  EXPECT_DOUBLE_EQ(u["p75"].get<double>(), 32.5);
  EXPECT_DOUBLE_EQ(u["p90"].get<double>(), 37.0);

  // Nothing measured: rates null; no units: no spread; unknown peak: no fraction.
  const auto none = phase_timing_json(0.0, 0, 0.0, {}, {}, NAN);
  EXPECT_TRUE(none["tokens_per_s"].is_null());
  EXPECT_TRUE(none["flop_per_s"].is_null());
  EXPECT_TRUE(none["peak_fraction"].is_null());
  EXPECT_TRUE(none["unit_tokens_per_s"].is_null());
  EXPECT_EQ(none["units"].get<int64_t>(), 0);
  EXPECT_NO_THROW(tb::runner::validate_timing(json{{"train", t}, {"dev_eval", none}}, "x.json"));
}

TEST(Timing, ValidationTypesEveryFieldWhenPresent) {
  const auto good = phase_timing_json(2.0, 10, 1e6, {1.0, 1.0}, {4, 6}, 1e9);
  auto expect_bad = [&](json timing, const std::string& field) {
    try {
      tb::runner::validate_timing(timing, "x.json");
      ADD_FAILURE() << "accepted " << timing.dump();
    } catch (const tb::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  expect_bad(json::array(), "train_info.timing");
  auto t = good;
  t.erase("units");
  expect_bad(json{{"train", t}}, "train_info.timing.train.units");
  t = good;
  t["tokens"] = 1.5;
  expect_bad(json{{"train", t}}, "train_info.timing.train.tokens");
  t = good;
  t["peak_fraction"] = "high";
  expect_bad(json{{"test_eval", t}}, "train_info.timing.test_eval.peak_fraction");
  t = good;
  t["unit_tokens_per_s"].erase("p90");
  expect_bad(json{{"train", t}}, "train_info.timing.train.unit_tokens_per_s.p90");
}

}  // namespace
