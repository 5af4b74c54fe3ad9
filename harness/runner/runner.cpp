// The run matrix, the per-run child process and the records it writes; see runner.h.
#include "harness/runner/runner.h"

#include <omp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <new>
#include <set>
#include <sstream>
#include <tuple>

#include "harness/base/hash.h"
#include "datasets/paths.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/generate.h"
#include "harness/core/model_io.h"
#include "harness/core/safetensors.h"
#include "harness/core/tokenizer.h"
#include "harness/runner/machine.h"
#include "harness/runner/meter.h"
#include "harness/base/strict_json.h"
#include "harness/runner/shard.h"
#include "methods/saved.h"
#include "tasks/reference.h"
#include "tasks/registry.h"
#include "tb_version.h"

namespace tb::runner {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kHeldoutTask = "heldout-lm";

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!trim(item).empty()) out.push_back(trim(item));
  return out;
}

bool parse_bool(const std::string& text, const std::string& what) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  throw InputError(what + ": expected true or false, got '" + text + "'");
}

int64_t parse_int(const std::string& text, const std::string& what) {
  const auto t = trim(text);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size())
    throw InputError(what + ": '" + text + "' is not an integer");
  return v;
}

std::string iso_time_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json read_json_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return nullptr;
  try {
    return json::parse(in);
  } catch (const json::exception&) {
    return nullptr;  // a cache file that does not parse is recomputed
  }
}

int thread_count() {
  int n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/self/task", ec); !ec && it != fs::directory_iterator(); it.increment(ec)) ++n;
  return n;
}

// SIGTERM / SIGINT while a matrix runs: the handler notes the signal and passes SIGTERM on to
// the run child, so the child stops, the matrix records the run as interrupted and stops
// (run_matrix), and `tunebench run` exits with 128 + the signal number.
volatile sig_atomic_t g_stop_signal = 0;
volatile pid_t g_run_child = 0;

extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  const pid_t child = g_run_child;
  if (child > 0) ::kill(child, SIGTERM);
}

// Installs on_stop_signal for SIGTERM and SIGINT for its lifetime (without SA_RESTART:
// waitpid returns EINTR and is retried), and restores what was there before.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, &old_term_);
    ::sigaction(SIGINT, &sa, &old_int_);
  }
  ~StopSignals() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_term_ {}, old_int_ {};
};

// Forks, runs `fn` in the child and returns the wait status. The child dies with the parent
// (a killed matrix leaves no orphan writing records behind it), and runs single-threaded if
// this process has other threads (libgomp's pool does not survive fork).
int run_forked(const std::function<void()>& fn, bool& single_threaded) {
  single_threaded = thread_count() > 1;
  std::fflush(stdout);
  std::fflush(stderr);
  std::cout.flush();
  std::cerr.flush();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    // The child dies of SIGTERM / SIGINT as any process does; only the matrix handles them.
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(125);
    if (single_threaded) omp_set_num_threads(1);
    int code = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tunebench run: child: %s\n", e.what());
      code = 3;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(code);
  }
  g_run_child = pid;
  if (g_stop_signal) ::kill(pid, SIGTERM);  // the signal came between fork and here
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      g_run_child = 0;
      throw Error(std::string("waitpid failed: ") + std::strerror(errno));
    }
  g_run_child = 0;
  return status;
}

const char* sigabbrev(int sig) { return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal"; }

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return std::string("run process killed by signal ") + std::to_string(sig) + " (" + strsignal(sig) + ")" +
           (sig == SIGKILL ? ", e.g. by the kernel's out-of-memory killer" : "");
  }
  return "run process exited with code " + std::to_string(WEXITSTATUS(status)) + " without writing its record";
}

// ---- model identity --------------------------------------------------------------------

fs::path resolve_model_dir(const fs::path& given) {
  fs::path p = given;
  if (p.is_relative() && !fs::exists(p) && fs::exists(data::home_dir() / p)) p = data::home_dir() / p;
  if (!fs::is_directory(p))
    throw InputError("model directory " + given.string() +
                     " does not exist (make one with: tunebench pretrain --out " + given.string() + ")");
  for (const char* f : {"config.json", "tokenizer.json"})
    if (!fs::exists(p / f)) throw InputError("model directory " + p.string() + " has no " + f);
  return fs::canonical(p);
}

std::vector<fs::path> weight_files(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return {dir / "model.safetensors"};
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw InputError("model directory " + dir.string() + " has no model.safetensors");
  return files;
}

// sha256 of the weights (of the one file, or of the shards' hashes in name order), cached
// in cache_dir by path, size and modification time.
std::string model_sha256(const fs::path& dir, const fs::path& cache_dir) {
  const fs::path cache_file = cache_dir / "model-sha256.json";
  json cache = read_json_file(cache_file);
  if (!cache.is_object()) cache = json::object();
  std::string combined;
  bool all_cached = true;
  std::vector<std::string> hashes;
  for (const auto& f : weight_files(dir)) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) throw InputError("cannot stat " + f.string());
    const json key = {{"size", static_cast<int64_t>(st.st_size)},
                      {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec}};
    const auto& entry = cache[f.string()];
    std::string h;
    if (entry.is_object() && entry.value("size", json()) == key["size"] && entry.value("mtime_ns", json()) == key["mtime_ns"] &&
        entry.contains("sha256") && entry["sha256"].is_string()) {
      h = entry["sha256"].get<std::string>();
    } else {
      h = tb::sha256_file(f);
      cache[f.string()] = {{"size", key["size"]}, {"mtime_ns", key["mtime_ns"]}, {"sha256", h}};
      all_cached = false;
    }
    hashes.push_back(h);
  }
  if (!all_cached) write_file_atomic(cache_file, cache.dump(1) + "\n");
  if (hashes.size() == 1) return hashes[0];
  for (const auto& h : hashes) combined += h;
  return tb::sha256_hex(combined);
}

// ---- the machine's matmul peak (measured once per output directory) -------------------

// f32 always; bf16 too when the runs are bf16 and the CPU has native bf16 (the peak a bf16
// run's FLOP rate is a fraction of). measure_matmul_peak_gflops is `tunebench profile`'s.
json meta_info(const fs::path& cache_dir, int threads, bool bf16) {
  const auto m = machine_info();
  json meta = m.to_json();
  if (threads > 0) meta["threads"] = threads;
  const fs::path cache_file = cache_dir / "matmul-peak.json";
  json cache = read_json_file(cache_file);
  const bool want_bf16 = bf16 && dnn::info().bf16_supported;
  const bool valid = cache.is_object() && cache.value("host", "") == m.host && cache.value("cpu", "") == m.cpu &&
                     cache.value("threads", 0) == meta["threads"].get<int>() &&
                     cache.value("size", int64_t{0}) == kPeakMatmulSize && cache.contains("gflop_per_s") &&
                     cache["gflop_per_s"].is_number() &&
                     (!want_bf16 || (cache.contains("bf16_gflop_per_s") && cache["bf16_gflop_per_s"].is_number()));
  if (!valid) {
    // Measured in a child so this process never starts OpenMP's thread pool.
    const int want = meta["threads"].get<int>();
    bool single = false;
    const int status = run_forked(
        [&] {
          if (threads > 0 && !single) omp_set_num_threads(threads);
          const double g = measure_matmul_peak_gflops(kPeakMatmulSize, kPeakMatmulReps, false);
          json c{{"host", m.host}, {"cpu", m.cpu}, {"threads", want}, {"size", kPeakMatmulSize}, {"gflop_per_s", g}};
          if (want_bf16) c["bf16_gflop_per_s"] = measure_matmul_peak_gflops(kPeakMatmulSize, kPeakMatmulReps, true);
          write_file_atomic(cache_file, c.dump(1) + "\n");
        },
        single);
    cache = read_json_file(cache_file);
    if (status != 0 || !cache.is_object()) cache = nullptr;
  }
  meta["matmul_peak_gflop_per_s"] = cache.is_object() ? cache["gflop_per_s"] : json();
  if (bf16)
    meta["matmul_peak_bf16_gflop_per_s"] =
        cache.is_object() && cache.contains("bf16_gflop_per_s") ? cache["bf16_gflop_per_s"] : json();
  meta["matmul_peak_size"] = kPeakMatmulSize;
  return meta;
}

