// `tunebench slurm submit`: the run matrix of a suite as a Slurm job array on a shared results
// directory, and a job that depends on it (afterany: it runs however the array ended) and
// writes the report.
//
// Array task I runs `tunebench run --suite S --out DIR --shard I/N --resume`: the shards are
// balanced by estimated cost (harness/runner/shard.h) and computed the same way by every
// task. The report job first runs `tunebench run --mark-missing` over the whole matrix, so a
// task that died before some of its runs started (time limit, node failure) leaves
// `interrupted` records, not holes, then `tunebench report DIR`. Submitting again with the
// same suite and directory resumes: finished runs are skipped, interrupted ones run again.
//
// Scripts are written to DIR/slurm/ (array.sbatch, report.sbatch) and given to sbatch with
// the sbatch options after `--`; --dry-run prints them and the sbatch commands instead.
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/cli/commands.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "tb_version.h"

namespace tb::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

// Single-quoted for bash, unless plainly safe.
std::string sh(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,@+%") ==
                        std::string::npos)
    return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += (s.empty() ? "" : " ") + sh(a);
  return s;
}

fs::path self_executable() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the tunebench executable (/proc/self/exe): " + ec.message());
  return p;
}

// Runs argv (no shell), returns its stdout; a failure to start or a non-zero exit is an error
// naming the command and what it printed.
std::string run_capture(const std::vector<std::string>& argv) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(join(argv) + " failed (" +
                             (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                                : "signal " + std::to_string(WTERMSIG(status))) +
                             ")" + (text.empty() ? "" : ": " + text));
  return text;
}

// `sbatch --parsable` prints "<job id>" or "<job id>;<cluster>".
std::string parse_job_id(const std::string& out, const std::vector<std::string>& argv) {
  std::string id = out.substr(0, out.find_first_of(";\n"));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
    throw std::runtime_error(join(argv) + " printed '" + out + "', not a job id");
  return id;
}

