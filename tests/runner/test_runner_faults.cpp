// Faults a matrix meets on shared machines, through the built CLI on the tiny model: SIGKILL
// at twenty different moments of a six-run matrix, each followed by --resume, must end with
// the records of an uninterrupted run (metrics bitwise; timings aside); SIGTERM must stop the
// run in progress, record it as interrupted and exit 128 + 15, and --resume must finish it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <map>
#include <thread>

#include "harness/runner/record.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class RunnerFaults : public RunnerTest {
 protected:
  const std::string methods_ = "majority,head";
  const std::string flags_ = "--seeds 0,1,2 --head.epochs 2";

  // Starts `tunebench run` into `out` in the background; returns its pid.
  // step_delay_ms > 0 slows every training step (TB_TEST_STEP_DELAY_MS), so that a signal
  // sent after the first record still finds the matrix running on a loaded machine.
  pid_t start(const fs::path& out, const std::string& extra = "", int step_delay_ms = 0) const {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("OMP_NUM_THREADS", "1", 1);
      if (step_delay_ms > 0) ::setenv("TB_TEST_STEP_DELAY_MS", std::to_string(step_delay_ms).c_str(), 1);
      const std::string cmd =
          "exec " + shell_quote(TB_CLI) + " " + run_args(methods_, out, flags_ + " " + extra) + " >/dev/null 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  }

  // Bytes of the regular files under `dir`.
  static std::uintmax_t tree_bytes(const fs::path& dir) {
    std::uintmax_t n = 0;
    if (fs::exists(dir))
      for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file()) n += e.file_size();
    return n;
  }

  // Hidden (temp) files anywhere under `dir`.
  static std::vector<std::string> hidden_files_under(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      if (name[0] == '.' || name.find(".tmp") != std::string::npos) out.push_back(e.path().string());
    }
    return out;
  }

  // record file -> its metrics and status (what must not depend on interruptions).
  static std::map<std::string, json> outcome(const fs::path& out) {
    std::map<std::string, json> m;
    for (const auto& r : runner::read_records(out))
      m[r.file.filename().string()] = {{"status", r.status}, {"metrics", r.json["metrics"]}};
    return m;
  }
};

TEST_F(RunnerFaults, SigkillAtTwentyMomentsThenResumeEqualsAnUninterruptedRun) {
  const fs::path ref = dir_ / "reference";
  const auto r = cli(run_args(methods_, ref, flags_));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto expected = outcome(ref);
  ASSERT_EQ(expected.size(), 6u);
  // The kill moments are fractions of a warm run's time (the first run also fills caches);
  // the warm run must itself reproduce the reference bitwise.
  const auto t0 = Clock::now();
  ASSERT_EQ(cli(run_args(methods_, dir_ / "warm", flags_)).exit_code, 0);
  const double full = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(outcome(dir_ / "warm"), expected);

  int killed_mid_matrix = 0;
  for (int i = 0; i < 20; ++i) {
    const fs::path out = dir_ / ("kill" + std::to_string(i));
    const pid_t pid = start(out);
    ASSERT_GT(pid, 0);
    // Kill moments spread over the whole matrix: startup, mid-run, between runs, at the end.
    std::this_thread::sleep_for(std::chrono::duration<double>(full * (i + 0.5) / 20.0));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed_mid_matrix;
    wait_for_writers(out);
    std::map<std::string, std::string> kept;
    if (fs::exists(out))
      for (const auto& f : record_names(out)) kept[f] = slurp(out / f);
    const auto resumed = cli(run_args(methods_, out, flags_ + " --resume"));
    ASSERT_EQ(resumed.exit_code, 0) << "kill " << i << ": " << resumed.err;
    EXPECT_EQ(outcome(out), expected) << "kill " << i << " at " << full * (i + 0.5) / 20.0 << " s";
    EXPECT_TRUE(hidden_files(out).empty()) << "kill " << i;
    for (const auto& [f, bytes] : kept) EXPECT_EQ(slurp(out / f), bytes) << f << " was rewritten (kill " << i << ")";
  }
  // Most moments fall inside the matrix (on a loaded machine a few may come after it ended).
  EXPECT_GE(killed_mid_matrix, 12);
}