// ---- held-out LM loss (forgetting) -----------------------------------------------------

// Passages of heldout-lm as scoring requests: the first token is the context, the rest is
// scored; each passage is cut to half the context window (room for virtual tokens and
// prefixes, so an adapted model scores exactly the same tokens) and the total is capped.
std::vector<ScoreRequest> heldout_requests(const tasks::Task& task, const Tokenizer& tok, int64_t max_positions) {
  std::vector<ScoreRequest> reqs;
  int64_t total = 0;
  const auto cap = std::max<int64_t>(max_positions / 2, 2);
  for (const auto& ex : task.split("test")) {
    if (total >= kHeldoutTokens) break;
    auto ids = tok.encode(ex.text);
    if (static_cast<int64_t>(ids.size()) > cap) ids.resize(static_cast<std::size_t>(cap));
    if (ids.size() < 2) continue;
    const auto room = static_cast<std::size_t>(kHeldoutTokens - total + 1);
    if (ids.size() > room) ids.resize(room);
    if (ids.size() < 2) break;
    ScoreRequest r;
    r.context = {ids[0]};
    r.continuation.assign(ids.begin() + 1, ids.end());
    total += static_cast<int64_t>(r.continuation.size());
    reqs.push_back(std::move(r));
  }
  if (reqs.empty()) throw InputError("task heldout-lm has no passage to score");
  return reqs;
}

std::vector<double> heldout_nll(Model& model, const std::vector<ScoreRequest>& reqs, Hooks* hooks) {
  const auto scores = score(model, reqs, hooks);
  std::vector<double> nll;
  for (const auto& s : scores) nll.push_back(-s.sum);
  return nll;
}

// ---- metrics of predictions ------------------------------------------------------------

json metric_json(const tasks::MetricValue& m) {
  return {{"value", m.value}, {"stderr", m.std_error}, {"higher_is_better", m.higher_is_better}};
}

bool is_label_metric(const std::string& m) { return m == "accuracy" || m == "macro_f1"; }

// Metrics the predictions themselves determine, on a subset of the test examples.
std::vector<tasks::MetricValue> prediction_metrics(const tasks::Task& task, const std::vector<tasks::Example>& exs,
                                                   const std::vector<methods::Prediction>& preds,
                                                   const std::vector<std::size_t>& idx) {
  std::vector<tasks::MetricValue> out;
  for (const auto& name : task.metrics()) {
    if (is_label_metric(name)) continue;  // from tasks::evaluate_predictions
    tasks::EvalData d;
    if (name == "exact_match") {
      for (auto i : idx) d.gold_text.push_back(exs[i].target), d.pred_text.push_back(preds[i].text);
    } else if (name == "mrr" || name.rfind("recall@", 0) == 0) {
      for (auto i : idx) {
        if (preds[i].ranking.empty()) return out.clear(), out;  // the method does not retrieve
        d.ranked.push_back(preds[i].ranking);
        d.relevant.push_back(exs[i].gold_docs);
      }
    } else if (name == "gold_reward") {
      for (auto i : idx) d.value.push_back(task.gold_reward(exs[i].text, preds[i].text));
    } else {
      continue;  // kl, win_rate, mean_reward, loss...: only the method can compute them (Meter::metrics)
    }
    out.push_back(tasks::compute_metric(name, d));
  }
  return out;
}

json metrics_of(const tasks::Task& task, const std::vector<tasks::Example>& test,
                const std::vector<methods::Prediction>& preds) {
  json metrics = json::object();
  json slices = json::object();
  std::map<std::string, std::vector<std::size_t>> by_slice;
  std::vector<std::size_t> all(test.size());
  for (std::size_t i = 0; i < test.size(); ++i) {
    all[i] = i;
    if (!test[i].slice.empty()) by_slice[test[i].slice].push_back(i);
  }
  const bool labels = task.output_type() == tasks::OutputType::classify ||
                      task.output_type() == tasks::OutputType::multiple_choice ||
                      task.output_type() == tasks::OutputType::retrieval;
  bool any_label_metric = false;
  for (const auto& m : task.metrics()) any_label_metric |= is_label_metric(m);
  if (labels && any_label_metric) {
    std::vector<int> predicted;
    for (const auto& p : preds) predicted.push_back(p.label);
    const auto ev = tasks::evaluate_predictions(task, test, predicted);
    for (const auto& m : ev.overall) metrics[m.name] = metric_json(m);
    for (const auto& [slice, ms] : ev.slices)
      for (const auto& m : ms) slices[slice][m.name] = metric_json(m);
  }
  for (const auto& m : prediction_metrics(task, test, preds, all)) metrics[m.name] = metric_json(m);
  for (const auto& [slice, idx] : by_slice)
    for (const auto& m : prediction_metrics(task, test, preds, idx)) slices[slice][m.name] = metric_json(m);
  if (!slices.empty()) metrics["slices"] = slices;
  return metrics;
}

int64_t dir_bytes(const fs::path& dir) {
  int64_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  return n;
}

json null_if_not_positive(double v) { return std::isfinite(v) && v > 0 ? json(v) : json(); }

// A train_info with every field present and nothing measured (failed runs start from it).
json empty_train_info(const std::string& status, const std::string& message) {
  json memory = json::object();
  for (const char* k : {"weights", "gradients", "optimizer_state", "activations", "kv_cache", "index"}) memory[k] = 0;
  return {{"status", status}, {"message", message}, {"total_params", 0}, {"trainable_params", 0},
          {"trainable_percent", 0.0}, {"adaptation_bytes", 0}, {"peak_rss_bytes", 0},
          {"rss_after_load_bytes", 0}, {"rss_delta_bytes", 0}, {"memory", memory},
          {"train_seconds", 0.0}, {"train_tokens", 0}, {"train_tokens_per_s", nullptr}, {"steps", 0},
          {"epochs", 0}, {"loss_curve", json::array()}, {"eval_seconds", 0.0}, {"eval_tokens", 0},
          {"eval_tokens_per_s", nullptr}, {"train_flops", 0.0}, {"eval_flops", 0.0},
          {"train_flop_per_s", nullptr}, {"eval_flop_per_s", nullptr}, {"train_peak_fraction", nullptr},
          {"eval_peak_fraction", nullptr}, {"run_seconds", 0.0}, {"details", json::object()}};
}

// ---- one run -----------------------------------------------------------------------------

struct MatrixContext {
  const RunSpec& spec;
  const tasks::Registry& registry;
  fs::path model_dir;
  std::string model_sha;
  fs::path out, cache_dir;
  json meta;
};

struct RunPlan {
  RunItem item;
  const methods::MethodInfo* info = nullptr;
  // Shared by every run of the method: a matrix of many seeds holds one copy.
  std::shared_ptr<const std::map<std::string, std::string>> options;
  std::string config_hash;
  std::map<std::string, std::vector<std::string>> grid;  // --tune: option -> values (empty: not tuned)
  json run_info;  // built when the run starts (a large matrix never holds every run's)
  int64_t k = 0, n = 0;
  double runs_done_seconds = 0.0;
};

