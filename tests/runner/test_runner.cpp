// End-to-end tests of `tunebench run` through the built CLI on a tiny random model and the
// tiny-sst2 user task: the record's fields and values, atomic writes, the summary files,
// append-only records, --resume after a killed matrix, sharding, method-option validation,
// skipped method/task pairs and suite files.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include "harness/base/hash.h"
#include "harness/runner/record.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "tasks/registry.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;

// --limit on a retrieval collection (wordnet-define-open, real data): every gold document of
// the kept examples stays, plus exactly `limit` distractors, in collection order, the same
// subset every time; limit 0 keeps the whole collection.
TEST(LimitDocuments, KeepsEveryGoldDocumentOfTheKeptExamplesPlusLimitDistractors) {
  const auto task = tasks::Registry::standard().load("wordnet-define-open");
  const auto& docs = task->documents();
  std::vector<std::vector<tasks::Example>> kept(3);
  const char* splits[] = {"train", "dev", "test"};
  for (int s = 0; s < 3; ++s) {
    const auto& all = task->split(splits[s]);
    for (std::size_t i = 0; i < all.size(); i += 5) kept[static_cast<std::size_t>(s)].push_back(all[i]);
  }
  const std::vector<const std::vector<tasks::Example>*> ptrs = {&kept[0], &kept[1], &kept[2]};
  const auto sub = runner::take_documents(docs, ptrs, 300);
  std::set<std::string> gold, ids;
  for (const auto& split : kept)
    for (const auto& ex : split) gold.insert(ex.gold_docs.begin(), ex.gold_docs.end());
  for (const auto& d : sub) ids.insert(d.id);
  ASSERT_EQ(ids.size(), sub.size());
  for (const auto& g : gold) EXPECT_TRUE(ids.count(g)) << g;
  EXPECT_EQ(sub.size(), gold.size() + 300);
  EXPECT_LT(sub.size(), docs.size());
  // A subsequence of the collection, unchanged documents.
  std::size_t j = 0;
  for (const auto& d : docs)
    if (j < sub.size() && sub[j].id == d.id) {
      EXPECT_EQ(sub[j].text, d.text);
      ++j;
    }
  EXPECT_EQ(j, sub.size());
  const auto again = runner::take_documents(docs, ptrs, 300);
  ASSERT_EQ(again.size(), sub.size());
  for (std::size_t i = 0; i < sub.size(); ++i) EXPECT_EQ(again[i].id, sub[i].id);
  // Distractors are not the first ids of the collection (a hashed subset, not a prefix).
  std::size_t distractors_in_first = 0;
  for (std::size_t i = 0; i < 300; ++i) distractors_in_first += ids.count(docs[i].id) && !gold.count(docs[i].id);
  EXPECT_LT(distractors_in_first, 150u);
  EXPECT_EQ(runner::take_documents(docs, ptrs, 0).size(), docs.size());
  // More distractors asked for than exist: the whole collection.
  EXPECT_EQ(runner::take_documents(docs, ptrs, 100000).size(), docs.size());
}

