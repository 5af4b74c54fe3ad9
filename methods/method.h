// The method interface: every way of using or adapting a pretrained model is one class
// behind this interface, in one file of methods/, registered by name with its options.
// The runner gives a method a RunContext (model, tokenizer, task, seed, options, meter),
// calls prepare() (train, build an index, or select a prompt on train + dev), then predict()
// on the test split, and turns predictions into metrics and a record.
//
// Methods reach the core only through Hooks (harness/core/hooks.h) and the model's public
// API; the one training loop is harness/core/train_loop.h, the classification trainer on it
// methods/trainer.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/tokenizer.h"
#include "harness/core/train_loop.h"
#include "tasks/metrics.h"
#include "tasks/task.h"

namespace tb::methods {

// ---- options ---------------------------------------------------------------------------

struct OptionSpec {
  std::string name;           // without the method prefix: "rank" for --lora.rank
  std::string default_value;  // as text; "" means "no default"
  std::string help;
};

// A method's options, already checked against its OptionSpecs (unknown names are rejected
// by the runner with an InputError naming --<method>.<name> or the suite file's key).
class Options {
 public:
  Options() = default;
  Options(std::string method, std::map<std::string, std::string> values)
      : method_(std::move(method)), values_(std::move(values)) {}
  // Typed getters; a value that does not parse is an InputError naming --<method>.<name>.
  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;  // true/false/1/0/yes/no
  std::vector<int64_t> int_list(const std::string& name) const;  // "0,1,4,8"
  std::vector<std::string> str_list(const std::string& name) const;
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  const std::map<std::string, std::string>& values() const { return values_; }
  const std::string& method() const { return method_; }

 private:
  const std::string& raw(const std::string& name) const;
  std::string method_;
  std::map<std::string, std::string> values_;
};

// ---- what a run measures ---------------------------------------------------------------

// One named part of a run's work (train, dev_eval, test_eval, index_build, generation, ...):
// its real tokens, seconds and model FLOPs (Model::flop_count via FlopScope or the training
// loop), and the same per unit of work (a training step, an evaluation batch) for the
// spread of its speed. The units of a phase are its repeated work (steps, batches); the
// totals may hold more (rlhf's train phase also counts pair sampling and rollouts).
struct Phase {
  int64_t tokens = 0;
  double seconds = 0.0;
  double flops = 0.0;
  std::vector<UnitCost> units;
  // Adds one unit and its figures to the totals.
  void add_unit(const UnitCost& u) {
    units.push_back(u);
    tokens += u.tokens;
    seconds += u.seconds;
    flops += u.flops;
  }
};

// Filled by methods (and by the shared trainer); the runner adds wall times and RSS.
// Phase "train": the training steps only (tokens the steps consumed, their seconds, their
// model FLOPs); dev evaluation ("dev_eval") and other preparation are not training.
// "test_eval": what the reported test predictions cost (the runner takes the difference
// across predict()); extra passes a method runs besides them go into details under their own
// names.
struct Meter {
  std::map<std::string, Phase> phases;
  Phase& phase(const std::string& name) { return phases[name]; }
  // An absent phase reads as empty.
  const Phase& phase(const std::string& name) const {
    static const Phase empty;
    const auto it = phases.find(name);
    return it == phases.end() ? empty : it->second;
  }
  int64_t steps = 0;
  int64_t epochs = 0;
  std::vector<LossPoint> loss_curve;
  // Analytic memory breakdown in bytes: weights, gradients, optimizer_state, activations,
  // kv_cache, index (the keys of a record's train_info.memory).
  std::map<std::string, int64_t> memory;
  // The training work was not done in this run but read from a cache (feature cache):
  // the train phase then stays 0 and cached_cost holds the cost measured when the cache was made
  // ({"train_tokens", "train_seconds", "train_flops"}).
  bool cache_hit = false;
  nlohmann::json cached_cost;
  // Method-specific facts for the record (chosen template, truncation counts, index size,
  // selected epoch, ...).
  nlohmann::json details = nlohmann::json::object();
  // Metrics only the method can compute from what it ran (kl, win_rate, mean_reward of a
  // policy); the runner adds them to the record's metrics next to those of the predictions.
  std::vector<tasks::MetricValue> metrics;
  std::string status = "ok";  // ok | diverged (set from the training loop on a non-finite loss)
  std::string status_message;
  // Progress reporting: the runner installs a callback that prints its progress line.
  std::function<void(const std::string& phase, int64_t step, int64_t total, double loss)> progress;
};

// Adds the matmul FLOPs `model` executes during this object's lifetime (Model::flop_count)
// to `sink`: the one way a method meters FLOPs.
class FlopScope {
 public:
  FlopScope(const Model& model, double& sink) : model_(model), sink_(sink), start_(model.flop_count()) {}
  ~FlopScope() { sink_ += model_.flop_count() - start_; }
  FlopScope(const FlopScope&) = delete;
  FlopScope& operator=(const FlopScope&) = delete;