// --save-adaptations: what the method learned, moved from `tmp` to
// <out>/adaptations/<record name without .json>/ with tunebench_adaptation.json (methods/saved.h).
// lora, prefix and softprompt are written as PEFT adapters (adaptation.safetensors then
// dropped: the PEFT files hold the same values); other methods keep adaptation.safetensors.
// A method that stores nothing (icl, index, the reference rows) leaves no directory.
void keep_adaptation(const MatrixContext& mc, const RunPlan& plan, const methods::Method& method, const Model& model,
                     const fs::path& tmp, bool saved_tensors) {
  const fs::path peft_dir = tmp / "peft";
  const bool peft = method.export_peft(peft_dir);
  if (!peft && !saved_tensors) return;
  json info = {{"format", peft ? "peft" : "tunebench"},
               {"method", plan.item.method},
               {"options", *plan.options},
               {"task", plan.item.task},
               {"seed", plan.item.seed},
               {"limit", mc.spec.limit},
               {"precision", mc.spec.precision},
               {"base_model", {{"path", fs::absolute(mc.model_dir).lexically_normal().string()},
                          {"sha256", mc.model_sha},
                          {"config", model.config().to_hf_json()}}},
               {"head", nullptr},
               {"record", record_filename(plan.item.method, plan.item.task, plan.item.seed, plan.item.train_subset)}};
  if (peft) {
    fs::remove(tmp / methods::kTunebenchAdaptationFile);
    for (const auto& e : fs::directory_iterator(peft_dir)) fs::rename(e.path(), tmp / e.path().filename());
    fs::remove(peft_dir);
    // PEFT finds the base model through base_model_name_or_path.
    const fs::path cfg_file = tmp / "adapter_config.json";
    json c = read_json_file(cfg_file);
    c["base_model_name_or_path"] = info["base_model"]["path"];
    write_file_atomic(cfg_file, c.dump(2) + "\n");
    if (fs::exists(tmp / methods::kHeadFile)) info["head"] = methods::kHeadFile;
  } else {
    const fs::path values = tmp / methods::kTunebenchAdaptationFile;
    if (fs::exists(values) && SafetensorsFile::open(values).find("head.weight"))
      info["head"] = methods::kTunebenchAdaptationFile;
  }
  write_file_atomic(tmp / methods::kAdaptationInfoFile, info.dump(2) + "\n");
  const std::string stem = fs::path(record_filename(plan.item.method, plan.item.task, plan.item.seed, plan.item.train_subset)).stem().string();
  const fs::path keep = mc.out / "adaptations" / stem;
  fs::create_directories(keep.parent_path());
  fs::remove_all(keep);
  fs::rename(tmp, keep);
  fs::create_directories(tmp);
}

// --limit N: tasks::hashed_subset, the one subset rule of every sample.
std::vector<tasks::Example> take(const std::vector<tasks::Example>& v, int64_t limit) {
  return tasks::hashed_subset(v, limit);
}

// The task a run sees: with --limit and a document collection, the collection is cut to
// take_documents() of the kept splits.
std::shared_ptr<const tasks::Task> limited_task(std::shared_ptr<const tasks::Task> task, int64_t limit) {
  if (limit <= 0 || task->documents().empty()) return task;
  const auto train = take(task->split("train"), limit), dev = take(task->split("dev"), limit),
             test = take(task->split("test"), limit);
  auto docs = take_documents(task->documents(), {&train, &dev, &test}, limit);
  if (docs.size() == task->documents().size()) return task;
  return task->with_documents(std::move(docs));
}

// The examples a run sees: the task after --limit, its limited splits, and for a learning
// curve the class-balanced nested subset of train (tasks::balanced_subset).
struct RunData {
  std::shared_ptr<const tasks::Task> task;
  std::vector<tasks::Example> train, dev, test;
};

int64_t train_size_of(const std::string& subset) { return subset.empty() || subset == "all" ? 0 : std::stoll(subset); }

// The number of train examples a run at `subset` sees when the (limited) train split has
// `all`: the split cut to the size, as run_data() takes it.
int64_t train_subset_size(const std::string& subset, int64_t all) {
  const int64_t n = train_size_of(subset);
  return n > 0 ? std::min(n, all) : all;
}

RunData run_data(const MatrixContext& mc, const RunItem& item) {
  RunData d;
  d.task = limited_task(mc.registry.load(item.task), mc.spec.limit);
  d.train = tasks::balanced_subset(take(d.task->split("train"), mc.spec.limit), train_size_of(item.train_subset));
  d.dev = take(d.task->split("dev"), mc.spec.limit);
  d.test = take(d.task->split("test"), mc.spec.limit);
  return d;
}

fs::path heldout_cache_file(const MatrixContext& mc) {
  // bf16 runs compare against the base model in bf16, so forgetting is not precision error.
  const std::string prec = mc.spec.precision == "f32" ? "" : "__" + mc.spec.precision;
  return mc.cache_dir / ("heldout-lm__" + mc.model_sha.substr(0, 16) + prec + ".json");
}

// The base model's per-passage NLL on heldout-lm, from the cache or computed on a freshly
// loaded copy of the base model (the run's own model has been adapted by now).
std::vector<double> base_heldout_nll(const MatrixContext& mc, const tasks::Task& heldout,
                                     const std::vector<ScoreRequest>& reqs) {
  const auto file = heldout_cache_file(mc);
  const json c = read_json_file(file);
  if (c.is_object() && c.value("model_sha256", "") == mc.model_sha && c.value("task_version", -1) == heldout.version() &&
      c.value("max_tokens", int64_t{-1}) == kHeldoutTokens && c.contains("nll") && c["nll"].is_array() &&
      c["nll"].size() == reqs.size())
    return c["nll"].get<std::vector<double>>();
  auto base = load_model(mc.model_dir);
  base->set_precision(parse_precision(mc.spec.precision, "--precision"));
  auto nll = heldout_nll(*base, reqs, nullptr);
  write_file_atomic(file, json{{"model_sha256", mc.model_sha}, {"task_version", heldout.version()},
                               {"max_tokens", kHeldoutTokens}, {"passages", reqs.size()}, {"nll", nll}}
                              .dump() + "\n");
  return nll;
}

