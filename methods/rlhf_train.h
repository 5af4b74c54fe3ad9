// The two ways RLHF turns preferences into a policy.
//
// PPO (Ziegler et al. 2019; Stiennon et al. 2020; as Hugging Face TRL's PPO trainer runs
// it): sample continuations from the policy, score each with a reward function (the learned
// reward model in a real run), subtract a per-token KL penalty to the frozen reference
// (log-ratio estimator, coefficient adaptive towards a KL target or fixed), estimate
// advantages with GAE from a value head on the policy's final hidden states (the value loss
// trains the head alone; its gradient stops at the hidden states), and take several epochs
// of minibatch steps on the clipped policy and value objectives. Training stops
// after the configured number of rollout batches or once the rollouts' KL to the reference
// exceeds a budget.
//
// DPO (Rafailov et al. 2023): −log σ(β·[(log π − log π_ref)(chosen) − (… )(rejected)]) on
// the preference pairs, with the reference's log-probabilities computed once up front (the
// policy before its first update is the reference, so no second model is kept).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "methods/method.h"
#include "methods/rlhf_data.h"
#include "methods/rlhf_policy.h"
#include "methods/trainer.h"

namespace tb::methods::rlhf {

// ---- PPO -------------------------------------------------------------------------------

struct PpoConfig {
  int64_t iterations = 8;      // rollout batches
  int64_t rollout_batch = 32;  // prompts per rollout batch
  int64_t minibatch = 8;       // rollouts per gradient step
  int64_t epochs = 4;          // passes over each rollout batch
  int64_t max_new_tokens = 16;
  double lr = 1e-3;
  double clip = 1.0;           // global gradient-norm clip
  double kl_coef = 0.1;        // initial β of the KL penalty
  double kl_target = 6.0;      // adaptive controller's target KL per sequence; 0 = fixed β
  double kl_horizon = 10000;   // adaptive controller's horizon (in rollouts)
  double kl_budget = 0.0;      // stop once a rollout batch's mean KL exceeds it; 0 = off
  double gamma = 1.0;
  double lam = 0.95;
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
  bool whiten_rewards = true;  // whiten the per-token rewards of a batch (no mean shift)
  uint64_t seed = 0;
  void validate() const;       // InputError naming rlhf.<option>
};

// Ziegler et al.'s proportional controller (TRL's AdaptiveKLController).
struct KlController {
  double value;
  double target;   // 0: fixed coefficient
  double horizon;
  void update(double current_kl, int64_t n_steps);
};

struct PpoIteration {
  int64_t iteration = 0;
  double score = 0.0;      // mean reward-function score of the rollouts
  double kl = 0.0;         // mean per-sequence Σ (log π − log π_ref) of the rollouts
  double kl_coef = 0.0;    // β used for this batch
  double pg_loss = 0.0, vf_loss = 0.0;
  double clipfrac = 0.0;   // fraction of tokens whose ratio was clipped
  double approx_kl = 0.0;  // mean ½(log π_new − log π_old)² of the update steps
  int64_t rollout_tokens = 0, update_tokens = 0;
  double rollout_seconds = 0.0, update_seconds = 0.0;
};

// One scalar per row of the sequences (prompt + continuation).
using RewardFn = std::function<std::vector<double>(const Sequences&)>;

class PpoTrainer {
 public:
  // policy: model + hooks whose trainable parameters are `policy_stores` (a LoRA store, or
  // the model's own params for a full policy). reference: the frozen model (+ hooks, null
  // for none); it may be the policy's model object itself (a LoRA policy's reference is its
  // base model without the LoRA hooks).
  PpoTrainer(Model& policy, Hooks* policy_hooks, std::vector<ParamStore*> policy_stores, Model& reference,
             Hooks* reference_hooks, const PpoConfig& cfg, int32_t stop_token);

  // Runs the configured rollout batches over `prompts` (cycled in a seeded shuffle).
  // `on_iteration` sees each batch's statistics (progress lines, loss curves).
  std::vector<PpoIteration> train(const std::vector<std::vector<int32_t>>& prompts, const RewardFn& reward,
                                  const std::function<void(const PpoIteration&)>& on_iteration = {});