TEST_F(RunnerTest, RecordsHaveEveryFieldWithSaneValues) {
  const fs::path out = dir_ / "out";
  const auto r = cli(run_args("majority,lexicon", out, "--seeds 0,3"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), (std::set<std::string>{"lexicon__tiny-sst2__seed0.json", "lexicon__tiny-sst2__seed3.json",
                                                       "majority__tiny-sst2__seed0.json", "majority__tiny-sst2__seed3.json"}));
  EXPECT_TRUE(hidden_files(out).empty()) << hidden_files(out)[0];
  const auto records = runner::read_records(out);
  ASSERT_EQ(records.size(), 4u);
  const std::string model_sha = tb::sha256_file(model_dir_ / "model.safetensors");
  for (const auto& rec : records) {
    SCOPED_TRACE(rec.file.string());
    const auto& ri = rec.json["run_info"];
    const auto& ti = rec.json["train_info"];
    const auto& mi = rec.json["meta_info"];
    EXPECT_EQ(rec.status, "ok");
    EXPECT_EQ(ri["task"], "tiny-sst2");
    EXPECT_EQ(ri["task_version"], 1);
    EXPECT_EQ(ri["primary_metric"], "accuracy");
    EXPECT_EQ(ri["model_sha256"], model_sha);
    EXPECT_EQ(ri["model_path"], fs::canonical(model_dir_).string());
    EXPECT_TRUE(std::regex_match(ri["config_hash"].get<std::string>(), std::regex("[0-9a-f]{16}")));
    EXPECT_TRUE(std::regex_match(ri["start_time"].get<std::string>(),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
    EXPECT_NE(ri["command_line"].get<std::string>().find("--methods majority,lexicon"), std::string::npos);
    EXPECT_FALSE(ri["git_sha"].get<std::string>().empty());
    EXPECT_FALSE(ri["tunebench_version"].get<std::string>().empty());
    EXPECT_EQ(ri["threads"], 1);
    EXPECT_EQ(ri["options"], json::object());
    EXPECT_GT(ri["examples"]["test"].get<int>(), 0);
    EXPECT_EQ(ti["total_params"].get<int64_t>(), count_params(config_));
    EXPECT_EQ(ti["trainable_params"], 0);
    EXPECT_EQ(ti["adaptation_bytes"], 0);
    EXPECT_GT(ti["rss_after_load_bytes"].get<int64_t>(), 0);
    EXPECT_GE(ti["peak_rss_bytes"].get<int64_t>(), ti["rss_after_load_bytes"].get<int64_t>());
    // A tiny model in a fresh process: the peak is per run, far below a whole test binary's.
    EXPECT_LT(ti["peak_rss_bytes"].get<int64_t>(), int64_t{2} << 30);
    EXPECT_EQ(ti["rss_delta_bytes"].get<int64_t>(),
              ti["peak_rss_bytes"].get<int64_t>() - ti["rss_after_load_bytes"].get<int64_t>());
    EXPECT_GE(ti["train_seconds"].get<double>(), 0.0);
    EXPECT_GT(ti["run_seconds"].get<double>(), 0.0);
    EXPECT_EQ(ti["memory"].size(), 6u);
    EXPECT_EQ(ti["memory"]["weights"].get<int64_t>(), 4 * count_params(config_));  // the loaded base weights
    const auto& acc = rec.json["metrics"]["accuracy"];
    EXPECT_GE(acc["value"].get<double>(), 0.0);
    EXPECT_LE(acc["value"].get<double>(), 1.0);
    EXPECT_GE(acc["stderr"].get<double>(), 0.0);
    EXPECT_TRUE(acc["higher_is_better"].get<bool>());
    EXPECT_TRUE(rec.json["metrics"].contains("macro_f1"));
    EXPECT_FALSE(rec.json["metrics"].contains("forgetting"));  // reference rows leave the model alone
    EXPECT_FALSE(mi["cpu"].get<std::string>().empty());
    EXPECT_FALSE(mi["isa"].get<std::string>().empty());
    EXPECT_FALSE(mi["onednn_version"].get<std::string>().empty());
    EXPECT_GT(mi["matmul_peak_gflop_per_s"].get<double>(), 0.1);
  }
  // Same method and task, different seeds: one configuration.
  EXPECT_EQ(records[2].config_hash, records[3].config_hash);
  EXPECT_NE(records[0].config_hash, records[2].config_hash);

  const auto csv = slurp(out / "summary.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "method,task,seed,status,metric,value,stderr,trainable_params,trainable_percent,adaptation_bytes,"
            "peak_rss_mb,train_seconds,train_tokens_per_s,eval_tokens_per_s,forgetting,train_size");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);
  EXPECT_NE(csv.find("\nmajority,tiny-sst2,3,ok,accuracy,"), std::string::npos) << csv;
  EXPECT_NE(slurp(out / "summary.md").find("| lexicon | tiny-sst2 | 0 | ok | accuracy |"), std::string::npos);
  EXPECT_NE(r.out.find("majority"), std::string::npos);
  EXPECT_NE(r.out.find(out.string()), std::string::npos);
}

TEST_F(RunnerTest, RecordsAreNeverOverwritten) {
  const fs::path out = dir_ / "out";
  ASSERT_EQ(cli(run_args("majority", out)).exit_code, 0);
  const auto before = slurp(out / "majority__tiny-sst2__seed0.json");
  const auto r = cli(run_args("majority", out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("majority__tiny-sst2__seed0.json already exists"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(out / "majority__tiny-sst2__seed0.json"), before);
  // --resume skips it and still succeeds; the record is untouched.
  const auto resumed = cli(run_args("majority", out, "--resume"));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("0 runs executed, 1 resumed"), std::string::npos) << resumed.out;
  EXPECT_EQ(slurp(out / "majority__tiny-sst2__seed0.json"), before);
  // Resuming with another configuration would mix incomparable records: refused, naming the file.
  const auto other = cli(run_args("majority", out, "--resume --limit 2"));
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_NE(other.err.find("majority__tiny-sst2__seed0.json was made with another configuration"), std::string::npos)
      << other.err;
}

TEST_F(RunnerTest, ResumeAfterKilledMatrixEndsWithEveryRecordOnce) {
  const fs::path out = dir_ / "out";
  const std::string seeds = "0,1,2,3,4,5,6,7,8,9";
  std::set<std::string> expected;
  for (const char* m : {"majority", "lexicon"})
    for (int s = 0; s <= 9; ++s) expected.insert(runner::record_filename(m, "tiny-sst2", static_cast<uint64_t>(s)));

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("OMP_NUM_THREADS", "1", 1);
    const std::string cmd = "exec " + shell_quote(TB_CLI) + " " + run_args("majority,lexicon", out, "--seeds " + seeds) +
                            " >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Kill the matrix (SIGKILL: no clean-up of any kind) as soon as its first record exists.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline && (!fs::exists(out) || record_names(out).empty()))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the matrix finished before it could be killed";
  wait_for_writers(out);
  const auto first = record_names(out);
  ASSERT_FALSE(first.empty());
  ASSERT_LT(first.size(), expected.size());
  std::map<std::string, std::string> kept;
  for (const auto& f : first) kept[f] = slurp(out / f);

  const auto r = cli(run_args("majority,lexicon", out, "--seeds " + seeds + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), expected);
  EXPECT_TRUE(hidden_files(out).empty());
  for (const auto& [f, bytes] : kept) EXPECT_EQ(slurp(out / f), bytes) << f << " was rewritten";
  const auto records = runner::read_records(out);
  EXPECT_EQ(records.size(), expected.size());
  const auto csv = slurp(out / "summary.csv");
  EXPECT_EQ(static_cast<std::size_t>(std::count(csv.begin(), csv.end(), '\n')), expected.size() + 1);
}

TEST_F(RunnerTest, ShardsPartitionTheMatrix) {
  const std::string flags = "--seeds 0,1,2";
  ASSERT_EQ(cli(run_args("majority,lexicon", dir_ / "full", flags)).exit_code, 0);
  const auto r0 = cli(run_args("majority,lexicon", dir_ / "s0", flags + " --shard 0/2"));
  const auto r1 = cli(run_args("majority,lexicon", dir_ / "s1", flags + " --shard 1/2"));
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  const auto full = record_names(dir_ / "full"), s0 = record_names(dir_ / "s0"), s1 = record_names(dir_ / "s1");
  EXPECT_EQ(full.size(), 6u);
  EXPECT_EQ(s0.size(), 3u);
  EXPECT_EQ(s1.size(), 3u);
  std::set<std::string> both = s0;
  both.insert(s1.begin(), s1.end());
  EXPECT_EQ(both, full);  // disjoint (3 + 3 = 6) and together the whole matrix
  // Index % N: method-major order puts majority seeds 0,2 and lexicon seed 1 in shard 0.
  EXPECT_EQ(s0, (std::set<std::string>{"majority__tiny-sst2__seed0.json", "majority__tiny-sst2__seed2.json",
                                       "lexicon__tiny-sst2__seed1.json"}));
  // Shards written into one directory summarise the whole matrix.
  ASSERT_EQ(cli(run_args("majority,lexicon", dir_ / "merged", flags + " --shard 1/2")).exit_code, 0);
  const auto r = cli(run_args("majority,lexicon", dir_ / "merged", flags + " --shard 0/2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto csv = slurp(dir_ / "merged" / "summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7);
  for (const auto& f : full)
    EXPECT_EQ(runner::read_record(dir_ / "full" / f).json["metrics"], runner::read_record(dir_ / "merged" / f).json["metrics"]);
}

TEST_F(RunnerTest, UnknownMethodOptionsAreUsageErrors) {
  const fs::path out = dir_ / "out";
  auto r = cli(run_args("majority", out, "--foo.bar 3"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--foo.bar"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = cli(run_args("majority", out, "--majority.depth=3"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--majority.depth"), std::string::npos) << r.err;
  r = cli(run_args("nosuch", out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown method 'nosuch'"), std::string::npos) << r.err;
  r = cli(run_args("majority", out, "--shard 2/2"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--shard"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out) && !record_names(out).empty());
}

TEST_F(RunnerTest, PairsThatDoNotApplyAreSkipped) {
  // The tiny-sst2 data relabelled ham/spam: the sentiment lexicon does not apply.
  std::ofstream ini(dir_ / "tiny-hamspam.ini");
  ini << "name = tiny-hamspam\nversion = 1\ndescription = t\noutput_type = classify\n\n[data]\n"
      << "train = " << (fs::path(TB_SOURCE_DIR) / "tasks/examples/tiny-sst2.tsv").string() << ":train\n"
      << "dev = " << (fs::path(TB_SOURCE_DIR) / "tasks/examples/tiny-sst2.tsv").string() << ":dev\n"
      << "test = " << (fs::path(TB_SOURCE_DIR) / "tasks/examples/tiny-sst2.tsv").string() << ":test\n"
      << "format = tsv\ntext_field = sentence\nlabel_field = label\nhash_split = 60/20/20\n\n[labels]\n"
      << "names = ham, spam\nvalues = 0, 1\n\n[metrics]\nnames = accuracy\n";
  ini.close();
  const fs::path out = dir_ / "out";
  const auto r = cli("run --methods majority,lexicon --tasks tiny-sst2,tiny-hamspam --task-file " +
                     shell_quote(task_file_.string()) + " --task-file " + shell_quote((dir_ / "tiny-hamspam.ini").string()) +
                     " --model " + shell_quote(model_dir_.string()) + " --out " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), (std::set<std::string>{"lexicon__tiny-sst2__seed0.json", "majority__tiny-hamspam__seed0.json",
                                                       "majority__tiny-sst2__seed0.json"}));
  EXPECT_NE(r.err.find("skipping lexicon on tiny-hamspam"), std::string::npos) << r.err;
}

TEST_F(RunnerTest, SuiteFileSetsTheMatrixAndRejectsUnknownKeys) {
  const fs::path suite = dir_ / "suite.ini";
  std::ofstream(suite) << "# a test suite\n[run]\nmethods = majority, lexicon\ntasks = tiny-sst2\nseeds = 4\nmodel = "
                       << model_dir_.string() << "\nlimit = 3\nthreads = 1\n";
  const fs::path out = dir_ / "out";
  const auto r = cli("run --suite " + shell_quote(suite.string()) + " --task-file " + shell_quote(task_file_.string()) +
                     " --out " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(record_names(out), (std::set<std::string>{"lexicon__tiny-sst2__seed4.json", "majority__tiny-sst2__seed4.json"}));
  const auto rec = runner::read_record(out / "majority__tiny-sst2__seed4.json");
  EXPECT_EQ(rec.json["run_info"]["limit"], 3);
  EXPECT_LE(rec.json["run_info"]["examples"]["test"].get<int>(), 3);
  // Flags override the suite.
  const auto r2 = cli("run --suite " + shell_quote(suite.string()) + " --methods majority --seeds 5 --task-file " +
                      shell_quote(task_file_.string()) + " --out " + shell_quote(out.string()));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_TRUE(fs::exists(out / "majority__tiny-sst2__seed5.json"));
  EXPECT_FALSE(fs::exists(out / "lexicon__tiny-sst2__seed5.json"));

  std::ofstream(dir_ / "bad.ini") << "[run]\nmethods = majority\nepochs = 3\n";
  auto bad = cli("run --suite " + shell_quote((dir_ / "bad.ini").string()) + " --out " + shell_quote((dir_ / "o2").string()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad.ini:3: unknown key 'epochs'"), std::string::npos) << bad.err;
  std::ofstream(dir_ / "bad2.ini") << "[run]\nmethods = majority\n[majority]\nrank = 3\n";
  bad = cli("run --suite " + shell_quote((dir_ / "bad2.ini").string()) + " --out " + shell_quote((dir_ / "o3").string()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad2.ini:4: unknown option --majority.rank"), std::string::npos) << bad.err;
}

// A method that trains (head, a few steps on the tiny model): the same seed gives
// bit-identical metrics and loss curves; every option is recorded with defaults filled in.
TEST_F(RunnerTest, SameSeedGivesBitIdenticalMetrics) {
  const std::string flags = "--head.epochs 2 --head.batch 2 --head.max-length 24";
  const auto a = cli(run_args("head", dir_ / "a", flags));
  const auto b = cli(run_args("head", dir_ / "b", flags));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ra = runner::read_record(dir_ / "a" / "head__tiny-sst2__seed0.json");
  const auto rb = runner::read_record(dir_ / "b" / "head__tiny-sst2__seed0.json");
  ASSERT_EQ(ra.status, "ok") << ra.message;
  EXPECT_EQ(ra.json["metrics"].dump(), rb.json["metrics"].dump());
  EXPECT_EQ(ra.json["train_info"]["loss_curve"].dump(), rb.json["train_info"]["loss_curve"].dump());
  EXPECT_EQ(ra.config_hash, rb.config_hash);
  EXPECT_GT(ra.json["train_info"]["steps"].get<int64_t>(), 0);
  EXPECT_GT(ra.json["train_info"]["trainable_params"].get<int64_t>(), 0);
  EXPECT_GT(ra.json["train_info"]["adaptation_bytes"].get<int64_t>(), 0);
  EXPECT_GT(ra.json["train_info"]["train_tokens_per_s"].get<double>(), 0.0);
  const auto& options = ra.json["run_info"]["options"];
  for (const auto& o : methods::find("head").options) EXPECT_TRUE(options.contains(o.name)) << o.name;
  EXPECT_EQ(options["epochs"], "2");
  // A different configuration is a different hash.
  const auto c = cli(run_args("head", dir_ / "c", "--head.epochs 1 --head.batch 2 --head.max-length 24"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(runner::read_record(dir_ / "c" / "head__tiny-sst2__seed0.json").config_hash, ra.config_hash);
}

// A bad option value fails that run only: it is recorded as an error naming the option, the
// other runs go on, and the exit code says a run failed.
TEST_F(RunnerTest, BadOptionValueFailsOnlyItsRun) {
  const fs::path out = dir_ / "out";
  const auto r = cli(run_args("head,majority", out, "--head.epochs many"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto head = runner::read_record(out / "head__tiny-sst2__seed0.json");
  EXPECT_EQ(head.status, "error");
  EXPECT_NE(head.message.find("--head.epochs"), std::string::npos) << head.message;
  EXPECT_TRUE(head.json["metrics"].empty());
  EXPECT_EQ(runner::read_record(out / "majority__tiny-sst2__seed0.json").status, "ok");
  EXPECT_NE(slurp(out / "summary.csv").find("head,tiny-sst2,0,error,accuracy,"), std::string::npos);
}

TEST_F(RunnerTest, ListMethodsShowsOptionsWithDefaults) {
  const auto r = cli("list methods");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("majority"), std::string::npos);
  EXPECT_NE(r.out.find("lexicon"), std::string::npos);
  for (const auto& m : methods::registry())
    for (const auto& o : m.options) EXPECT_NE(r.out.find("--" + m.name + "." + o.name), std::string::npos) << o.name;
}

}  // namespace
}  // namespace tb::testing