// Runs in the child process: everything of one run, ending with its record on disk.
void run_in_child(const MatrixContext& mc, const RunPlan& plan, bool single_threaded) {
  const double t_start = now_seconds();
  reset_peak_rss();
  if (mc.spec.threads > 0 && !single_threaded) omp_set_num_threads(mc.spec.threads);
  const fs::path record_file =
      mc.out / record_filename(plan.item.method, plan.item.task, plan.item.seed, plan.item.train_subset);
  json record = {{"run_info", plan.run_info}, {"meta_info", mc.meta}, {"metrics", json::object()}};
  record["run_info"]["threads"] = omp_get_max_threads();
  // A test fault: every training step slept this long (TrainLoop), so no record hides it.
  if (const char* delay = std::getenv("TB_TEST_STEP_DELAY_MS"); delay && *delay)
    record["run_info"]["injected_step_delay_ms"] = TrainLoop::injected_step_delay_ms();
  if (single_threaded) record["run_info"]["threads_note"] = "forced to 1: the runner process had other threads at fork";
  json ti = empty_train_info("ok", "");
  ProgressLine progress(plan.k, plan.n,
                        plan.item.method + " " + plan.item.task +
                            (plan.item.train_subset.empty() ? "" : " n" + plan.item.train_subset) + " seed" +
                            std::to_string(plan.item.seed),
                        plan.runs_done_seconds);
  try {
    progress.update("load", 0, 0, NAN, 0);
    auto model = load_model(mc.model_dir);
    model->set_precision(parse_precision(mc.spec.precision, "--precision"));
    const auto tokenizer = Tokenizer::from_dir(mc.model_dir.string());
    const int64_t rss_loaded = rss_bytes();
    ti["rss_after_load_bytes"] = rss_loaded;
    const auto data = run_data(mc, plan.item);
    const auto& task = data.task;
    const auto& train = data.train;
    const auto& dev = data.dev;
    const auto& test = data.test;
    if (test.empty()) throw InputError("task " + task->name() + " has no test examples");

    methods::Meter meter;
    // A tuned run trains with the options chosen on dev (run_info.options), else the plan's.
    methods::Options options(plan.item.method, plan.run_info.contains("tuning")
                                                   ? plan.run_info["options"].get<std::map<std::string, std::string>>()
                                                   : *plan.options);
    const double t_train_start = now_seconds();
    meter.progress = [&](const std::string& phase, int64_t step, int64_t total, double loss) {
      const double secs = meter.phase("train").seconds > 0 ? meter.phase("train").seconds : now_seconds() - t_train_start;
      progress.update(phase, step, total, loss, secs > 0 ? static_cast<double>(meter.phase("train").tokens) / secs : 0.0);
    };
    methods::RunContext ctx{*model, tokenizer, *task, plan.item.seed, options, meter, mc.spec.limit,
                            mc.cache_dir, mc.model_sha, train, dev};
    auto method = plan.info->make();
    progress.update("prepare", 0, 0, NAN, 0);
    const double t0 = now_seconds();
    method->prepare(ctx);
    const double train_wall = now_seconds() - t0;

    json metrics = json::object();
    double predict_wall = 0.0, eval_secs = 0.0;
    int64_t eval_tokens = 0;
    double eval_flops = 0.0;
    std::vector<UnitCost> eval_units;  // the reported prediction's batches
    if (meter.status == "diverged") {
      ti["status"] = "diverged";
      ti["message"] = meter.status_message.empty() ? "training diverged" : meter.status_message;
    } else {
      TB_CHECK(meter.status == "ok", "method " << plan.item.method << " set meter status '" << meter.status << "'");
      progress.update("predict", 0, 0, NAN, 0);
      const methods::Phase before = meter.phase("test_eval");
      const double t1 = now_seconds();
      const auto preds = method->predict(ctx, test);
      predict_wall = now_seconds() - t1;
      const methods::Phase& after = meter.phase("test_eval");
      eval_tokens = after.tokens - before.tokens;
      eval_flops = after.flops - before.flops;
      // A method that runs passes besides the reported prediction meters the prediction's
      // own seconds; otherwise the whole predict() is the prediction.
      const double metered = after.seconds - before.seconds;
      eval_secs = metered > 0 ? std::min(metered, predict_wall) : predict_wall;
      eval_units.assign(after.units.begin() + static_cast<int64_t>(before.units.size()), after.units.end());
      if (preds.size() != test.size())
        throw Error("method " + plan.item.method + " returned " + std::to_string(preds.size()) + " predictions for " +
                    std::to_string(test.size()) + " test examples");
      metrics = metrics_of(*task, test, preds);
      for (const auto& m : meter.metrics) metrics[m.name] = metric_json(m);
    }
    const int64_t peak = peak_rss_bytes();

    // Named by the run too: shards sharing --out on other machines may have the same pid.
    const fs::path adapt_dir =
        mc.out / (".adaptation." +
                  fs::path(record_filename(plan.item.method, plan.item.task, plan.item.seed, plan.item.train_subset)).stem().string() +
                  "." + std::to_string(::getpid()));
    fs::remove_all(adapt_dir);
    fs::create_directories(adapt_dir);
    const int64_t returned_bytes = method->save_adaptation(adapt_dir);
    const int64_t adaptation_bytes = std::max(dir_bytes(adapt_dir), returned_bytes);
    if (mc.spec.save_adaptations && ti["status"] == "ok")
      keep_adaptation(mc, plan, *method, *model, adapt_dir, returned_bytes > 0);
    fs::remove_all(adapt_dir);

    Hooks* lm_hooks = method->lm_hooks();
    if (ti["status"] == "ok" && (method->changes_base() || lm_hooks)) {
      progress.update("forgetting", 0, 0, NAN, 0);
      const auto heldout = mc.registry.load(kHeldoutTask);
      const auto reqs = heldout_requests(*heldout, tokenizer, model->config().max_positions);
      tasks::EvalData d;
      d.nll = heldout_nll(*model, reqs, lm_hooks);
      d.nll_base = base_heldout_nll(mc, *heldout, reqs);
      for (const auto& r : reqs) d.tokens.push_back(static_cast<double>(r.continuation.size()));
      metrics["forgetting"] = metric_json(tasks::compute_metric("forgetting", d));
    }

    const int64_t total_params = model->params().num_params();
    const int64_t trainable = method->trainable_params();
    // The train phase's seconds when the method metered training steps, else all of prepare().
    const double train_secs = meter.phase("train").seconds > 0 ? meter.phase("train").seconds : train_wall;
    // The peak of the precision the run's matmuls ran in.
    const char* peak_key = mc.spec.precision == "bf16" ? "matmul_peak_bf16_gflop_per_s" : "matmul_peak_gflop_per_s";
    const double peak_gflops =
        mc.meta.contains(peak_key) && mc.meta[peak_key].is_number() ? mc.meta[peak_key].get<double>() : NAN;
    const double train_fps = train_secs > 0 && meter.phase("train").flops > 0 ? meter.phase("train").flops / train_secs : NAN;
    const double eval_fps = eval_secs > 0 && eval_flops > 0 ? eval_flops / eval_secs : NAN;
    ti["total_params"] = total_params;
    ti["trainable_params"] = trainable;
    ti["trainable_percent"] = total_params > 0 ? 100.0 * static_cast<double>(trainable) / static_cast<double>(total_params) : 0.0;
    ti["adaptation_bytes"] = adaptation_bytes;
    ti["peak_rss_bytes"] = peak;
    ti["rss_after_load_bytes"] = rss_loaded;
    ti["rss_delta_bytes"] = std::max<int64_t>(peak - rss_loaded, 0);
    // The base weights are resident for every method; a method that does not meter its
    // memory (the reference rows) still holds them.
    // Weights: the fp32 values plus, in bf16 mixed precision, their bf16 matmul copies.
    ti["memory"]["weights"] = total_params * static_cast<int64_t>(sizeof(float)) + model->params().bf16_bytes();
    for (const auto& [k, v] : meter.memory) ti["memory"][k] = v;
    // train_seconds: the training steps' own time when the method meters it (dev passes and
    // other preparation excluded), else all of prepare(); prepare_seconds: all of prepare().
    ti["train_seconds"] = train_secs;
    ti["prepare_seconds"] = train_wall;
    ti["cache_hit"] = meter.cache_hit;
    if (meter.cache_hit) ti["cached_cost"] = meter.cached_cost;
    ti["train_tokens"] = meter.phase("train").tokens;
    ti["train_tokens_per_s"] = null_if_not_positive(train_secs > 0 ? static_cast<double>(meter.phase("train").tokens) / train_secs : NAN);
    ti["steps"] = meter.steps;
    ti["epochs"] = meter.epochs;
    json curve = json::array();
    for (const auto& p : meter.loss_curve) {
      json pt = {{"step", p.step}, {"loss", std::isfinite(p.loss) ? json(p.loss) : json()}};
      if (std::isfinite(p.dev_metric)) pt["dev_metric"] = p.dev_metric;
      curve.push_back(pt);
    }
    ti["loss_curve"] = curve;
    ti["eval_seconds"] = eval_secs;
    ti["predict_seconds"] = predict_wall;
    ti["eval_tokens"] = eval_tokens;
    ti["eval_tokens_per_s"] = null_if_not_positive(eval_secs > 0 ? static_cast<double>(eval_tokens) / eval_secs : NAN);
    ti["train_flops"] = meter.phase("train").flops;
    ti["eval_flops"] = eval_flops;
    ti["train_flop_per_s"] = null_if_not_positive(train_fps);
    ti["eval_flop_per_s"] = null_if_not_positive(eval_fps);
    ti["train_peak_fraction"] = null_if_not_positive(train_fps / (peak_gflops * 1e9));
    ti["eval_peak_fraction"] = null_if_not_positive(eval_fps / (peak_gflops * 1e9));
    // Per phase: the record's train and test figures above, and every other phase the
    // method metered (dev_eval, ...), each with the spread of its units' speed.
    json timing = json::object();
    auto add_phase = [&](const std::string& name, double seconds, int64_t tokens, double flops,
                         const std::vector<UnitCost>& units) {
      std::vector<double> us;
      std::vector<int64_t> ut;
      for (const auto& u : units) us.push_back(u.seconds), ut.push_back(u.tokens);
      timing[name] = phase_timing_json(seconds, tokens, flops, us, ut, peak_gflops * 1e9);
    };
    const auto& train_phase = meter.phase("train");
    add_phase("train", train_secs, train_phase.tokens, train_phase.flops, train_phase.units);
    add_phase("test_eval", eval_secs, eval_tokens, eval_flops, eval_units);
    for (const auto& [name, ph] : meter.phases)
      if (name != "train" && name != "test_eval") add_phase(name, ph.seconds, ph.tokens, ph.flops, ph.units);
    ti["timing"] = timing;
    ti["details"] = meter.details.is_object() ? meter.details : json{{"value", meter.details}};
    record["metrics"] = metrics;
  } catch (const std::bad_alloc&) {
    ti["status"] = "oom";
    ti["message"] = "allocation failed (std::bad_alloc)";
    record["metrics"] = json::object();
  } catch (const std::exception& e) {
    ti["status"] = "error";
    ti["message"] = e.what();
    record["metrics"] = json::object();
  }
  if (ti["peak_rss_bytes"].get<int64_t>() == 0) {  // the run failed before its peak was taken
    ti["peak_rss_bytes"] = peak_rss_bytes();
    ti["rss_delta_bytes"] = std::max<int64_t>(ti["peak_rss_bytes"].get<int64_t>() - ti["rss_after_load_bytes"].get<int64_t>(), 0);
  }
  ti["run_seconds"] = now_seconds() - t_start;
  record["train_info"] = ti;
  validate_record(record, record_file.string());
  write_file_atomic(record_file, record.dump(1) + "\n");
  progress.finish(ti["status"].get<std::string>(), now_seconds() - t_start);
}

