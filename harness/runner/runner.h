// The run matrix: methods × tasks × seeds, each run isolated in a forked child process so a
// crash, an abort or an out-of-memory kill of one run is recorded and the matrix goes on,
// and so the peak RSS of a record is that run's alone.
//
// Order and sharding: runs are numbered method-major (methods in the order given, then tasks,
// then seeds); method/task pairs that do not apply (MethodInfo::supports / applies) are left
// out before numbering. `--shard I/N` takes the runs that harness/runner/shard.h assigns to
// shard I of N: balanced by each run's estimated cost (longest-processing-time-first), the
// same assignment in every shard; with runs of equal cost, the runs whose number % N == I.
// Shards may share one output directory (a Slurm job array): records are written atomically
// under their own names, and only an unsharded run removes dead processes' temp files.
//
// Records are append-only: without --resume, a record already present in the output
// directory for a run of the matrix is an InputError naming it (use --resume, or a fresh
// --out); with --resume, runs whose record exists and validates are skipped.
//
// Forgetting: for a method that changes the base model or applies LM hooks, the held-out LM
// loss (heldout-lm, at most kHeldoutTokens continuation tokens) is measured after prepare()
// and compared example by example with the base model's, which is computed once per model
// (in its own child process) and cached in <out>/cache/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness/runner/record.h"
#include "methods/method.h"

namespace tb::runner {

inline constexpr int64_t kHeldoutTokens = 8192;

using MethodOptions = std::map<std::string, std::map<std::string, std::string>>;  // method -> name -> value

// A suite file (INI): a [run] section with methods, tasks, seeds, model, limit, threads, precision and
// one [<method>] section per method with its options. Unknown sections and keys are
// InputErrors naming the file, line and key.
struct Suite {
  std::optional<std::vector<std::string>> methods, tasks;
  std::optional<std::vector<uint64_t>> seeds;
  std::optional<std::filesystem::path> model;
  std::optional<int64_t> limit;
  std::optional<int> threads;
  std::optional<std::string> precision;
  MethodOptions options;
};
Suite read_suite(const std::filesystem::path& file, const std::vector<methods::MethodInfo>& methods);

struct RunSpec {
  std::vector<std::string> methods, tasks;
  std::vector<uint64_t> seeds = {0};
  std::filesystem::path model = "models/default";
  std::filesystem::path out;
  std::vector<std::filesystem::path> task_files;
  MethodOptions options;  // given values only; defaults are filled per run
  int64_t limit = 0;      // examples per split (a hashed subset, the same for every method and seed), 0 = all
  int threads = 0;        // OpenMP threads per run, 0 = the OpenMP default
  std::string precision = "f32";  // f32 | bf16 (mixed precision matmuls, see Model::set_precision)
  bool resume = false;
  int64_t shard_index = 0, shard_count = 1;
  // Non-empty: run nothing; every run of the matrix (or shard) without a record gets an
  // `interrupted` record with this message (what --resume runs again), so a batch job that
  // died before its runs started leaves failed records, not holes. Implies --resume.
  std::string mark_missing;
  std::string command_line;
};

// --limit N on a retrieval task's document collection: every gold document of the kept
// examples (`kept`: the limited train, dev and test splits) plus, as distractors, the N other
// documents whose ids hash lowest (the order of the example subset), in collection order.
// limit 0 = the whole collection.
std::vector<tasks::Document> take_documents(const std::vector<tasks::Document>& docs,
                                           const std::vector<const std::vector<tasks::Example>*>& kept, int64_t limit);

// Parses "I/N" (0 ≤ I < N) and comma-separated seed lists; InputError naming `what`.
std::pair<int64_t, int64_t> parse_shard(const std::string& text);
std::vector<uint64_t> parse_seeds(const std::string& text, const std::string& what);

// Every option of `info` with its default, overridden by `given`; a name the method does not
// declare is an InputError naming `--<method>.<name>` (or `where` when given, e.g. a suite
// file line).
std::map<std::string, std::string> resolve_options(const methods::MethodInfo& info,
                                                   const std::map<std::string, std::string>& given,
                                                   const std::string& where = "");

struct RunItem {
  int64_t index = 0;  // position in the full matrix
  std::string method, task;
  uint64_t seed = 0;
};

struct MatrixResult {
  int64_t planned = 0;   // runs of this shard
  int64_t executed = 0;  // runs started by this invocation
  int64_t resumed = 0;   // skipped because their record exists (--resume)
  int64_t failed = 0;    // records of this invocation whose status is not ok
  int64_t marked = 0;    // interrupted records written for missing runs (RunSpec::mark_missing)
  // SIGTERM or SIGINT stopped the matrix (0 = it ran to the end): the run in progress is
  // recorded as interrupted (what --resume runs again) and no further run started.
  int stop_signal = 0;
  std::vector<Record> records;  // every record in the output directory afterwards
};

// The runs and estimated cost (harness/runner/shard.h) of each of spec.shard_count shards,
// without running anything: what `tunebench slurm submit` states in the job script.
struct ShardLoad {
  int64_t runs = 0, cost = 0;
};
std::vector<ShardLoad> plan_shards(const RunSpec& spec, const std::vector<methods::MethodInfo>& methods);

// Runs the matrix, writes one record per run and the summaries (SIGTERM / SIGINT: see
// MatrixResult::stop_signal); `methods` is the method
// table to draw from (the registry in the CLI). The calling process should not have run
// multi-threaded OpenMP regions (a forked child cannot use libgomp's pool): if it has other
// threads at fork time, each child runs single-threaded, and the record says so.
MatrixResult run_matrix(const RunSpec& spec, const std::vector<methods::MethodInfo>& methods);

// The names of a method table in its order: the order reports list methods in
// (reports::read_results takes it, since reports know only the record type).
std::vector<std::string> method_names(const std::vector<methods::MethodInfo>& methods);

}  // namespace tb::runner
