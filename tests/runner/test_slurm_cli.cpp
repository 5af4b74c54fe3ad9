// `tunebench slurm submit` without a cluster: the scripts it prints (--dry-run), the two sbatch
// calls it makes (a stand-in sbatch that logs its arguments), and the scripts run as Slurm
// would run them (SLURM_ARRAY_TASK_ID, SLURM_JOB_ID set): an array task that never ran leaves
// interrupted records after the report job, not holes, and running it later completes the
// matrix. tests/integration/slurm_cluster.sh does the same on a real Slurm.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

class SlurmCli : public RunnerTest {
 protected:
  fs::path write_suite() const {
    const fs::path suite = dir_ / "suite.ini";
    std::ofstream(suite) << "[run]\nmethods = majority, head\ntasks = tiny-sst2\nseeds = 0, 1\nthreads = 1\nmodel = "
                         << model_dir_.string() << "\n\n[head]\nepochs = 1\nmax-length = 16\n";
    return suite;
  }
  std::string submit_args(const fs::path& out, const std::string& extra) const {
    return "slurm submit --suite " + shell_quote(write_suite().string()) + " --task-file " +
           shell_quote(task_file_.string()) + " --out " + shell_quote(out.string()) + " " + extra;
  }
  CliResult bash(const fs::path& script, const std::string& env) const {
    const fs::path out = dir_ / "job.out";
    const int status = std::system((env + " OMP_NUM_THREADS=1 bash " + shell_quote(script.string()) + " >" +
                                    shell_quote(out.string()) + " 2>&1")
                                       .c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), ""};
  }
  static std::map<std::string, std::string> statuses(const fs::path& dir) {
    std::map<std::string, std::string> s;
    for (const auto& name : record_names(dir))
      s[name] = nlohmann::json::parse(slurp(dir / name))["train_info"]["status"].get<std::string>();
    return s;
  }
};

TEST_F(SlurmCli, DryRunPrintsBothScriptsAndWritesNothing) {
  const fs::path out = dir_ / "results";
  const auto r = cli(submit_args(out, "--array-size 2 --dry-run -- --partition=cpu --time=10"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("#SBATCH --array=0-1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--resume --shard \"$SLURM_ARRAY_TASK_ID/2\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(4 runs) as 2 array tasks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--mark-missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" report " + out.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sbatch --parsable --partition=cpu --time=10 " + (out / "slurm/array.sbatch").string()),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("--dependency=afterany:"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(SlurmCli, SubmitsTheArrayThenTheReportJobAfterIt) {
  const fs::path out = dir_ / "results", log = dir_ / "sbatch.log", fake = dir_ / "sbatch";
  std::ofstream(fake) << "#!/bin/sh\necho \"$*\" >> " << shell_quote(log.string()) << "\n"
                      << "if [ -f " << shell_quote((dir_ / "second").string()) << " ]; then echo '4243;cluster'; else touch "
                      << shell_quote((dir_ / "second").string()) << "; echo 4242; fi\n";
  fs::permissions(fake, fs::perms::owner_all);
  // No --array-size: one task per run (at most 16).
  const auto r = cli(submit_args(out, "--sbatch " + shell_quote(fake.string()) + " -- --time=10"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("submitted array job 4242 (4 tasks, 4 runs) and report job 4243 (afterany:4242)"),
            std::string::npos)
      << r.out;
  const auto calls = slurp(log);
  EXPECT_EQ(calls, "--parsable --time=10 " + (out / "slurm/array.sbatch").string() + "\n" +
                       "--parsable --dependency=afterany:4242 --time=10 " + (out / "slurm/report.sbatch").string() + "\n");
  EXPECT_TRUE(fs::exists(out / "slurm/array.sbatch"));
  // sbatch failing is an error that says what it printed.
  std::ofstream(fake) << "#!/bin/sh\necho 'sbatch: error: invalid partition'\nexit 1\n";
  const auto bad = cli(submit_args(dir_ / "other", "--sbatch " + shell_quote(fake.string())));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("invalid partition"), std::string::npos) << bad.err;
}

TEST_F(SlurmCli, ATaskThatNeverRanLeavesInterruptedRecordsAndResubmissionCompletes) {
  const fs::path out = dir_ / "results", fake = dir_ / "sbatch";
  std::ofstream(fake) << "#!/bin/sh\necho 7\n";
  fs::permissions(fake, fs::perms::owner_all);
  ASSERT_EQ(cli(submit_args(out, "--array-size 2 --sbatch " + shell_quote(fake.string()))).exit_code, 0);
  // Task 0 runs; task 1 dies before starting anything; the report job runs (afterany).
  ASSERT_EQ(bash(out / "slurm/array.sbatch", "SLURM_ARRAY_TASK_ID=0").exit_code, 0);
  const auto shard0 = statuses(out);
  ASSERT_EQ(shard0.size(), 2u);
  const auto report = bash(out / "slurm/report.sbatch", "SLURM_JOB_ID=8");
  ASSERT_EQ(report.exit_code, 0) << report.out;
  auto after = statuses(out);
  ASSERT_EQ(after.size(), 4u) << report.out;  // no holes
  for (const auto& [name, status] : after) EXPECT_EQ(status, shard0.count(name) ? "ok" : "interrupted") << name;
  EXPECT_TRUE(fs::exists(out / "report.html"));
  for (const auto& [name, status] : after)
    if (status == "interrupted") {
      const auto rec = nlohmann::json::parse(slurp(out / name));
      EXPECT_NE(rec["train_info"]["message"].get<std::string>().find("Slurm job 8"), std::string::npos);
    }
  // Re-submitted: task 0 has nothing to do, task 1 runs its runs.
  const auto again0 = bash(out / "slurm/array.sbatch", "SLURM_ARRAY_TASK_ID=0");
  EXPECT_NE(again0.out.find("0 runs executed, 2 resumed"), std::string::npos) << again0.out;
  const auto again1 = bash(out / "slurm/array.sbatch", "SLURM_ARRAY_TASK_ID=1");
  EXPECT_NE(again1.out.find("2 runs executed, 0 resumed, 0 failed"), std::string::npos) << again1.out;
  for (const auto& [name, status] : statuses(out)) EXPECT_EQ(status, "ok") << name;
}

TEST_F(SlurmCli, BadInputIsOneLineAndExitTwo) {
  const fs::path out = dir_ / "results";
  auto r = cli(submit_args(out, "--array-size 0 --dry-run"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--array-size must be >= 1"), std::string::npos) << r.err;
  r = cli(submit_args(out, "--array-size 5 --dry-run"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("more than the matrix's 4 runs"), std::string::npos) << r.err;
  r = cli("slurm submit --out x --dry-run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--suite is required"), std::string::npos) << r.err;
  std::ofstream(dir_ / "bad.ini") << "[run]\nmethods = majority\nepochs = 3\n";
  r = cli("slurm submit --suite " + shell_quote((dir_ / "bad.ini").string()) + " --out x --dry-run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.ini:3: unknown key 'epochs'"), std::string::npos) << r.err;
  r = cli("slurm cancel");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown slurm command 'cancel'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tb::testing
