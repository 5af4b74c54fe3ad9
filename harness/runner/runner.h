// The run matrix: methods × tasks × seeds, each run isolated in a forked child process so a
// crash, an abort or an out-of-memory kill of one run is recorded and the matrix goes on,
// and so the peak RSS of a record is that run's alone.
//
// Order and sharding: runs are numbered method-major (methods in the order given, then tasks,
// then train sizes, then seeds); method/task pairs that do not apply (MethodInfo::supports /
// applies) are left out before numbering. `--shard I/N` takes the runs that
// harness/runner/shard.h assigns to shard I of N: balanced by each run's estimated cost
// (longest-processing-time-first, a run at a train size costed at that size), the same
// assignment in every shard; with runs of equal cost, the runs whose number % N == I.
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
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness/runner/record.h"
#include "methods/method.h"

namespace tb::runner {

inline constexpr int64_t kHeldoutTokens = 8192;

using MethodOptions = std::map<std::string, std::map<std::string, std::string>>;  // method -> name -> value

// Learning rates (or any option) chosen on dev (--tune, a suite's [tune] section): method ->
// option -> the values to try. Method "" holds the grids given for every method ("lr=..."):
// they apply to each method of the matrix that learns from the train split and declares the
// option; a method's own grid ("lora.lr=...") replaces the shared one for that option. Each
// run then trains once per combination of its grid on train, scores the task's primary
// metric on dev, and trains again with the best combination to score test once; the record's
// run_info.tuning holds the grid, every dev score and the choice.
using TuneGrid = std::map<std::string, std::map<std::string, std::vector<std::string>>>;

// Adds one grid entry, "lr" or "lora.lr" with its comma-separated values, to `grid`:
// InputError prefixed with `where` (a file:line, or "--tune") naming the entry when the
// method is unknown, no method (or not that one) declares the option, a value is empty or
// repeated, or the entry is given twice.
void add_tune_entry(TuneGrid& grid, const std::string& key, const std::string& values,
                    const std::vector<methods::MethodInfo>& methods, const std::string& where);
// "lr=1e-4,3e-4,1e-3" or "lora.lr=1e-4,1e-3" (the --tune flag's form) into add_tune_entry.
void add_tune_flag(TuneGrid& grid, const std::string& text, const std::vector<methods::MethodInfo>& methods);
// The grid a method's runs use: the shared entries for the options it declares (only when it
// learns from train), replaced by its own; empty when nothing of it is tuned.
std::map<std::string, std::vector<std::string>> tune_grid_for(const TuneGrid& grid, const methods::MethodInfo& info);

// --train-sizes "8,32,128,512,all": positive integers in increasing order and/or "all" (last),
// each once; InputError naming `what`.
std::vector<std::string> parse_train_sizes(const std::string& text, const std::string& what);

// A suite file (INI): a [run] section with methods, tasks, seeds, model, limit, threads, precision,
// save-adaptations, train-sizes, a [tune] section (option or method.option = values, see TuneGrid) and one
// [<method>] section per method with its options. Unknown sections and keys are InputErrors
// naming the file, line and key.
struct Suite {
  std::optional<std::vector<std::string>> methods, tasks, train_sizes;
  TuneGrid tune;
  std::optional<std::vector<uint64_t>> seeds;
  std::optional<std::filesystem::path> model;
  std::optional<int64_t> limit;
  std::optional<int> threads;
  std::optional<std::string> precision;
  std::optional<bool> save_adaptations;  // key save-adaptations = true|false
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
  // Learning curves: each method that learns from train runs at each size on
  // tasks::balanced_subset of the (limited) train split; "all" = the whole split. Empty = no curve.
  std::vector<std::string> train_sizes;
  TuneGrid tune;
  int threads = 0;        // OpenMP threads per run, 0 = the OpenMP default
  std::string precision = "f32";  // f32 | bf16 (mixed precision matmuls, see Model::set_precision)
  bool resume = false;
  // With resume: runs recorded "error" or "oom" (a full disk, a killed child) are run again
  // too, their records replaced; "ok" and "diverged" runs are results and are kept.
  bool retry_failed = false;
  // Keep what each method learned in <out>/adaptations/<method>__<task>__seed<N>/ with
  // tunebench_adaptation.json (a PEFT adapter for lora, prefix and softprompt; methods/saved.h).
  bool save_adaptations = false;
  int64_t shard_index = 0, shard_count = 1;
  // Non-empty: run nothing; every run of the matrix (or shard) without a record gets an
  // `interrupted` record with this message (what --resume runs again), so a batch job that
  // died before its runs started leaves failed records, not holes. Implies --resume.
  std::string mark_missing;
  std::string command_line;
  // Called once in the calling process before any run starts, with the resolved model
  // directory and its weights' sha256 (tunebench eval checks the adaptation there, so a bad
  // one is one InputError rather than a failed record per task).
  std::function<void(const std::filesystem::path& model_dir, const std::string& model_sha256)> precheck;
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
  std::string train_subset;  // the --train-sizes entry ("8", "all"), "" outside a learning curve
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