// Runs in a child process: one combination of a tuned run's grid — train with `options`,
// predict dev, and write {status, message, dev (the primary metric), higher_is_better,
// seconds} to `out_file`.
void run_trial(const MatrixContext& mc, const RunPlan& plan, const std::map<std::string, std::string>& options,
               const std::string& label, const fs::path& out_file, bool single_threaded) {
  const double t0 = now_seconds();
  if (mc.spec.threads > 0 && !single_threaded) omp_set_num_threads(mc.spec.threads);
  json res = {{"status", "ok"}, {"message", ""}, {"dev", nullptr}, {"higher_is_better", true}};
  ProgressLine progress(plan.k, plan.n, plan.item.method + " " + plan.item.task + " seed" + std::to_string(plan.item.seed) +
                                            " tune " + label,
                        plan.runs_done_seconds);
  try {
    auto model = load_model(mc.model_dir);
    model->set_precision(parse_precision(mc.spec.precision, "--precision"));
    const auto tokenizer = Tokenizer::from_dir(mc.model_dir.string());
    const auto data = run_data(mc, plan.item);
    if (data.dev.empty()) throw InputError("task " + data.task->name() + " has no dev examples to tune on");
    methods::Meter meter;
    meter.progress = [&](const std::string& phase, int64_t step, int64_t total, double loss) {
      progress.update(phase, step, total, loss, 0.0);
    };
    methods::RunContext ctx{*model, tokenizer, *data.task, plan.item.seed, methods::Options(plan.item.method, options),
                            meter, mc.spec.limit, mc.cache_dir, mc.model_sha, data.train, data.dev};
    auto method = plan.info->make();
    method->prepare(ctx);
    if (meter.status != "ok") {
      res["status"] = meter.status;
      res["message"] = meter.status_message;
    } else {
      const auto preds = method->predict(ctx, data.dev);
      if (preds.size() != data.dev.size()) throw Error("method returned a wrong number of dev predictions");
      const auto m = metrics_of(*data.task, data.dev, preds);
      const auto& primary = data.task->spec().primary_metric;
      if (!m.contains(primary)) throw Error("no " + primary + " on dev to tune by");
      res["dev"] = m[primary]["value"];
      res["higher_is_better"] = m[primary]["higher_is_better"];
    }
  } catch (const std::bad_alloc&) {
    res["status"] = "oom";
    res["message"] = "allocation failed (std::bad_alloc)";
  } catch (const std::exception& e) {
    res["status"] = "error";
    res["message"] = e.what();
  }
  res["seconds"] = now_seconds() - t0;
  write_file_atomic(out_file, res.dump() + "\n");
  progress.finish(res["status"].get<std::string>(), now_seconds() - t0);
}

// Every combination of a grid, in grid order (the last option varies fastest).
std::vector<std::map<std::string, std::string>> grid_combinations(const std::map<std::string, std::vector<std::string>>& grid) {
  std::vector<std::map<std::string, std::string>> out = {{}};
  for (const auto& [name, values] : grid) {
    std::vector<std::map<std::string, std::string>> next;
    for (const auto& partial : out)
      for (const auto& v : values) {
        auto c = partial;
        c[name] = v;
        next.push_back(std::move(c));
      }
    out = std::move(next);
  }
  return out;
}

// Tunes one run: a trial per combination of its grid (each in its own child process; a
// trial's result is cached under <out>/cache/tune/ by configuration, size, seed and
// combination, so --resume does not train it again), then fills run_info.options with the
// combination of the best dev score and run_info.tuning with the grid, every trial and the
// choice. Returns false when SIGTERM/SIGINT stopped it.
bool tune_run(const MatrixContext& mc, RunPlan& p) {
  const auto combos = grid_combinations(p.grid);
  const fs::path dir = mc.cache_dir / "tune";
  fs::create_directories(dir);
  json trials = json::array();
  double seconds = 0.0;
  int best = -1;
  bool higher = true;
  for (std::size_t i = 0; i < combos.size(); ++i) {
    if (g_stop_signal) return false;
    auto options = *p.options;
    std::string label;
    for (const auto& [k, v] : combos[i]) {
      options[k] = v;
      label += (label.empty() ? "" : ",") + k + "=" + v;
    }
    const fs::path file = dir / (p.config_hash + "__" + (p.item.train_subset.empty() ? "" : "n" + p.item.train_subset + "__") +
                                 "seed" + std::to_string(p.item.seed) + "__" + tb::sha256_hex(json(combos[i]).dump()).substr(0, 12) +
                                 ".json");
    json res = read_json_file(file);
    if (!res.is_object() || !res.contains("status") || !res.contains("dev")) {
      bool single = false;
      const int status = run_forked([&] { run_trial(mc, p, options, label, file, single); }, single);
      if (g_stop_signal) return false;
      res = read_json_file(file);
      if (!res.is_object() || !res.contains("status") || !res.contains("dev"))
        res = {{"status", "error"}, {"message", describe_exit(status)}, {"dev", nullptr}, {"seconds", 0.0}};
    }
    seconds += res.value("seconds", 0.0);
    json trial = {{"options", combos[i]}, {"status", res["status"]}, {"dev", res["dev"]}};
    if (!res.value("message", std::string()).empty()) trial["message"] = res["message"];
    trials.push_back(trial);
    if (res["status"] == "ok" && res["dev"].is_number()) {
      higher = res.value("higher_is_better", true);
      const double v = res["dev"].get<double>();
      const double b = best < 0 ? NAN : trials[static_cast<std::size_t>(best)]["dev"].get<double>();
      if (best < 0 || (higher ? v > b : v < b)) best = static_cast<int>(i);
    }
  }
  const auto& chosen = combos[static_cast<std::size_t>(std::max(best, 0))];
  json grid = json::object();
  for (const auto& [k, v] : p.grid) grid[k] = v;
  json tuning = {{"split", "dev"},
                 {"metric", p.run_info["primary_metric"]},
                 {"higher_is_better", higher},
                 {"grid", grid},
                 {"trials", trials},
                 {"chosen", chosen},
                 {"seconds", seconds}};
  if (best < 0) tuning["note"] = "no combination finished with a dev score; the run uses the first of the grid";
  auto options = *p.options;
  for (const auto& [k, v] : chosen) options[k] = v;
  p.run_info["options"] = options;
  p.run_info["tuning"] = tuning;
  return true;
}

// Stale temp files of processes that no longer exist (a killed run's half-written record).
// Whether a process is gone: no such pid, or a zombie (killed but not reaped — in a
// container whose init does not reap, a killed run's child can stay a zombie for good).
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');  // "pid (comm) S ...": comm may contain spaces
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

void remove_stale_temp_files(const fs::path& out) {
  for (const auto& e : fs::directory_iterator(out)) {
    const auto name = e.path().filename().string();
    const bool temp = name.size() > 1 && name[0] == '.' && (name.find(".tmp.") != std::string::npos || name.rfind(".adaptation.", 0) == 0);
    if (!temp) continue;
    const auto pid_text = name.substr(name.find_last_of('.') + 1);
    int64_t pid = 0;
    const auto [end, ec] = std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), pid);
    if (ec != std::errc() || end != pid_text.data() + pid_text.size()) continue;
    if (process_gone(static_cast<pid_t>(pid))) fs::remove_all(e.path());
  }
}

}  // namespace

// ---- public --------------------------------------------------------------------------------