  const ClassifierHead& value_head() const { return value_; }
  ClassifierHead& value_head() { return value_; }
  double kl_coef() const { return kl_.value; }
  const std::string& stop_reason() const { return stop_reason_; }
  bool diverged() const { return diverged_; }
  // The cost of every optimizer step so far (the training loop's units).
  const std::vector<UnitCost>& step_units() const { return step_units_; }
  int64_t optimizer_bytes() const { return optimizer_bytes_; }
  int64_t activation_bytes() const { return activation_bytes_; }
  int64_t kv_cache_bytes() const { return kv_cache_bytes_; }
  double update_flops() const { return update_flops_; }
  double rollout_flops() const { return rollout_flops_; }

 private:
  struct Rollout;
  Sequences batch_of(const std::vector<Rollout>& rs, const std::vector<size_t>& idx) const;

  Model& policy_;
  Hooks* policy_hooks_;
  std::vector<ParamStore*> policy_stores_;
  Model& reference_;
  Hooks* reference_hooks_;
  PpoConfig cfg_;
  int32_t stop_;
  ClassifierHead value_;
  KlController kl_;
  std::string stop_reason_;
  bool diverged_ = false;
  int64_t optimizer_bytes_ = 0, activation_bytes_ = 0, kv_cache_bytes_ = 0;
  double update_flops_ = 0.0, rollout_flops_ = 0.0;
  std::vector<UnitCost> step_units_;
};

// Sampled continuations of the model (+ hooks) at temperature 1 for prompts; the KV cache
// bytes of the largest decode batch go to `kv_bytes` when non-null.
std::vector<std::vector<int32_t>> sample_continuations(Model& model, Hooks* hooks,
                                                       const std::vector<std::vector<int32_t>>& prompts,
                                                       int64_t max_new_tokens, uint64_t seed, int32_t stop,
                                                       int64_t* kv_bytes = nullptr);

// Per-sequence Σ log π(y) of continuations under model + hooks, in batches.
std::vector<double> sequence_logprobs(Model& model, Hooks* hooks, const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<std::vector<int32_t>>& conts, int64_t batch);

// ---- DPO -------------------------------------------------------------------------------

struct DpoConfig {
  double beta = 0.1;
  double lr = 1e-3;
  int64_t epochs = 2;
  int64_t batch = 8;  // pairs per step
  double clip = 1.0;
  uint64_t seed = 0;
  void validate() const;
};

struct DpoStats {
  double loss = 0.0;
  double margin = 0.0;    // mean implicit reward margin β·[Δ log-ratio(chosen) − Δ(rejected)]
  double accuracy = 0.0;  // fraction of pairs with a positive margin
};

struct DpoStep {
  int64_t step = 0;
  DpoStats train;  // on the step's batch, before its update
};

class DpoTrainer {
 public:
  DpoTrainer(Model& policy, Hooks* policy_hooks, std::vector<ParamStore*> policy_stores, const DpoConfig& cfg);
  // Records the reference log-probabilities of these pairs (call before training: the
  // policy is then still the reference). Pairs are identified by their position in the
  // vector given to train()/evaluate(), one set per name.
  void set_reference(const std::string& name, const std::vector<PreferencePair>& pairs);
  // Trains on the pairs registered under `name`; `on_epoch` sees the epoch index.
  std::vector<DpoStep> train(const std::string& name, const std::vector<PreferencePair>& pairs,
                             const std::function<void(int64_t epoch, const DpoStep& last)>& on_epoch = {});
  // Statistics of the current policy on registered pairs; `correct` (when non-null) gets
  // 1/0 per pair for a positive/non-positive implicit reward margin.
  DpoStats evaluate(const std::string& name, const std::vector<PreferencePair>& pairs,
                    std::vector<int>* correct = nullptr);
  int64_t optimizer_bytes() const { return optimizer_bytes_; }
  int64_t activation_bytes() const { return activation_bytes_; }
  int64_t tokens() const { return tokens_; }
  double flops() const { return flops_; }
  bool diverged() const { return diverged_; }
  // The cost of every optimizer step so far (the training loop's units).
  const std::vector<UnitCost>& step_units() const { return step_units_; }

 private:
  struct RefLogps {
    std::vector<double> chosen, rejected;
  };
  const RefLogps& ref(const std::string& name, size_t n) const;

  Model& policy_;
  Hooks* hooks_;
  std::vector<ParamStore*> stores_;
  DpoConfig cfg_;
  std::map<std::string, RefLogps> refs_;
  int64_t optimizer_bytes_ = 0, activation_bytes_ = 0, tokens_ = 0;
  std::vector<UnitCost> step_units_;
  double flops_ = 0.0;
  bool diverged_ = false;
};

}  // namespace tb::methods::rlhf
