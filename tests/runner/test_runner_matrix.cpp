// The runner library with methods made for the test: a run that aborts, one killed by
// SIGKILL (what the out-of-memory killer does), one whose allocation fails, one that throws,
// one whose training diverges, and one that changes the base model (forgetting is measured
// against the cached base loss) — each recorded with its status while the matrix goes on.
#include <gtest/gtest.h>
#include <signal.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <new>

#include "harness/base/errors.h"
#include "harness/runner/runner.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;

// Predicts label 0 after doing `what` in prepare().
class FaultyMethod : public methods::Method {
 public:
  explicit FaultyMethod(std::string what) : what_(std::move(what)) {}
  void prepare(methods::RunContext& ctx) override {
    if (what_ == "abort") std::abort();
    if (what_ == "sigkill") ::raise(SIGKILL);
    if (what_ == "bad_alloc") throw std::bad_alloc();
    if (what_ == "throw") throw tb::InputError("option --throw.value: 'x' is not a number");
    if (what_ == "self_term") {
      // SIGTERM to the matrix, as `kill` or a batch system's time limit would send it, while
      // this run is in progress; the matrix must stop this child and record it as interrupted.
      ::kill(::getppid(), SIGTERM);
      ::sleep(60);
    }
    if (what_ == "diverge") {
      ctx.meter.status = "diverged";
      ctx.meter.status_message = "non-finite training loss at step 3";
    }
    if (what_ == "perturb") {
      // Scale the final norm: the model's held-out LM loss changes.
      for (auto& p : ctx.model.params().params())
        if (p.name == "model.norm.weight")
          for (int64_t i = 0; i < p.numel(); ++i) p.data[i] *= 3.0f;
      ctx.meter.steps = 5;
      ctx.meter.epochs = 1;
      ctx.meter.phase("train").tokens = 1000;
      ctx.meter.loss_curve = {{1, 0.9}, {5, 0.5, 0.75}};
      ctx.meter.memory["weights"] = 123;
      ctx.meter.metrics.push_back({"kl", 0.25, 0.01, false});
    }
  }
  std::vector<methods::Prediction> predict(methods::RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    for (const auto& e : ctx.train) ctx.meter.details["train_labels"].push_back(e.label);
    for (const auto& e : examples) ctx.meter.details["test_ids"].push_back(e.id);
    std::vector<methods::Prediction> p(examples.size());
    for (auto& x : p) x.label = 0;
    return p;
  }
  int64_t trainable_params() const override { return what_ == "perturb" ? 32 : 0; }
  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    if (what_ != "perturb") return 0;
    std::ofstream(dir / "delta.bin") << std::string(128, 'x');
    return 128;
  }
  bool changes_base() const override { return what_ == "perturb"; }

 private:
  std::string what_;
};

methods::MethodInfo faulty(const std::string& what) {
  methods::MethodInfo info;
  info.name = what;
  info.summary = "test method: " + what;
  info.make = [what] { return std::make_unique<FaultyMethod>(what); };
  info.supports = {tasks::OutputType::classify};
  return info;
}

class RunnerMatrix : public RunnerTest {
 protected:
  runner::RunSpec spec(const std::vector<std::string>& methods, const fs::path& out) const {
    runner::RunSpec s;
    s.methods = methods;
    s.tasks = {"tiny-sst2"};
    s.task_files = {task_file_};
    s.model = model_dir_;
    s.out = out;
    s.threads = 1;
    s.command_line = "test";
    return s;
  }
};