 private:
  const Model& model_;
  double& sink_;
  double start_;
};

// Meters a training loop as it runs: each step becomes a unit of phase "train" (so the
// runner's progress line sees live figures) and the loop's progress is reported under
// `label`. The meter must outlive the loop's use.
void meter_training(Meter& meter, TrainLoop& loop, const std::string& label);
// After training: the loop's step count, its loss curve (appended) and a divergence status.
void record_training(Meter& meter, const TrainLoop& loop);

struct RunContext {
  Model& model;                       // the loaded base model; methods may change it
  const Tokenizer& tokenizer;
  const tasks::Task& task;
  uint64_t seed = 0;
  Options options;
  Meter& meter;
  int64_t limit = 0;                  // cap on examples per split (smoke runs); 0 = all
  std::filesystem::path cache_dir;    // for feature caches, index databases
  std::string model_hash;             // sha256 of the model weights (cache keys)
  // Splits after --limit; train may be empty for tasks without one.
  const std::vector<tasks::Example>& train;
  const std::vector<tasks::Example>& dev;
};

// One prediction per test example. classify / multiple_choice: `label`; retrieval: the
// ranked document ids; generate: `text`; `scores` holds per-class scores when available.
struct Prediction {
  int label = -1;
  std::vector<double> scores;
  std::vector<std::string> ranking;
  std::string text;
};

// ---- the interface ---------------------------------------------------------------------

class Method {
 public:
  virtual ~Method() = default;
  // Train / index / select on ctx.train and ctx.dev. Throws on error; records divergence
  // in ctx.meter.status.
  virtual void prepare(RunContext& ctx) = 0;
  virtual std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) = 0;
  // Exact count of parameters this method trained (0 for icl/prompt/index).
  virtual int64_t trainable_params() const = 0;
  // Writes what the method must store to reproduce its predictions (the trainable delta,
  // as safetensors); returns the bytes written (0 when there is nothing to store).
  virtual int64_t save_adaptation(const std::filesystem::path& dir) const = 0;
  // Writes what the method learned as a Hugging Face PEFT adapter directory (methods/saved.h:
  // adapter_config.json, adapter_model.safetensors and, with a classification head,
  // tunebench_head.safetensors); false when the method has no PEFT form (then its
  // save_adaptation file is what --save-adaptations keeps).
  virtual bool export_peft(const std::filesystem::path& dir) const { return false; }
  // Hooks to apply when measuring forgetting on heldout-lm (the adapted model's LM loss);
  // nullptr with changes_base() false means the base behaviour is untouched.
  virtual Hooks* lm_hooks() { return nullptr; }
  virtual bool changes_base() const { return false; }
};

struct MethodInfo {
  std::string name;
  std::string summary;
  std::vector<OptionSpec> options;
  std::function<std::unique_ptr<Method>()> make;
  // Output types of tasks this method runs on (others are recorded as skipped).
  std::vector<tasks::OutputType> supports;
  // Finer applicability within `supports` (lexicon: negative/positive sentiment tasks only);
  // empty = every task of a supported output type. The runner skips pairs that do not
  // apply instead of recording them as failed.
  std::function<bool(const tasks::Task&)> applies;
  // The method learns from the labelled train split (trains parameters on it, or draws
  // demonstrations from it), so a learning curve (`tunebench run --train-sizes`) runs it at
  // every size; the others run once on the whole split.
  bool learns_from_train = false;
};

// Every method, in the order of the README's method table (reference rows last). Each methods/<name>.cpp defines a
// `MethodInfo <name>_method_info()` and the registry lists them.
const std::vector<MethodInfo>& registry();
const MethodInfo& find(const std::string& name);  // InputError listing the known names

}  // namespace tb::methods