std::vector<tasks::Document> take_documents(const std::vector<tasks::Document>& docs,
                                           const std::vector<const std::vector<tasks::Example>*>& kept, int64_t limit) {
  if (limit <= 0) return docs;
  std::set<std::string> gold;
  for (const auto* split : kept)
    for (const auto& ex : *split) gold.insert(ex.gold_docs.begin(), ex.gold_docs.end());
  std::vector<std::pair<uint64_t, std::size_t>> others;
  for (std::size_t i = 0; i < docs.size(); ++i)
    if (!gold.count(docs[i].id)) others.emplace_back(tasks::subset_key(docs[i].id), i);
  const auto n = std::min<std::size_t>(others.size(), static_cast<std::size_t>(limit));
  std::nth_element(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(n), others.end());
  std::vector<bool> keep(docs.size(), false);
  for (std::size_t i = 0; i < n; ++i) keep[others[i].second] = true;
  std::vector<tasks::Document> out;
  for (std::size_t i = 0; i < docs.size(); ++i)
    if (keep[i] || gold.count(docs[i].id)) out.push_back(docs[i]);
  return out;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) throw InputError("--shard: '" + text + "' is not I/N");
  const int64_t i = parse_int(text.substr(0, slash), "--shard");
  const int64_t n = parse_int(text.substr(slash + 1), "--shard");
  if (n < 1 || i < 0 || i >= n) throw InputError("--shard: '" + text + "' needs 0 <= I < N");
  return {i, n};
}

std::vector<uint64_t> parse_seeds(const std::string& text, const std::string& what) {
  std::vector<uint64_t> seeds;
  std::set<uint64_t> seen;  // a set: a list of a million seeds is checked in a second, not hours
  for (const auto& s : split_list(text)) {
    const int64_t v = parse_int(s, what);
    if (v < 0) throw InputError(what + ": seed " + s + " is negative");
    if (!seen.insert(static_cast<uint64_t>(v)).second) throw InputError(what + ": seed " + s + " is listed twice");
    seeds.push_back(static_cast<uint64_t>(v));
  }
  if (seeds.empty()) throw InputError(what + ": no seeds in '" + text + "'");
  return seeds;
}

std::map<std::string, std::string> resolve_options(const methods::MethodInfo& info,
                                                   const std::map<std::string, std::string>& given,
                                                   const std::string& where) {
  std::map<std::string, std::string> out;
  for (const auto& o : info.options)
    if (!o.default_value.empty()) out[o.name] = o.default_value;
  for (const auto& [name, value] : given) {
    const bool known = std::any_of(info.options.begin(), info.options.end(),
                                   [&, &key = name](const auto& o) { return o.name == key; });
    if (!known) {
      std::string names;
      for (const auto& o : info.options) names += (names.empty() ? "" : ", ") + o.name;
      throw InputError((where.empty() ? "" : where + ": ") + "unknown option --" + info.name + "." + name + " (" +
                       (names.empty() ? info.name + " has no options" : "options of " + info.name + ": " + names) + ")");
    }
    out[name] = value;
  }
  return out;
}

std::vector<std::string> parse_train_sizes(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  int64_t last = 0;
  for (const auto& item : split_list(text)) {
    if (!out.empty() && out.back() == "all") throw InputError(what + ": 'all' must be the last size, got '" + text + "'");
    if (item == "all") {
      out.push_back(item);
      continue;
    }
    const int64_t n = parse_int(item, what);
    if (n < 1) throw InputError(what + ": size " + item + " must be positive (or 'all')");
    if (n <= last) throw InputError(what + ": sizes must increase, each once; got " + item + " after " + std::to_string(last));
    last = n;
    out.push_back(std::to_string(n));
  }
  if (out.empty()) throw InputError(what + ": no sizes in '" + text + "' (e.g. 8,32,128,512,all)");
  return out;
}

void add_tune_entry(TuneGrid& grid, const std::string& key, const std::string& values,
                    const std::vector<methods::MethodInfo>& methods, const std::string& where) {
  const std::string at = where + ": " + key;
  const auto dot = key.find('.');
  const std::string method = dot == std::string::npos ? "" : key.substr(0, dot);
  const std::string option = dot == std::string::npos ? key : key.substr(dot + 1);
  if (option.empty()) throw InputError(at + ": no option name (expected e.g. lr or lora.lr)");
  auto declares = [&option](const methods::MethodInfo& m) {
    return std::any_of(m.options.begin(), m.options.end(), [&option](const auto& o) { return o.name == option; });
  };
  if (!method.empty()) {
    const auto it = std::find_if(methods.begin(), methods.end(), [&method](const auto& m) { return m.name == method; });
    if (it == methods.end()) throw InputError(at + ": no method '" + method + "'");
    if (!declares(*it)) throw InputError(at + ": " + method + " has no option '" + option + "'");
  } else if (std::none_of(methods.begin(), methods.end(), declares)) {
    throw InputError(at + ": no method has an option '" + option + "'");
  }
  std::vector<std::string> list;
  std::set<std::string> seen;
  for (const auto& v : split_list(values))
    if (!seen.insert(v).second) throw InputError(at + ": value '" + v + "' listed twice");
    else list.push_back(v);
  if (list.empty()) throw InputError(at + ": no values to try (expected e.g. " + option + " = 1e-4,3e-4,1e-3)");
  if (grid[method].count(option)) throw InputError(at + ": given twice");
  grid[method][option] = list;
}

void add_tune_flag(TuneGrid& grid, const std::string& text, const std::vector<methods::MethodInfo>& methods) {
  const auto eq = text.find('=');
  if (eq == std::string::npos)
    throw InputError("--tune: '" + text + "' is not OPTION=V1,V2,... (e.g. lr=1e-4,3e-4,1e-3 or lora.lr=1e-4,1e-3)");
  add_tune_entry(grid, trim(text.substr(0, eq)), text.substr(eq + 1), methods, "--tune");
}

std::map<std::string, std::vector<std::string>> tune_grid_for(const TuneGrid& grid, const methods::MethodInfo& info) {
  std::map<std::string, std::vector<std::string>> out;
  auto declares = [&info](const std::string& option) {
    return std::any_of(info.options.begin(), info.options.end(), [&option](const auto& o) { return o.name == option; });
  };
  if (grid.count("") && info.learns_from_train)
    for (const auto& entry : grid.at(""))
      if (declares(entry.first)) out[entry.first] = entry.second;
  if (grid.count(info.name))
    for (const auto& entry : grid.at(info.name)) out[entry.first] = entry.second;
  return out;
}

Suite read_suite(const fs::path& file, const std::vector<methods::MethodInfo>& methods) {
  std::ifstream in(file);
  if (!in) throw InputError("cannot read suite file " + file.string());
  Suite s;
  std::string section;
  std::set<std::string> seen;
  int line_no = 0;
  std::map<std::string, int> option_lines;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    const std::string where = file.string() + ":" + std::to_string(line_no);
    const auto t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[') {
      if (t.back() != ']') throw InputError(where + ": malformed section header '" + t + "'");
      section = trim(t.substr(1, t.size() - 2));
      const bool method = std::any_of(methods.begin(), methods.end(), [&](const auto& m) { return m.name == section; });
      if (section != "run" && section != "tune" && !method)
        throw InputError(where + ": unknown section [" + section + "] (expected [run], [tune] or a method name)");
      continue;
    }
    const auto eq = t.find('=');
    if (eq == std::string::npos) throw InputError(where + ": expected 'key = value', got '" + t + "'");
    const auto key = trim(t.substr(0, eq));
    const auto value = trim(t.substr(eq + 1));
    if (section.empty()) throw InputError(where + ": key '" + key + "' outside a section");
    if (!seen.insert(section + "." + key).second) throw InputError(where + ": key '" + key + "' set twice in [" + section + "]");
    if (section == "run") {
      const std::string what = where + ": " + key;
      if (key == "methods") s.methods = split_list(value);
      else if (key == "tasks") s.tasks = split_list(value);
      else if (key == "seeds") s.seeds = parse_seeds(value, what);
      else if (key == "model") s.model = value;
      else if (key == "limit") s.limit = parse_int(value, what);
      else if (key == "threads") s.threads = static_cast<int>(parse_int(value, what));
      else if (key == "precision") s.precision = precision_name(parse_precision(value, what));
      else if (key == "save-adaptations") s.save_adaptations = parse_bool(value, what);
      else if (key == "train-sizes") s.train_sizes = parse_train_sizes(value, what);
      else
        throw InputError(where + ": unknown key '" + key +
                         "' in [run] (expected methods, tasks, seeds, model, limit, threads, precision, save-adaptations, train-sizes)");
    } else if (section == "tune") {
      add_tune_entry(s.tune, key, value, methods, where + ": [tune]");
    } else {
      const auto& info = *std::find_if(methods.begin(), methods.end(), [&](const auto& m) { return m.name == section; });
      resolve_options(info, {{key, value}}, where);
      s.options[section][key] = value;
    }
  }
  return s;
}