TEST_F(RunnerMatrix, FailedRunsAreRecordedAndTheMatrixGoesOn) {
  std::vector<methods::MethodInfo> table = {faulty("abort"), faulty("sigkill"), faulty("bad_alloc"), faulty("throw"),
                                            faulty("diverge"), faulty("ok")};
  const fs::path out = dir_ / "out";
  const auto result = runner::run_matrix(spec({"abort", "sigkill", "bad_alloc", "throw", "diverge", "ok"}, out), table);
  EXPECT_EQ(result.planned, 6);
  EXPECT_EQ(result.executed, 6);
  EXPECT_EQ(result.failed, 5);
  ASSERT_EQ(result.records.size(), 6u);
  std::map<std::string, runner::Record> by_method;
  for (const auto& r : result.records) by_method[r.method] = r;
  EXPECT_EQ(by_method["abort"].status, "error");
  EXPECT_NE(by_method["abort"].message.find("signal 6"), std::string::npos) << by_method["abort"].message;
  EXPECT_EQ(by_method["sigkill"].status, "oom");
  EXPECT_NE(by_method["sigkill"].message.find("signal 9"), std::string::npos);
  EXPECT_EQ(by_method["bad_alloc"].status, "oom");
  EXPECT_EQ(by_method["throw"].status, "error");
  EXPECT_EQ(by_method["throw"].message, "option --throw.value: 'x' is not a number");
  EXPECT_EQ(by_method["diverge"].status, "diverged");
  EXPECT_EQ(by_method["diverge"].message, "non-finite training loss at step 3");
  EXPECT_TRUE(by_method["diverge"].json["metrics"].empty());
  EXPECT_EQ(by_method["ok"].status, "ok");
  EXPECT_TRUE(by_method["ok"].json["metrics"].contains("accuracy"));
  // A crashed run's record still says what was run, on what.
  EXPECT_EQ(by_method["abort"].json["run_info"]["model_sha256"], by_method["ok"].json["run_info"]["model_sha256"]);
  EXPECT_TRUE(hidden_files(out).empty());
  const auto md = slurp(out / "summary.md");
  EXPECT_NE(md.find("## Failed runs"), std::string::npos);
  EXPECT_NE(md.find("- sigkill / tiny-sst2 / seed 0: oom"), std::string::npos) << md;
}

TEST_F(RunnerMatrix, ForgettingIsMeasuredAgainstTheCachedBaseLoss) {
  std::vector<methods::MethodInfo> table = {faulty("perturb")};
  const fs::path out = dir_ / "out";
  auto s = spec({"perturb"}, out);
  s.seeds = {0, 1};
  const auto result = runner::run_matrix(s, table);
  ASSERT_EQ(result.records.size(), 2u);
  const auto& a = result.records[0].json;
  const auto& b = result.records[1].json;
  ASSERT_EQ(result.records[0].status, "ok") << result.records[0].message;
  ASSERT_TRUE(a["metrics"].contains("forgetting"));
  EXPECT_NE(a["metrics"]["forgetting"]["value"].get<double>(), 0.0);
  EXPECT_GT(a["metrics"]["forgetting"]["stderr"].get<double>(), 0.0);
  EXPECT_FALSE(a["metrics"]["forgetting"]["higher_is_better"].get<bool>());
  // The same change to the same base model: the same forgetting, the second time from the cache.
  EXPECT_EQ(a["metrics"]["forgetting"], b["metrics"]["forgetting"]);
  int cached = 0;
  for (const auto& e : fs::directory_iterator(out / "cache"))
    cached += e.path().filename().string().rfind("heldout-lm__", 0) == 0;
  EXPECT_EQ(cached, 1);
  // What the method metered reaches the record.
  EXPECT_EQ(a["metrics"]["kl"]["value"], 0.25);
  EXPECT_EQ(a["train_info"]["adaptation_bytes"], 128);
  EXPECT_EQ(a["train_info"]["trainable_params"], 32);
  EXPECT_EQ(a["train_info"]["steps"], 5);
  EXPECT_EQ(a["train_info"]["memory"]["weights"], 123);
  EXPECT_EQ(a["train_info"]["loss_curve"].size(), 2u);
  EXPECT_EQ(a["train_info"]["loss_curve"][1]["dev_metric"], 0.75);
  EXPECT_GT(a["train_info"]["train_tokens_per_s"].get<double>(), 0.0);
  EXPECT_NEAR(a["train_info"]["trainable_percent"].get<double>(),
              100.0 * 32 / static_cast<double>(a["train_info"]["total_params"].get<int64_t>()), 1e-12);
}

TEST_F(RunnerMatrix, MatrixOrderIsMethodMajorAndStable) {
  std::vector<methods::MethodInfo> table = {faulty("ok"), faulty("diverge")};
  auto s = spec({"diverge", "ok"}, dir_ / "out");
  s.seeds = {2, 0};
  s.shard_count = 4;
  s.shard_index = 1;
  const auto result = runner::run_matrix(s, table);
  // Indices: diverge/2 = 0, diverge/0 = 1, ok/2 = 2, ok/0 = 3; shard 1/4 takes index 1 only.
  ASSERT_EQ(result.records.size(), 1u);
  EXPECT_EQ(result.records[0].method, "diverge");
  EXPECT_EQ(result.records[0].seed, 0u);
  EXPECT_EQ(result.records[0].json["run_info"]["matrix_index"], 1);
}

