// The classification trainer of every method that trains through hooks or base weights
// (head, full, lora, adapter, softprompt, prefix): batching of right-padded sequences and
// evaluation on dev every epoch, on the one training loop (harness/core/train_loop.h: AdamW
// with warm-up + cosine or linear decay, gradient clipping, best-on-dev selection with the
// best epoch's trainable weights restored, early stopping, divergence detection — a
// non-finite loss sets the meter's status to "diverged" — and per-step timing into the
// meter's train phase).
//
// Two objectives for classification and multiple-choice tasks:
//  - head (default): a new linear classifier on the pooled final hidden state;
//  - lm: each label's verbaliser (or each choice) is scored by its log-likelihood after the
//    rendered prompt, trained with cross-entropy over the candidates' summed log-probs.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/optimizer.h"
#include "harness/core/params.h"
#include "harness/core/train_loop.h"
#include "methods/method.h"

namespace tb::methods {

// Defaults differ per method (a LoRA wants a larger lr than full finetuning).
struct TrainDefaults {
  double lr = 1e-3;
  int64_t epochs = 4;
  int64_t batch = 16;
  double weight_decay = 0.0;
  std::string objective = "head";
};

// The common options, namespaced under each training method (--lora.lr, --full.epochs...):
// lr, epochs, batch, warmup (fraction of steps), schedule (cosine|linear|constant),
// weight-decay, clip, max-length, patience, objective (head|lm), pool (last|mean).
std::vector<OptionSpec> training_option_specs(const TrainDefaults& d);

struct TrainConfig {
  double lr = 1e-3;
  int64_t epochs = 4;
  int64_t batch = 16;
  double warmup = 0.06;
  Schedule schedule = Schedule::cosine;
  double weight_decay = 0.0;
  double clip = 1.0;
  int64_t max_length = 128;
  int64_t patience = 2;
  std::string objective = "head";  // head | lm
  Pool pool = Pool::last;
  static TrainConfig from(const Options& o);
};

// A linear classifier on a pooled hidden state: logits (B,K) = pooled (B,C) · Wᵀ + b.
class ClassifierHead {
 public:
  ClassifierHead(int64_t C, int64_t K, uint64_t seed);
  ParamStore& store() { return store_; }
  const ParamStore& store() const { return store_; }
  void forward(float* logits /*(B,K)*/, const float* pooled /*(B,C)*/, int64_t B) const;
  // Accumulates dW, db; dpooled may be null.
  void backward(float* dpooled /*(B,C) or null*/, const float* dlogits /*(B,K)*/,
                const float* pooled /*(B,C)*/, int64_t B);
  int64_t C() const { return C_; }
  int64_t K() const { return K_; }

 private:
  int64_t C_, K_;
  ParamStore store_;
};

// What a method trains besides an optional head: its hooks and its own parameter stores,
// plus whichever base-model parameters it flagged trainable (Model::params()).
struct Adaptation {
  Hooks* hooks = nullptr;
  std::vector<ParamStore*> stores;
};

// Tokens, seconds and model FLOPs of a set of forward passes (the trainer's dev passes).
struct PassCost {
  int64_t tokens = 0;
  double seconds = 0.0;
  double flops = 0.0;
  nlohmann::json to_json() const { return {{"tokens", tokens}, {"seconds", seconds}, {"flops", flops}}; }
};

class ClassificationTrainer {
 public:
  ClassificationTrainer(RunContext& ctx, const TrainConfig& cfg, Adaptation adaptation);
  ~ClassificationTrainer();

  // Trains on ctx.train, selects on ctx.dev, fills ctx.meter (loss curve, steps, tokens,
  // times, memory breakdown, details.best_epoch). train_seconds / train_flops cover the
  // training steps only; the dev passes are details.dev_eval {tokens, seconds, flops}.
  void fit();
  std::vector<Prediction> predict(const std::vector<tasks::Example>& examples);

  // Hooks used by predict() (e.g. none after LoRA is merged into the base weights).
  void set_hooks(Hooks* hooks) { adaptation_.hooks = hooks; }
  // Trainable parameters of the head (0 with the lm objective).
  int64_t head_params() const;
  const ClassifierHead* head() const { return head_.get(); }
  // The head to load saved weights into (null with the lm objective).
  ClassifierHead* mutable_head() { return head_.get(); }
  // Accuracy of `examples` under the current weights (used for dev selection); its cost is
  // added to dev_cost() (not to the meter's eval figures, which are the test predictions').
  double accuracy(const std::vector<tasks::Example>& examples);
  const Phase& dev_cost() const { return dev_cost_; }

 private:
  double train_epoch(int64_t epoch, TrainLoop& loop);
  // Scores of every example; its cost goes into `cost`, one unit per batch.
  std::vector<std::vector<double>> class_scores(const std::vector<tasks::Example>& examples, Phase& cost);
  std::vector<ParamStore*> all_stores();

  RunContext& ctx_;
  TrainConfig cfg_;
  Adaptation adaptation_;
  std::unique_ptr<ClassifierHead> head_;
  int64_t num_classes_ = 0;
  Phase dev_cost_;
};

// Count of trainable values across stores (trainable flags set).
int64_t count_trainable(const std::vector<const ParamStore*>& stores);

// Saves every trainable parameter of the stores (and the model's trainable base params when
// include_base) as one safetensors file dir/adaptation.safetensors; returns its size.
int64_t save_trainable(const std::filesystem::path& dir, const std::vector<const ParamStore*>& stores);

// The number of virtual positions (soft prompt, prefix) a model can take: 1..context-1, or
// an InputError naming `flag`.
void check_virtual_positions(int64_t P, const ModelConfig& mc, const std::string& flag);

// A parameter-efficient method: hooks H owning the trainable store, trained (with the
// optional head) by ClassificationTrainer. Subclasses build hooks_ in prepare() and call
// train(); prediction, parameter counts, the saved adaptation and the LM hooks for the
// forgetting measure are the same for all of them.
template <class H>
class HookedMethod : public Method {
 public:
  std::vector<Prediction> predict(RunContext&, const std::vector<tasks::Example>& examples) override {
    return trainer_->predict(examples);
  }
  int64_t trainable_params() const override { return count_trainable({&hooks_->store()}) + trainer_->head_params(); }
  // The hooks' tensors and the head, as one safetensors file.
  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    std::vector<const ParamStore*> stores = {&hooks_->store()};
    if (trainer_->head()) stores.push_back(&trainer_->head()->store());
    return save_trainable(dir, stores);
  }
  // The base weights are untouched; the adapted model is the base with the hooks.
  Hooks* lm_hooks() override { return hooks_.get(); }

 protected:
  void train(RunContext& ctx, const TrainConfig& cfg) {
    config_ = ctx.model.config();
    trainer_ = std::make_unique<ClassificationTrainer>(ctx, cfg, Adaptation{hooks_.get(), {&hooks_->store()}});
    trainer_->fit();
  }
  std::unique_ptr<H> hooks_;
  std::unique_ptr<ClassificationTrainer> trainer_;
  ModelConfig config_;  // of the model trained on (PEFT export names its modules)
};

}  // namespace tb::methods