namespace {

// What a run's record says of its task depends on the task and --limit only: computed once
// per task, so planning a matrix of many seeds costs one pass over each task's data.
struct TaskFacts {
  int version = 1;
  std::string primary_metric;
  json examples, documents_limit;
};

class TaskFactsCache {
 public:
  TaskFactsCache(const tasks::Registry& registry, int64_t limit) : registry_(registry), limit_(limit) {}
  const TaskFacts& operator()(const std::string& name) {
    const auto it = facts_.find(name);
    if (it != facts_.end()) return it->second;
    const auto task = registry_.load(name);
    TaskFacts f;
    f.version = task->version();
    f.primary_metric = task->spec().primary_metric;
    f.examples = {{"train", take(task->split("train"), limit_).size()},
                  {"dev", take(task->split("dev"), limit_).size()},
                  {"test", take(task->split("test"), limit_).size()}};
    if (!task->documents().empty()) {
      const auto run_task = limited_task(task, limit_);
      f.examples["documents"] = run_task->documents().size();
      if (run_task != task)
        f.documents_limit = {
            {"documents", run_task->documents().size()},
            {"of", task->documents().size()},
            {"rule", "--limit " + std::to_string(limit_) + ": the gold documents of the kept train/dev/test examples "
                     "plus the " + std::to_string(limit_) + " other documents whose ids hash lowest"}};
    }
    return facts_.emplace(name, std::move(f)).first->second;
  }
  CostInputs cost_inputs(const std::string& name) {
    const auto& e = (*this)(name).examples;
    return {e["train"].get<int64_t>(), e["dev"].get<int64_t>(), e["test"].get<int64_t>(), e.value("documents", int64_t{0})};
  }

 private:
  const tasks::Registry& registry_;
  int64_t limit_;
  std::map<std::string, TaskFacts> facts_;
};

// One applicable method/task pair of the matrix; its runs are one per train size (a single
// "" outside a learning curve) and seed, numbered method-major.
struct MatrixCell {
  const methods::MethodInfo* info = nullptr;
  std::string method, task;
  std::shared_ptr<const std::map<std::string, std::string>> options;
  std::map<std::string, std::vector<std::string>> grid;  // --tune: option -> values (empty: not tuned)
  std::vector<std::string> sizes;                        // --train-sizes entries, or {""}
};

void check_spec(const RunSpec& spec) {
  if (spec.methods.empty()) throw InputError("no methods to run (--methods or a suite file's [run] methods)");
  if (spec.tasks.empty()) throw InputError("no tasks to run (--tasks or a suite file's [run] tasks)");
  if (spec.seeds.empty()) throw InputError("no seeds to run");
  if (spec.limit < 0) throw InputError("--limit must be >= 0");
  if (spec.threads < 0) throw InputError("--threads must be >= 0");
  parse_precision(spec.precision, "--precision");
  if (spec.shard_count < 1 || spec.shard_index < 0 || spec.shard_index >= spec.shard_count)
    throw InputError("--shard needs 0 <= I < N");
}

// The applicable cells of the matrix, method-major; pairs that do not apply, and train sizes
// a learning curve leaves out, are left out (and said so on stderr when `say_skips`).
std::vector<MatrixCell> matrix_cells(const RunSpec& spec, const std::vector<methods::MethodInfo>& methods,
                                     const tasks::Registry& registry, TaskFactsCache& facts, bool say_skips) {
  auto find_method = [&](const std::string& name) -> const methods::MethodInfo& {
    for (const auto& m : methods)
      if (m.name == name) return m;
    std::string known;
    for (const auto& m : methods) known += (known.empty() ? "" : ", ") + m.name;
    throw InputError("unknown method '" + name + "' (known: " + known + ")");
  };
  for (const auto& [method, given] : spec.options) resolve_options(find_method(method), given);
  std::set<std::string> unique;
  for (const auto& m : spec.methods)
    if (!unique.insert("m:" + m).second) throw InputError("method '" + m + "' is listed twice");
  for (const auto& t : spec.tasks) {
    if (!unique.insert("t:" + t).second) throw InputError("task '" + t + "' is listed twice");
    registry.spec(t);
  }
  std::vector<MatrixCell> cells;
  for (const auto& m : spec.methods) {
    const auto& info = find_method(m);
    const auto given = spec.options.count(m) ? spec.options.at(m) : std::map<std::string, std::string>{};
    const auto options = std::make_shared<const std::map<std::string, std::string>>(resolve_options(info, given));
    const auto grid = tune_grid_for(spec.tune, info);
    for (const auto& t : spec.tasks) {
      const auto task = registry.load(t);
      const bool supported = std::find(info.supports.begin(), info.supports.end(), task->output_type()) != info.supports.end();
      if (!supported || (info.applies && !info.applies(*task))) {
        if (say_skips) std::cerr << "tunebench run: skipping " << m << " on " << t << " (does not apply to this task)\n";
        continue;
      }
      const auto& examples = facts(t).examples;
      // A learning curve runs a method that learns from train at each size; a size the
      // (limited) train split does not exceed is left out when "all" is listed, since it
      // would repeat the "all" run.
      std::vector<std::string> sizes = {""};
      if (!spec.train_sizes.empty() && info.learns_from_train) {
        sizes.clear();
        const bool has_all = spec.train_sizes.back() == "all";
        const int64_t train_n = examples["train"].get<int64_t>();
        for (const auto& size : spec.train_sizes) {
          if (has_all && size != "all" && train_size_of(size) >= train_n) {
            if (say_skips)
              std::cerr << "tunebench run: skipping " << m << " on " << t << " at train size " << size
                        << " (its train split has " << train_n << " examples; the 'all' size covers it)\n";
            continue;
          }
          sizes.push_back(size);
        }
      }
      if (!grid.empty() && examples["dev"].get<int64_t>() == 0)
        throw InputError("--tune: task " + t + " has no dev examples to choose " + m + "'s options on");
      cells.push_back({&info, m, t, options, grid, std::move(sizes)});
    }
  }
  return cells;
}

// The shard of every run of the matrix (index order: cells, then train sizes, then seeds):
// cost-balanced (shard.h). A run at a train size is costed with its subset's size as its
// train split; a tuned run trains once per combination of its grid and once more.
std::vector<int64_t> shards_of(const RunSpec& spec, const std::vector<MatrixCell>& cells, TaskFactsCache& facts,
                               std::vector<int64_t>* costs_out = nullptr) {
  std::vector<int64_t> costs;
  for (const auto& c : cells) {
    const auto inputs = facts.cost_inputs(c.task);
    const auto runs = c.grid.empty() ? int64_t{1} : static_cast<int64_t>(grid_combinations(c.grid).size()) + 1;
    for (const auto& size : c.sizes) {
      auto n = inputs;
      n.train = train_subset_size(size, inputs.train);
      const int64_t cost = estimate_run_cost(*c.info, *c.options, n);
      // (capped like shard.cpp's per-run cost, so a matrix of many runs still sums)
      costs.insert(costs.end(), spec.seeds.size(), std::min(cost * std::min(runs, int64_t{1000000}), int64_t{1000000000000}));
    }
  }
  auto shards = assign_shards(costs, spec.shard_count);
  if (costs_out) *costs_out = std::move(costs);
  return shards;
}

}  // namespace

std::vector<ShardLoad> plan_shards(const RunSpec& spec, const std::vector<methods::MethodInfo>& methods) {
  check_spec(spec);
  const auto registry = tasks::Registry::standard(spec.task_files);
  TaskFactsCache facts(registry, spec.limit);
  const auto cells = matrix_cells(spec, methods, registry, facts, false);
  std::vector<int64_t> costs;
  const auto shards = shards_of(spec, cells, facts, &costs);
  std::vector<ShardLoad> loads(static_cast<std::size_t>(spec.shard_count));
  for (std::size_t i = 0; i < shards.size(); ++i) {
    auto& l = loads[static_cast<std::size_t>(shards[i])];
    ++l.runs;
    l.cost += costs[i];
  }
  return loads;
}