// --limit takes a hashed subset: from a split file sorted by label it still draws both
// classes, the same examples for every method and seed.
TEST_F(RunnerMatrix, LimitTakesAnUnbiasedStableSubset) {
  std::ofstream tsv(dir_ / "sorted.tsv");
  tsv << "id\tsentence\tlabel\tsplit\n";
  for (const char* split : {"train", "dev", "test"})
    for (int label = 0; label < 2; ++label)
      for (int i = 0; i < 20; ++i)
        tsv << split << label << "-" << i << "\tsentence " << i << (label ? " good" : " bad") << "\t" << label << "\t" << split << "\n";
  tsv.close();
  std::ofstream(dir_ / "sorted.ini") << "name = sorted\nversion = 1\ndescription = t\noutput_type = classify\n\n[data]\n"
                                     << "source = sorted.tsv\nformat = tsv\nid_field = id\ntext_field = sentence\n"
                                     << "label_field = label\n\n[labels]\nnames = negative, positive\nvalues = 0, 1\n\n"
                                     << "[metrics]\nnames = accuracy\n";
  std::vector<methods::MethodInfo> table = {faulty("ok"), faulty("other")};
  auto s = spec({"ok", "other"}, dir_ / "out");
  s.tasks = {"sorted"};
  s.task_files = {dir_ / "sorted.ini"};
  s.seeds = {0, 1};
  s.limit = 8;
  const auto result = runner::run_matrix(s, table);
  ASSERT_EQ(result.records.size(), 4u);
  const auto& d = result.records[0].json["train_info"]["details"];
  ASSERT_EQ(d["train_labels"].size(), 8u);
  ASSERT_EQ(d["test_ids"].size(), 8u);
  int positives = 0;
  for (const auto& l : d["train_labels"]) positives += l.get<int>();
  EXPECT_GT(positives, 0);
  EXPECT_LT(positives, 8);
  for (const auto& r : result.records) EXPECT_EQ(r.json["train_info"]["details"], d) << r.file;
  EXPECT_EQ(result.records[0].json["run_info"]["examples"]["test"], 8);
}

TEST_F(RunnerMatrix, SigtermStopsTheRunInProgressRecordsItInterruptedAndResumeRedoesIt) {
  const fs::path out = dir_ / "out";
  const std::vector<std::string> order = {"ok", "self_term", "after"};
  std::vector<methods::MethodInfo> table = {faulty("ok"), faulty("self_term"), faulty("after")};
  const auto t0 = std::chrono::steady_clock::now();
  const auto stopped = runner::run_matrix(spec(order, out), table);
  // The child was stopped, not waited for (it sleeps 60 s after signalling).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  EXPECT_EQ(stopped.stop_signal, SIGTERM);
  EXPECT_EQ(stopped.executed, 2);  // "after" never started
  std::map<std::string, runner::Record> by_method;
  for (const auto& r : stopped.records) by_method[r.method] = r;
  ASSERT_EQ(by_method.size(), 2u);
  EXPECT_EQ(by_method["ok"].status, "ok");
  EXPECT_EQ(by_method["self_term"].status, "interrupted");
  EXPECT_NE(by_method["self_term"].message.find("interrupted by SIGTERM"), std::string::npos) << by_method["self_term"].message;
  // The handler is gone with the matrix: this process has its own SIGTERM disposition back.
  struct sigaction now {};
  ::sigaction(SIGTERM, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);

  // --resume keeps the finished run, runs the interrupted one again (here it completes) and
  // the rest of the matrix.
  const std::string ok_bytes = slurp(out / runner::record_filename("ok", "tiny-sst2", 0));
  table[1] = faulty("ok");
  table[1].name = "self_term";
  auto resumed_spec = spec(order, out);
  resumed_spec.resume = true;
  const auto resumed = runner::run_matrix(resumed_spec, table);
  EXPECT_EQ(resumed.stop_signal, 0);
  EXPECT_EQ(resumed.resumed, 1);
  EXPECT_EQ(resumed.executed, 2);
  EXPECT_EQ(resumed.failed, 0);
  for (const auto& r : resumed.records) EXPECT_EQ(r.status, "ok") << r.method;
  EXPECT_EQ(resumed.records.size(), 3u);
  EXPECT_EQ(slurp(out / runner::record_filename("ok", "tiny-sst2", 0)), ok_bytes);
}

}  // namespace
}  // namespace tb::testing