TEST_F(RunnerFaults, SigtermStopsTheRunRecordsItInterruptedAndResumeFinishesIt) {
  const fs::path ref = dir_ / "reference", out = dir_ / "term";
  ASSERT_EQ(cli(run_args(methods_, ref, flags_)).exit_code, 0);
  // The whole matrix takes about a second; 300 ms per head step keeps it running well past
  // the first record (a descheduled test could otherwise signal a finished matrix).
  const pid_t pid = start(out, "", 300);
  // SIGTERM as soon as the first record exists: the matrix is between or inside runs.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && (!fs::exists(out) || record_names(out).empty()))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "tunebench run died of the signal instead of handling it";
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  const auto records = runner::read_records(out);
  ASSERT_FALSE(records.empty());
  ASSERT_LT(records.size(), 6u);
  int interrupted = 0;
  for (const auto& r : records) {
    if (r.status == "interrupted") {
      ++interrupted;
      EXPECT_NE(r.message.find("interrupted by SIGTERM"), std::string::npos) << r.message;
    } else {
      EXPECT_EQ(r.status, "ok") << r.file;
    }
  }
  EXPECT_LE(interrupted, 1);
  EXPECT_TRUE(hidden_files(out).empty());
  const auto resumed = cli(run_args(methods_, out, flags_ + " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(outcome(out), outcome(ref));
}

// The results directory is a disk with room for two records: the third run cannot write its
// record, nor can the runner write the failure record for it. The command must stop with one
// line naming the file and the cause (exit 2), leave no partial or temp file, and --resume on
// the freed disk must finish the matrix with the records of an uninterrupted run.
TEST_F(RunnerFaults, ADiskThatFillsWhileRecordsAreWrittenStopsCleanlyAndResumeCompletes) {
  const fs::path ref = dir_ / "reference", out = dir_ / "full-disk";
  ASSERT_EQ(cli(run_args(methods_, ref, flags_)).exit_code, 0);
  std::vector<std::uintmax_t> sizes;
  for (const auto& f : record_names(ref)) sizes.push_back(fs::file_size(ref / f));
  std::sort(sizes.begin(), sizes.end());
  // The runs go majority seeds 0, 1, 2, then head: room for what the runner caches first
  // (model hash, matmul peak), the two smallest records and half of one more, so the third
  // run's record does not fit.
  const std::uintmax_t quota = tree_bytes(ref / "cache") + sizes[0] + sizes[1] + sizes[0] / 2;
  fs::create_directories(out);
  const auto r = cli(run_args(methods_, out, flags_),
                     "LD_PRELOAD=" + shell_quote(TB_ENOSPC_SHIM) + " TB_FAULT_ENOSPC_PATH=" +
                         shell_quote(fs::absolute(out).string()) + " TB_FAULT_ENOSPC_BYTES=" + std::to_string(quota));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  // The last line of stderr is the error: the path and the cause.
  std::string last = r.err.substr(0, r.err.find_last_not_of('\n') + 1);
  last = last.substr(last.find_last_of('\n') + 1);
  EXPECT_NE(last.find(out.string()), std::string::npos) << r.err;
  EXPECT_NE(last.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_TRUE(hidden_files(out).empty());
  const auto kept_names = record_names(out);
  EXPECT_EQ(kept_names.size(), 2u);
  std::map<std::string, std::string> kept;
  for (const auto& f : kept_names) {
    EXPECT_NO_THROW(runner::read_record(out / f)) << f;
    kept[f] = slurp(out / f);
  }
  const auto resumed = cli(run_args(methods_, out, flags_ + " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(outcome(out), outcome(ref));
  for (const auto& [f, bytes] : kept) EXPECT_EQ(slurp(out / f), bytes) << f;
}

// The disk fills at eight different points of a matrix that writes more than records: the
// feature cache (features and their cost) and the records of feature, head and majority runs.
// Whatever the point, the command fails (exit 1 or 2, never a crash), every record left is
// valid, nothing half-written stays under the results directory, and --resume on the freed
// disk (with --retry-failed) ends with the records of an uninterrupted run — in particular, no run reads a
// truncated feature cache as features.
TEST_F(RunnerFaults, ADiskThatFillsAtAnyPointLeavesNothingHalfWritten) {
  const std::string methods = "feature,head,majority", flags = "--seeds 0,1 --head.epochs 2";
  const fs::path ref = dir_ / "reference";
  const auto r0 = cli(run_args(methods, ref, flags));
  std::string failures;
  for (const auto& rec : runner::read_records(ref))
    if (rec.status != "ok") failures += rec.file.filename().string() + ": " + rec.message + "\n";
  ASSERT_EQ(r0.exit_code, 0) << failures << r0.err;
  const auto expected = outcome(ref);
  const std::uintmax_t total = tree_bytes(ref);
  ASSERT_GT(tree_bytes(ref / "cache" / "features"), 0u) << "the feature cache was not written where expected";
  for (int i = 0; i < 8; ++i) {
    const fs::path out = dir_ / ("quota" + std::to_string(i));
    fs::create_directories(out);
    const std::uintmax_t quota = total * static_cast<std::uintmax_t>(i) / 8;
    const auto r = cli(run_args(methods, out, flags),
                       "LD_PRELOAD=" + shell_quote(TB_ENOSPC_SHIM) + " TB_FAULT_ENOSPC_PATH=" +
                           shell_quote(fs::absolute(out).string()) + " TB_FAULT_ENOSPC_BYTES=" + std::to_string(quota));
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << "quota " << quota << ": exit " << r.exit_code << "\n" << r.err;
    EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << "quota " << quota << "\n" << r.err;
    EXPECT_TRUE(hidden_files_under(out).empty()) << "quota " << quota;
    for (const auto& f : record_names(out)) EXPECT_NO_THROW(runner::read_record(out / f)) << f;
    // Runs recorded as failed for want of space are run again by --resume --retry-failed.
    const auto resumed = cli(run_args(methods, out, flags + " --resume --retry-failed"));
    ASSERT_EQ(resumed.exit_code, 0) << "quota " << quota << ": " << resumed.err;
    EXPECT_EQ(outcome(out), expected) << "quota " << quota;
  }
}

// A NaN injected into a gradient (TB_FAULT_NAN_GRAD_STEP, read by the one training loop):
// every training run of the matrix is recorded "diverged" with a message naming the gradient
// and its step, runs that do not train are recorded as usual after them, and the command
// finishes the matrix (exit 1, as for any failed run). A diverged run is a result:
// --resume --retry-failed keeps it.
TEST_F(RunnerFaults, ANanInAGradientIsRecordedDivergedAndTheMatrixGoesOn) {
  const fs::path out = dir_ / "nan";
  const auto r = cli(run_args("head,lora,majority", out, "--seeds 0,1 --head.epochs 2 --lora.epochs 1"),
                     "TB_FAULT_NAN_GRAD_STEP=0");
  // Exit 1: runs failed (diverged), and the summary counts them.
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("6 runs executed, 0 resumed, 4 failed"), std::string::npos) << r.out;
  const auto records = runner::read_records(out);
  ASSERT_EQ(records.size(), 6u) << r.err;
  std::map<std::string, int> diverged, ok;
  for (const auto& rec : records) {
    const std::string method = rec.json["run_info"]["method"].get<std::string>();
    if (method == "majority") {
      EXPECT_EQ(rec.status, "ok") << rec.file;
      ++ok[method];
    } else {
      EXPECT_EQ(rec.status, "diverged") << rec.file;
      EXPECT_NE(rec.message.find("non-finite gradient at step 0"), std::string::npos) << rec.message;
      EXPECT_TRUE(rec.json["metrics"].empty() || rec.json["metrics"].is_null()) << rec.json["metrics"].dump();
      ++diverged[method];
    }
  }
  EXPECT_EQ(diverged, (std::map<std::string, int>{{"head", 2}, {"lora", 2}}));
  EXPECT_EQ(ok, (std::map<std::string, int>{{"majority", 2}}));
  // A diverged run is a result: --resume --retry-failed keeps it (and runs nothing).
  const auto before = outcome(out);
  const auto resumed = cli(run_args("head,lora,majority", out, "--seeds 0,1 --head.epochs 2 --lora.epochs 1 --resume --retry-failed"));
  EXPECT_NE(resumed.out.find("0 runs executed, 6 resumed"), std::string::npos) << resumed.out << resumed.err;
  EXPECT_EQ(outcome(out), before);
  // Without the fault the same matrix trains: the fault, not the configuration, diverged it.
  const fs::path clean = dir_ / "clean";
  ASSERT_EQ(cli(run_args("head", clean, "--seeds 0 --head.epochs 2")).exit_code, 0);
  for (const auto& rec : runner::read_records(clean)) EXPECT_EQ(rec.status, "ok") << rec.message;
}

// The disk fills while the index method writes its SQLite vector store (and the HNSW file
// beside it) at six points: the run is recorded failed with the store's path and the cause,
// no temp file stays, and whatever the store directory holds afterwards is never read as a
// good store: --resume --retry-failed on the freed disk ends with the uninterrupted run's
// metrics (SQLite's transaction and the checked atomic write of the HNSW file hold this).
TEST_F(RunnerFaults, ADiskThatFillsWhileTheIndexStoreIsWrittenLeavesNoDamagedStore) {
  const fs::path task_dir = dir_ / "open-task";
  fs::create_directories(task_dir);
  const std::vector<std::pair<std::string, std::string>> words = {
      {"apple", "a round fruit that grows on trees"},   {"river", "a large stream of water"},
      {"candle", "wax with a wick that gives light"},   {"bridge", "a way built over a river"},
      {"pillow", "a soft bag for the head in bed"},     {"hammer", "a tool for driving nails"},
      {"ladder", "steps for climbing up a wall"},       {"kettle", "a pot for boiling water"}};
  {
    std::ofstream docs(task_dir / "docs.jsonl");
    for (const auto& w : words)
      docs << json{{"id", "doc:" + w.first}, {"title", w.first}, {"text", w.first + " is " + w.second + "."}}.dump() << "\n";
    std::ofstream q(task_dir / "q.jsonl");
    for (size_t i = 0; i < words.size(); ++i) {
      const std::vector<std::string> choices = {words[i].first, words[(i + 1) % words.size()].first,
                                                words[(i + 3) % words.size()].first};
      q << json{{"id", "q" + std::to_string(i)}, {"text", words[i].second}, {"choices", choices},
                {"answer", words[i].first}, {"gold_doc", "doc:" + words[i].first},
                {"split", i < 3 ? "train" : (i < 4 ? "dev" : "test")}}
               .dump()
        << "\n";
    }
    std::ofstream ini(task_dir / "tiny-open.ini");
    ini << "name = tiny-open\nversion = 1\ndescription = tiny open-book definitions\noutput_type = retrieval\n\n"
        << "[data]\nsource = q.jsonl\nid_field = id\nlabel_field = answer\nchoices_field = choices\n"
        << "gold_docs_field = gold_doc\ndocuments = docs.jsonl\n\n"
        << "[prompt]\ntemplate = Definition: {text}\\n{choices}\\nAnswer:\n\n"
        << "[metrics]\nnames = accuracy, recall@1, mrr\n";
  }
  auto args = [&](const fs::path& out) {
    return "run --methods index --tasks tiny-open --task-file " + shell_quote((task_dir / "tiny-open.ini").string()) +
           " --model " + shell_quote(model_dir_.string()) + " --out " + shell_quote(out.string()) +
           " --seeds 0 --index.chunk 8 --index.overlap 2 --index.k 2 --index.db " +
           shell_quote((out / "store" / "index.sqlite").string());
  };
  const fs::path ref = dir_ / "reference";
  const auto r0 = cli(args(ref));
  ASSERT_EQ(r0.exit_code, 0) << r0.out << r0.err;
  const auto expected = outcome(ref);
  ASSERT_EQ(expected.size(), 1u);
  const std::uintmax_t store_bytes = tree_bytes(ref / "store");
  ASSERT_GT(store_bytes, 0u);
  ASSERT_TRUE(fs::exists(ref / "store" / "index.sqlite.hnsw")) << "the HNSW file is not where the test expects it";
  for (int i = 0; i < 6; ++i) {
    const fs::path out = dir_ / ("store-quota" + std::to_string(i));
    fs::create_directories(out / "store");
    const std::uintmax_t quota = store_bytes * static_cast<std::uintmax_t>(i) / 6;
    const auto r = cli(args(out), "LD_PRELOAD=" + shell_quote(TB_ENOSPC_SHIM) + " TB_FAULT_ENOSPC_PATH=" +
                                      shell_quote(fs::absolute(out / "store").string()) +
                                      " TB_FAULT_ENOSPC_BYTES=" + std::to_string(quota));
    EXPECT_EQ(r.exit_code, 1) << "quota " << quota << "\n" << r.err;
    const auto recs = runner::read_records(out);
    ASSERT_EQ(recs.size(), 1u) << "quota " << quota;
    EXPECT_EQ(recs[0].status, "error") << "quota " << quota;
    EXPECT_NE(recs[0].message.find((out / "store" / "index.sqlite").string()), std::string::npos)
        << "quota " << quota << ": " << recs[0].message;
    const bool full = recs[0].message.find("No space left on device") != std::string::npos ||
                      recs[0].message.find("database or disk is full") != std::string::npos;
    EXPECT_TRUE(full) << "quota " << quota << ": " << recs[0].message;
    EXPECT_TRUE(hidden_files_under(out / "store").empty()) << "quota " << quota;
    const auto resumed = cli(args(out) + " --resume --retry-failed");
    std::string why;
    for (const auto& rec : runner::read_records(out)) why += rec.status + ": " + rec.message + "\n";
    ASSERT_EQ(resumed.exit_code, 0) << "quota " << quota << ": " << why << resumed.err;
    EXPECT_EQ(outcome(out), expected) << "quota " << quota;
  }
}

// A suite that expands to a million runs is planned in linear time and memory (seed
// duplicates are checked with a set, task facts and configuration hashes are computed once
// per task and method, run records are built when their run starts): with --shard taking two
// of the million runs, the command plans all of them and finishes. A quadratic step would
// take hours here and hit the test's time limit.
TEST_F(RunnerFaults, AMillionRunSuiteIsPlannedAndStarts) {
  const fs::path suite = dir_ / "million.ini", out = dir_ / "million";
  {
    std::ofstream f(suite);
    f << "[run]\nmethods = majority\ntasks = tiny-sst2\nmodel = " << model_dir_.string() << "\nseeds = ";
    for (int i = 0; i < 1000000; ++i) f << (i ? "," : "") << i;
    f << "\n";
  }
  const auto r = cli("run --suite " + shell_quote(suite.string()) + " --task-file " + shell_quote(task_file_.string()) +
                     " --shard 0/500000 --out " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), (std::set<std::string>{"majority__tiny-sst2__seed0.json", "majority__tiny-sst2__seed500000.json"}));
  // A seed listed twice in a long list is still found, by its value.
  {
    std::ofstream f(dir_ / "dup.ini");
    f << "[run]\nmethods = majority\ntasks = tiny-sst2\nseeds = ";
    for (int i = 0; i < 100000; ++i) f << i << ",";
    f << "77777\n";
  }
  const auto dup = cli("run --suite " + shell_quote((dir_ / "dup.ini").string()) + " --task-file " +
                       shell_quote(task_file_.string()) + " --out " + shell_quote((dir_ / "dup").string()));
  EXPECT_EQ(dup.exit_code, 2);
  EXPECT_NE(dup.err.find("seed 77777 is listed twice"), std::string::npos) << dup.err;
}

// Boost.ProgramOptions loops forever formatting an error whose argument contains one of its
// placeholders (found by fuzzing the task INI): the CLI must answer in one line, exit 2.
TEST_F(RunnerFaults, AnArgumentContainingAPlaceholderIsAnErrorNotAHang) {
  const auto r = cli("run --limit %value% --out " + shell_quote((dir_ / "x").string()));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("invalid value --limit"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tb::testing