MatrixResult run_matrix(const RunSpec& spec, const std::vector<methods::MethodInfo>& methods) {
  check_spec(spec);
  if (spec.out.empty()) throw InputError("no output directory (--out)");
  const auto registry = tasks::Registry::standard(spec.task_files);
  TaskFactsCache facts_of(registry, spec.limit);
  const auto cells = matrix_cells(spec, methods, registry, facts_of, true);

  MatrixContext mc{spec, registry, resolve_model_dir(spec.model), "", spec.out, spec.out / "cache", json()};
  fs::create_directories(mc.cache_dir);
  // Shards share the output directory, maybe from other machines where a temp file's pid
  // means nothing: only an unsharded run removes the temp files of dead processes.
  if (spec.shard_count == 1) remove_stale_temp_files(spec.out);

  const auto shard = spec.shard_count > 1 ? shards_of(spec, cells, facts_of) : std::vector<int64_t>{};
  std::vector<RunPlan> plans;
  int64_t index = 0;
  for (const auto& c : cells) {
    for (const auto& size : c.sizes)
      for (const auto seed : spec.seeds) {
        const int64_t i = index++;
        if (spec.shard_count > 1 && shard[static_cast<std::size_t>(i)] != spec.shard_index) continue;
        RunPlan p;
        p.item = {i, c.method, c.task, seed, size};
        p.info = c.info;
        p.options = c.options;
        p.grid = c.grid;
        plans.push_back(std::move(p));
      }
  }

  MatrixResult result;
  result.planned = static_cast<int64_t>(plans.size());
  mc.model_sha = model_sha256(mc.model_dir, mc.cache_dir);
  if (spec.precheck) spec.precheck(mc.model_dir, mc.model_sha);
  std::vector<RunPlan> todo;
  std::map<std::tuple<std::string, std::string, std::string>, std::string> hashes;  // (method, task, size) -> config hash
  for (auto& p : plans) {
    auto& cached = hashes[{p.item.method, p.item.task, p.item.train_subset}];
    if (cached.empty()) {
      const auto& tf = facts_of(p.item.task);
      json config = {{"method", p.item.method}, {"options", *p.options}, {"task", p.item.task},
                     {"task_version", tf.version}, {"model_sha256", mc.model_sha}, {"limit", spec.limit}};
      // f32 runs keep the hash they had before precision became an option; runs outside a
      // learning curve and untuned runs keep theirs too.
      if (spec.precision != "f32") config["precision"] = spec.precision;
      if (!p.item.train_subset.empty()) config["train_subset"] = p.item.train_subset;
      if (!p.grid.empty()) config["tune"] = p.grid;
      cached = tb::sha256_hex(config.dump()).substr(0, 16);
    }
    p.config_hash = cached;
    const std::string& hash = p.config_hash;
    const fs::path file = spec.out / record_filename(p.item.method, p.item.task, p.item.seed, p.item.train_subset);
    if (fs::exists(file)) {
      if (!spec.resume && spec.mark_missing.empty())
        throw InputError(file.string() + " already exists (records are never overwritten: use --resume to skip "
                         "finished runs, or a fresh --out)");
      // A record that does not validate, or that another configuration made (other options,
      // task version, model or limit), is an error naming it: never overwritten, never mixed in.
      const auto existing = read_record(file);
      if (existing.config_hash != hash)
        throw InputError(file.string() + " was made with another configuration (config_hash " + existing.config_hash +
                         ", this run " + hash + ": options, tuning grid, task version, model or limit differ); use a fresh --out");
      // --mark-missing keeps every existing record, interrupted ones too: their message says
      // why they stopped (it marks only the runs without a record).
      const bool redo = spec.mark_missing.empty() &&
                        (existing.status == "interrupted" ||
                         (spec.retry_failed && (existing.status == "error" || existing.status == "oom")));
      if (!redo) {
        ++result.resumed;
        continue;
      }
      // The records --resume replaces: a run stopped by SIGTERM/SIGINT never finished, and
      // with --retry-failed a run that failed (a full disk, an OOM kill) is tried again.
      fs::remove(file);
    }
    todo.push_back(std::move(p));
  }
  plans.clear();
  plans.shrink_to_fit();
  auto make_run_info = [&](const RunPlan& p) {
    const auto& tf = facts_of(p.item.task);
    json ri = {{"tunebench_version", TB_VERSION},
               {"git_sha", TB_GIT_SHA},
               {"command_line", spec.command_line},
               {"method", p.item.method},
               {"options", *p.options},
               {"config_hash", p.config_hash},
               {"task", p.item.task},
               {"task_version", tf.version},
               {"primary_metric", tf.primary_metric},
               {"model_path", mc.model_dir.string()},
               {"model_sha256", mc.model_sha},
               {"seed", p.item.seed},
               {"threads", spec.threads},
               {"limit", spec.limit},
               {"precision", spec.precision},
               {"examples", tf.examples},
               {"matrix_index", p.item.index},
               {"start_time", ""}};
    if (!tf.documents_limit.is_null()) ri["documents_limit"] = tf.documents_limit;
    if (!p.item.train_subset.empty()) {
      const int64_t size = train_subset_size(p.item.train_subset, tf.examples["train"].get<int64_t>());
      ri["train_subset"] = p.item.train_subset;
      ri["train_size"] = size;
      ri["examples"]["train"] = size;
    }
    return ri;
  };

  if (!todo.empty()) mc.meta = meta_info(mc.cache_dir, spec.threads, spec.precision == "bf16");
  double done_seconds = 0.0;
  int64_t k = 0;
  const StopSignals stop_signals;
  for (auto& p : todo) {
    if (g_stop_signal) break;
    p.run_info = make_run_info(p);
    p.run_info["start_time"] = iso_time_now();
    p.run_info["threads"] = spec.threads > 0 ? spec.threads : mc.meta["threads"].get<int>();
    p.k = ++k;
    p.n = static_cast<int64_t>(todo.size());
    p.runs_done_seconds = done_seconds;
    const fs::path file = spec.out / record_filename(p.item.method, p.item.task, p.item.seed, p.item.train_subset);
    if (!spec.mark_missing.empty()) {
      // Nothing runs: the run's place in the results is a failed record --resume runs again.
      json record = {{"run_info", p.run_info},
                     {"train_info", empty_train_info("interrupted", spec.mark_missing)},
                     {"metrics", json::object()},
                     {"meta_info", mc.meta}};
      validate_record(record, file.string());
      write_file_atomic(file, record.dump(1) + "\n");
      ++result.marked;
      ++result.failed;
      continue;
    }
    const double t0 = now_seconds();
    bool single = false;
    // A tuned run first chooses its options on dev; stopped there, it is recorded as interrupted below.
    const bool tuned = p.grid.empty() || tune_run(mc, p);
    const int status = tuned && !g_stop_signal ? run_forked([&] { run_in_child(mc, p, single); }, single) : 0;
    done_seconds += now_seconds() - t0;
    ++result.executed;
    std::string record_status;
    try {
      record_status = read_record(file).status;
    } catch (const InputError&) {
      // The child died before its record was complete: record that, with what we know.
      const int stop = g_stop_signal;
      const bool oom = !stop && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
      record_status = stop ? "interrupted" : oom ? "oom" : "error";
      const std::string message =
          stop ? std::string("interrupted by ") + sigabbrev(stop) + " after " + format_duration(now_seconds() - t0) +
                     " (--resume runs it again)"
               : describe_exit(status);
      json record = {{"run_info", p.run_info},
                     {"train_info", empty_train_info(record_status, message)},
                     {"metrics", json::object()},
                     {"meta_info", mc.meta}};
      record["train_info"]["run_seconds"] = now_seconds() - t0;
      write_file_atomic(file, record.dump(1) + "\n");
      std::cerr << "[run " << p.k << "/" << p.n << "] " << p.item.method << " " << p.item.task
                << (p.item.train_subset.empty() ? "" : " n" + p.item.train_subset) << " seed" << p.item.seed << " | "
                << record_status << ": " << message << "\n";
    }
    if (record_status != "ok") ++result.failed;
    p.run_info = json();  // done: a long matrix keeps no run's record in memory
  }
  result.stop_signal = g_stop_signal;
  result.records = write_summaries(spec.out);
  return result;
}

std::vector<std::string> method_names(const std::vector<methods::MethodInfo>& methods) {
  std::vector<std::string> names;
  for (const auto& m : methods) names.push_back(m.name);
  return names;
}

}  // namespace tb::runner
