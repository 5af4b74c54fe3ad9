// Cost-balanced shards (harness/runner/shard.h): every run in exactly one shard, the same
// assignment every time, the most loaded shard within one run's cost of the least loaded,
// round-robin when costs are equal; and the matrix's shards into one shared directory
// make exactly the records of the unsharded matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "harness/runner/runner.h"
#include "harness/runner/shard.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

std::vector<int64_t> loads_of(const std::vector<int64_t>& costs, const std::vector<int64_t>& shard, int64_t n) {
  std::vector<int64_t> loads(static_cast<std::size_t>(n), 0);
  for (std::size_t i = 0; i < costs.size(); ++i) loads[static_cast<std::size_t>(shard[i])] += costs[i];
  return loads;
}

TEST(Shards, EveryRunInExactlyOneShardAndImbalanceBoundedByTheCostliestRun) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const auto runs = static_cast<std::size_t>(1 + rng() % 60);
    const auto n = static_cast<int64_t>(1 + rng() % 9);
    std::vector<int64_t> costs(runs);
    // Costs spread over four orders of magnitude, as a matrix of reference rows and finetunes.
    for (auto& c : costs) c = 1 + static_cast<int64_t>(rng() % 4 == 0 ? rng() % 1000000 : rng() % 1000);
    const auto shard = runner::assign_shards(costs, n);
    ASSERT_EQ(shard.size(), runs);
    for (const auto s : shard) ASSERT_TRUE(s >= 0 && s < n) << s;
    EXPECT_EQ(runner::assign_shards(costs, n), shard) << "not deterministic";
    const auto loads = loads_of(costs, shard, n);
    const int64_t total = std::accumulate(costs.begin(), costs.end(), int64_t{0});
    EXPECT_EQ(std::accumulate(loads.begin(), loads.end(), int64_t{0}), total);
    const int64_t max_cost = *std::max_element(costs.begin(), costs.end());
    const int64_t hi = *std::max_element(loads.begin(), loads.end());
    EXPECT_LE(hi, total / n + max_cost) << "trial " << trial;
    // Shards that got runs are within the costliest run of each other.
    if (static_cast<int64_t>(runs) >= n) {
      const int64_t lo = *std::min_element(loads.begin(), loads.end());
      EXPECT_LE(hi - lo, max_cost) << "trial " << trial;
    }
  }
}

TEST(Shards, EqualCostsAreRoundRobinByMatrixIndex) {
  const std::vector<int64_t> costs(23, 5);
  const auto shard = runner::assign_shards(costs, 4);
  for (std::size_t i = 0; i < costs.size(); ++i) EXPECT_EQ(shard[i], static_cast<int64_t>(i % 4)) << i;
  EXPECT_EQ(runner::assign_shards(costs, 1), std::vector<int64_t>(23, 0));
}

TEST(Shards, ExpensiveRunsAreSpreadWhereRoundRobinWouldStackThem) {
  // Method-major order puts a costly method's runs at alternating indices with two shards:
  // index % 2 would give one shard all of them (400 vs 4).
  const std::vector<int64_t> costs = {100, 1, 100, 1, 100, 1, 100, 1};
  const auto loads = loads_of(costs, runner::assign_shards(costs, 2), 2);
  EXPECT_EQ(loads, (std::vector<int64_t>{202, 202}));
}

TEST(Shards, CostFollowsTheSizesAndOptionsTheRunnerKnows) {
  methods::MethodInfo reference, trained, icl;
  trained.options = {{"epochs", "3", ""}, {"max-length", "128", ""}};
  icl.options = {{"k", "0,4", ""}};
  const runner::CostInputs small{100, 50, 50, 0}, big{1000, 50, 50, 0};
  EXPECT_EQ(runner::estimate_run_cost(reference, {}, small), 200);
  EXPECT_EQ(runner::estimate_run_cost(trained, {{"epochs", "1"}, {"max-length", "64"}}, small),
            3 * 1 * 100 * 64 + (1 * 50 + 50) * 64);
  EXPECT_GT(runner::estimate_run_cost(trained, {{"epochs", "3"}}, small),
            runner::estimate_run_cost(trained, {{"epochs", "1"}}, small));
  EXPECT_GT(runner::estimate_run_cost(trained, {{"epochs", "1"}}, big),
            runner::estimate_run_cost(trained, {{"epochs", "1"}}, small));
  // k = 0,4: a prompt of 1 and one of 5 examples for each dev and test example.
  EXPECT_EQ(runner::estimate_run_cost(icl, {{"k", "0,4"}}, small), 100 * (1 + 5) * 128);
  // A value that does not parse counts as the default (run_matrix reports it); never below 1.
  EXPECT_EQ(runner::estimate_run_cost(trained, {{"epochs", "x"}, {"max-length", "64"}}, small),
            runner::estimate_run_cost(trained, {{"epochs", "1"}, {"max-length", "64"}}, small));
  EXPECT_EQ(runner::estimate_run_cost(reference, {}, {}), 1);
}

// A method for the matrix test: predicts label 0; `epochs` makes its estimated cost high.
class ConstantMethod : public methods::Method {
 public:
  void prepare(methods::RunContext&) override {}
  std::vector<methods::Prediction> predict(methods::RunContext&, const std::vector<tasks::Example>& examples) override {
    return std::vector<methods::Prediction>(examples.size());
  }
  int64_t trainable_params() const override { return 0; }
  int64_t save_adaptation(const std::filesystem::path&) const override { return 0; }
};

methods::MethodInfo constant(const std::string& name, bool costly) {
  methods::MethodInfo info;
  info.name = name;
  info.summary = "test method";
  if (costly) info.options = {{"epochs", "20", "cost only"}};
  info.make = [] { return std::make_unique<ConstantMethod>(); };
  info.supports = {tasks::OutputType::classify};
  return info;
}

class ShardMatrix : public RunnerTest {};

TEST_F(ShardMatrix, ShardsIntoOneDirectoryMakeTheUnshardedMatrixAndBalanceItsCost) {
  const std::vector<methods::MethodInfo> table = {constant("costly", true), constant("cheap", false)};
  runner::RunSpec s;
  s.methods = {"costly", "cheap"};
  s.tasks = {"tiny-sst2"};
  s.task_files = {task_file_};
  s.model = model_dir_;
  s.seeds = {0, 1, 2, 3};
  s.threads = 1;
  s.command_line = "test";
  s.out = dir_ / "all";
  const auto all = runner::run_matrix(s, table);
  ASSERT_EQ(all.records.size(), 8u);

  s.out = dir_ / "shared";
  s.shard_count = 2;
  const auto loads = runner::plan_shards(s, table);
  ASSERT_EQ(loads.size(), 2u);
  // index % 2 would give each shard two costly runs too; the assignment must do no worse,
  // and its imbalance is at most one run's cost.
  EXPECT_EQ(loads[0].runs + loads[1].runs, 8);
  EXPECT_EQ(loads[0].cost, loads[1].cost);
  for (int64_t i = 0; i < 2; ++i) {
    s.shard_index = i;
    const auto r = runner::run_matrix(s, table);
    EXPECT_EQ(r.planned, loads[static_cast<std::size_t>(i)].runs);
    EXPECT_EQ(r.failed, 0);
  }
  EXPECT_EQ(record_names(s.out), record_names(dir_ / "all"));
  // A re-submitted shard resumes: nothing runs again.
  s.resume = true;
  s.shard_index = 1;
  const auto again = runner::run_matrix(s, table);
  EXPECT_EQ(again.executed, 0);
  EXPECT_EQ(again.resumed, loads[1].runs);
}

}  // namespace
}  // namespace tb::testing
