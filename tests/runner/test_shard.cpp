// Cost-balanced shards (harness/runner/shard.h): every run in exactly one shard, the same
// assignment every time, the most loaded shard within one run's cost of the least loaded,
// round-robin when costs are equal; and the matrix's shards into one shared directory
// make exactly the records of the unsharded matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>

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

// A learning curve's runs are costed at their subset's size, a tuned run once per trial and
// once more; the matrix is cells x sizes x seeds.
TEST_F(ShardMatrix, CostFollowsTheTrainSizeAndTheTuningGrid) {
  auto learner = constant("costly", true);
  learner.learns_from_train = true;
  const std::vector<methods::MethodInfo> table = {learner, constant("cheap", false)};
  runner::RunSpec s;
  s.methods = {"costly"};
  s.tasks = {"tiny-sst2"};
  s.task_files = {task_file_};
  s.seeds = {0};
  auto plan = [&] {
    int64_t runs = 0, cost = 0;
    for (const auto& l : runner::plan_shards(s, table)) runs += l.runs, cost += l.cost;
    return std::make_pair(runs, cost);
  };
  s.train_sizes = {"2"};
  const auto small = plan();
  s.train_sizes = {"all"};
  const auto all = plan();
  ASSERT_EQ(small.first, 1);
  ASSERT_EQ(all.first, 1);
  EXPECT_LT(small.second, all.second);  // 2 train examples cost less than the whole split
  s.train_sizes = {"2", "all"};
  EXPECT_EQ(plan(), std::make_pair(int64_t{2}, small.second + all.second));
  // Tuned over two values: two trials and the final run.
  s.tune = {{"", {{"epochs", {"10", "30"}}}}};
  EXPECT_EQ(plan(), std::make_pair(int64_t{2}, 3 * (small.second + all.second)));
  // cells x sizes x seeds; a method that does not learn from train runs once per seed.
  s.tune.clear();
  s.methods = {"costly", "cheap"};
  s.seeds = {0, 1};
  s.shard_count = 4;
  EXPECT_EQ(plan().first, 2 * 2 + 2);
}

// --train-sizes, --tune and --save-adaptations with --shard into one shared directory: the
// shards make exactly the records (and kept adaptations) of the unsharded matrix.
TEST_F(ShardMatrix, CurveTuneAndSavedAdaptationsShardIntoOneDirectory) {
  const std::string flags = "--train-sizes 2,all --tune head.lr=1e-4,1e-2 --save-adaptations --head.epochs 1 "
                            "--head.batch 2 --head.max-length 24 --threads 1";
  const auto all = cli(run_args("majority,head", dir_ / "all", flags));
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const auto expected = record_names(dir_ / "all");
  EXPECT_EQ(expected, (std::set<std::string>{"head__tiny-sst2__n2__seed0.json", "head__tiny-sst2__nall__seed0.json",
                                              "majority__tiny-sst2__seed0.json"}));
  const fs::path shared = dir_ / "shared";
  for (const char* shard : {"0/2", "1/2"}) {
    const auto r = cli(run_args("majority,head", shared, flags + " --shard " + shard));
    ASSERT_EQ(r.exit_code, 0) << shard << ": " << r.err;
  }
  EXPECT_EQ(record_names(shared), expected);
  auto dirs = [](const fs::path& d) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(d / "adaptations")) names.insert(e.path().filename().string());
    return names;
  };
  EXPECT_EQ(dirs(shared), (std::set<std::string>{"head__tiny-sst2__n2__seed0", "head__tiny-sst2__nall__seed0"}));
  EXPECT_EQ(dirs(shared), dirs(dir_ / "all"));
  EXPECT_TRUE(hidden_files(shared).empty());
  for (const auto& name : expected) {
    const auto a = runner::read_record(dir_ / "all" / name), b = runner::read_record(shared / name);
    EXPECT_EQ(b.status, "ok") << name << ": " << b.message;
    EXPECT_EQ(a.config_hash, b.config_hash) << name;
    EXPECT_EQ(a.json["run_info"]["matrix_index"], b.json["run_info"]["matrix_index"]) << name;
    EXPECT_EQ(a.json["run_info"].contains("tuning"), name.rfind("head", 0) == 0) << name;
  }
  // Every shard resumes: nothing runs again.
  for (const char* shard : {"0/2", "1/2"}) {
    const auto r = cli(run_args("majority,head", shared, flags + " --resume --shard " + shard));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("0 runs executed"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace tb::testing