int submit(const Args& args) {
  // sbatch's own options come after `--`, untouched.
  Args ours, sbatch_options;
  bool rest = false;
  for (const auto& a : args) {
    if (!rest && a == "--") rest = true;
    else (rest ? sbatch_options : ours).push_back(a);
  }
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("suite", po::value<std::string>(), "the suite file (INI) whose matrix to run")
      ("out", po::value<std::string>(), "results directory, shared by every array task (on a file system every node sees)")
      ("array-size", po::value<int64_t>(), "array tasks = shards (default: the number of runs, at most 16)")
      ("dry-run", "print the job scripts and the sbatch commands; submit nothing, write nothing")
      ("task-file", po::value<std::vector<std::string>>()->composing(), "also load this task spec (repeatable; passed to tunebench run)")
      ("sbatch", po::value<std::string>()->default_value("sbatch"), "the sbatch command")
      ("tunebench", po::value<std::string>(), "the tunebench executable the jobs run (default: this one)");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(ours).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench slurm submit --suite FILE.ini --out DIR [--array-size N] [--dry-run]\n"
              << "                              [--task-file SPEC.ini] [-- SBATCH_OPTION ...]\n\n"
              << "Submits the suite's matrix as a Slurm job array of N tasks; task I runs\n"
              << "`tunebench run --shard I/N --resume` into DIR (shards balanced by estimated run cost).\n"
              << "A second job, --dependency=afterany on the array, marks runs that never started as\n"
              << "interrupted (tunebench run --mark-missing) and writes the report (tunebench report DIR).\n"
              << "Submitting again resumes. Options after -- go to both sbatch calls (e.g. -- --partition=cpu\n"
              << "--time=02:00:00 --cpus-per-task=4; OMP_NUM_THREADS follows --cpus-per-task).\n"
              << "Scripts: DIR/slurm/array.sbatch, DIR/slurm/report.sbatch; job output in DIR/slurm/.\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("suite")) throw InputError("slurm submit: --suite is required");
  if (!vm.count("out")) throw InputError("slurm submit: --out is required (a directory every node sees)");
  const fs::path cwd = fs::current_path();
  const fs::path suite = fs::absolute(vm["suite"].as<std::string>()).lexically_normal();
  const fs::path out = fs::absolute(vm["out"].as<std::string>()).lexically_normal();
  std::vector<fs::path> task_files;
  if (vm.count("task-file"))
    for (const auto& f : vm["task-file"].as<std::vector<std::string>>()) task_files.push_back(fs::absolute(f).lexically_normal());

  // The matrix as tunebench run would plan it: a bad suite fails here, not in N jobs.
  runner::RunSpec spec;
  const auto s = runner::read_suite(suite, methods::registry());
  if (s.methods) spec.methods = *s.methods;
  if (s.tasks) spec.tasks = *s.tasks;
  if (s.seeds) spec.seeds = *s.seeds;
  if (s.limit) spec.limit = *s.limit;
  if (s.threads) spec.threads = *s.threads;
  if (s.precision) spec.precision = *s.precision;
  if (s.save_adaptations) spec.save_adaptations = *s.save_adaptations;
  spec.options = s.options;
  // A learning curve's train sizes and a tuning grid change the matrix and its costs.
  if (s.train_sizes) spec.train_sizes = *s.train_sizes;
  spec.tune = s.tune;
  spec.task_files = task_files;
  const int64_t total_runs = [&] {
    int64_t n = 0;
    for (const auto& l : runner::plan_shards(spec, methods::registry())) n += l.runs;
    return n;
  }();
  if (total_runs == 0) throw InputError(suite.string() + ": the matrix has no runs (no method applies to any task)");
  int64_t n = std::min<int64_t>(total_runs, 16);
  if (vm.count("array-size")) {
    n = vm["array-size"].as<int64_t>();
    if (n < 1) throw InputError("--array-size must be >= 1");
    if (n > total_runs)
      throw InputError("--array-size " + std::to_string(n) + " is more than the matrix's " + std::to_string(total_runs) +
                       " runs (a shard would be empty)");
  }
  spec.shard_count = n;
  const auto loads = runner::plan_shards(spec, methods::registry());

  const fs::path exe = vm.count("tunebench") ? fs::absolute(vm["tunebench"].as<std::string>()) : self_executable();
  const fs::path job_dir = out / "slurm";
  std::vector<std::string> run_args = {exe.string(), "run", "--suite", suite.string(), "--out", out.string()};
  for (const auto& f : task_files) {
    run_args.push_back("--task-file");
    run_args.push_back(f.string());
  }
  const std::string name = "tunebench-" + suite.stem().string();

  std::ostringstream array;
  array << "#!/bin/bash\n"
        << "# Written by tunebench slurm submit (tunebench " << TB_VERSION << "): the matrix of\n"
        << "# " << suite.string() << " (" << total_runs << " runs) as " << n << " array tasks; task I runs\n"
        << "# shard I/" << n << " into " << out.string() << " with --resume (a re-submission resumes).\n"
        << "# Shards are balanced by estimated cost (token-passes, harness/runner/shard.h):\n"
        << "#   shard  runs  estimated cost\n";
  for (std::size_t i = 0; i < loads.size(); ++i)
    array << "#   " << i << "  " << loads[i].runs << "  " << loads[i].cost << "\n";
  array << "#SBATCH --job-name=" << name << "\n"
        << "#SBATCH --array=0-" << n - 1 << "\n"
        << "#SBATCH --chdir=" << cwd.string() << "\n"
        << "#SBATCH --output=" << (job_dir / "array-%A_%a.out").string() << "\n"
        << "set -u\n"
        << "# One OpenMP thread per CPU Slurm gave the task (a suite's threads = still wins).\n"
        << "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export OMP_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi\n"
        << "exec " << join(run_args) << " --resume --shard \"$SLURM_ARRAY_TASK_ID/" << n << "\"\n";

  std::vector<std::string> mark_args = run_args;
  std::ostringstream report;
  report << "#!/bin/bash\n"
         << "# Written by tunebench slurm submit (tunebench " << TB_VERSION << "): runs when every task of\n"
         << "# the array has ended, however it ended (--dependency=afterany).\n"
         << "#SBATCH --job-name=" << name << "-report\n"
         << "#SBATCH --chdir=" << cwd.string() << "\n"
         << "#SBATCH --output=" << (job_dir / "report-%j.out").string() << "\n"
         << "set -u\n"
         << "# Runs no record stands for (their task died before they started) get an interrupted\n"
         << "# record: failed in the report, run again by a re-submission. Exit 1 = some runs failed.\n"
         << join(run_args) << " --mark-missing \"no record after Slurm job $SLURM_JOB_ID's array ended (its task was "
         << "killed or failed before this run finished); re-submit to run it\"\n"
         << "rc=$?\n"
         << "if [ $rc -gt 1 ]; then echo \"tunebench run --mark-missing failed (exit $rc)\" >&2; exit $rc; fi\n"
         << "exec " << join({exe.string(), "report", out.string()}) << "\n";

  const fs::path array_file = job_dir / "array.sbatch", report_file = job_dir / "report.sbatch";
  const std::string sbatch = vm["sbatch"].as<std::string>();
  std::vector<std::string> array_cmd = {sbatch, "--parsable"};
  array_cmd.insert(array_cmd.end(), sbatch_options.begin(), sbatch_options.end());
  array_cmd.push_back(array_file.string());
  std::vector<std::string> report_cmd = {sbatch, "--parsable", "--dependency=afterany:<array job id>"};
  report_cmd.insert(report_cmd.end(), sbatch_options.begin(), sbatch_options.end());
  report_cmd.push_back(report_file.string());

  if (vm.count("dry-run")) {
    std::cout << "# " << array_file.string() << "\n" << array.str() << "\n# " << report_file.string() << "\n" << report.str()
              << "\n# submit:\n" << join(array_cmd) << "\n" << join(report_cmd) << "\n";
    return 0;
  }
  fs::create_directories(job_dir);
  write_file_atomic(array_file, array.str());
  write_file_atomic(report_file, report.str());
  fs::permissions(array_file, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  fs::permissions(report_file, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  const std::string array_id = parse_job_id(run_capture(array_cmd), array_cmd);
  report_cmd[2] = "--dependency=afterany:" + array_id;
  const std::string report_id = parse_job_id(run_capture(report_cmd), report_cmd);
  std::cout << "submitted array job " << array_id << " (" << n << " tasks, " << total_runs << " runs) and report job "
            << report_id << " (afterany:" << array_id << ")\n"
            << "results: " << out.string() << "  report: " << (out / "report.html").string() << "  job output: "
            << job_dir.string() << "\n";
  return 0;
}

}  // namespace

int cmd_slurm(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? std::cerr : std::cout)
        << "usage: tunebench slurm submit --suite FILE.ini --out DIR [--array-size N] [--dry-run] [-- SBATCH_OPTION ...]\n"
        << "       (tunebench slurm submit --help for the options)\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "submit") throw InputError("unknown slurm command '" + args[0] + "' (expected: submit)");
  return submit(Args(args.begin() + 1, args.end()));
}

}  // namespace tb::cli
