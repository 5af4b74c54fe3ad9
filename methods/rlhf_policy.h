// The language-model pieces RLHF is built from: prompt + continuation sequences, per-token
// log-probabilities of a continuation with their backward pass (the policy gradient of PPO
// and the DPO loss both start there), scalar heads on final hidden states (value head,
// reward head) and the Bradley–Terry reward model.
//
// Several roles share one set of frozen base weights wherever that is exact: a LoRA policy,
// its reference (the same model without the LoRA hooks) and a head-only or LoRA reward
// model all read the base model; only a fully trained role gets its own copy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/optimizer.h"
#include "methods/lora.h"
#include "methods/method.h"
#include "methods/rlhf_data.h"
#include "methods/trainer.h"

namespace tb::methods::rlhf {

// Prompt + continuation per row, right-padded to the longest row (B,T).
struct Sequences {
  int64_t B = 0, T = 0;
  int64_t Tc = 0;                   // longest continuation
  std::vector<int32_t> tokens;      // (B,T), 0 past each row's length
  std::vector<int32_t> prompt_len;  // (B), >= 1: the first continuation token is predicted
                                    // from the last prompt token
  std::vector<int32_t> length;      // (B) prompt + continuation
  int64_t cont_len(int64_t b) const { return length[b] - prompt_len[b]; }
  int64_t num_tokens() const;       // real tokens of every row
  int64_t num_cont_tokens() const;

  // Throws InputError when a row does not fit `max_positions` or a prompt or continuation
  // is empty.
  static Sequences make(const std::vector<const std::vector<int32_t>*>& prompts,
                        const std::vector<const std::vector<int32_t>*>& conts, int64_t max_positions);
};

// The chosen rows [0,B) then the rejected rows [B,2B) of pairs[first, first+B).
Sequences pair_sequences(const std::vector<PreferencePair>& pairs, size_t first, size_t count,
                         int64_t max_positions);

// The LM head weight (V,C): the model's own, or the token embedding when tied.
Param& lm_head_param(Model& model);

// A fresh model with the same config and a copy of `m`'s weights, all frozen.
std::unique_ptr<Model> copy_model(const Model& m);

// log π(y_t | y_<t) of every continuation token under a model and its hooks, laid out
// (B,Tc) by continuation index (0 past a row's end), plus the final hidden rows that predict
// them (B,Tc,C), which value heads read. A training forward keeps what backward() needs.
class TokenLogprobs {
 public:
  void forward(Model& model, Hooks* hooks, const Sequences& s, bool training);
  const std::vector<float>& logp() const { return logp_; }      // (B,Tc)
  const std::vector<float>& hidden() const { return hidden_; }  // (B,Tc,C)
  // Backward of Σ dlogp·logp + Σ dhidden·hidden (dhidden may be null) through the LM head
  // (its gradient accumulates when it is trainable) and the model with its hooks.
  void backward(Model& model, Hooks* hooks, const float* dlogp /*(B,Tc)*/,
                const float* dhidden /*(B,Tc,C) or null*/);
  // Summed log-probability of each row's continuation.
  std::vector<double> sums() const;

 private:
  const Sequences* s_ = nullptr;
  int64_t C_ = 0, V_ = 0;
  std::vector<float> hidden_, probs_, logp_;
};

// The Bradley–Terry objective on a batch of B pairs with rewards r = (chosen (B), rejected
// (B)): mean −log σ(r_c − r_r). Writes dr (2B) = ∂loss/∂r and returns the loss; `correct`
// counts pairs with r_c > r_r.
double bradley_terry(const float* r /*(2B)*/, int64_t B, float* dr /*(2B)*/, int64_t& correct);

// What the reward head reads: the last real token's final state (as TRL's sequence-
// classification reward models), the mean over the whole sequence, or the sum over the
// continuation's tokens — a linear head on that sum is a per-token reward summed over the
// response (a lexicon judge such as AFINN is a sum of per-word scores).
enum class RewardPool { last, mean, sum };

struct RewardConfig {
  std::string train = "head";  // head | lora | full: what the Bradley–Terry loss trains
  RewardPool pool = RewardPool::last;
  double lr = 1e-3;
  int64_t epochs = 4;
  int64_t batch = 16;
  double clip = 1.0;
  LoraConfig lora;
  uint64_t seed = 0;
};

// tokens, seconds, flops: the training steps' (and a frozen body's train features'); the
// per-epoch dev passes are not training.
struct RewardFitStats {
  std::vector<double> train_loss;    // per epoch
  std::vector<double> dev_accuracy;  // per epoch (NaN without dev pairs)
  int64_t best_epoch = -1;
  int64_t tokens = 0;
  double seconds = 0.0;
  double flops = 0.0;
  std::vector<UnitCost> units;  // the training steps'
};

// The base LM plus a scalar head on the final hidden state of the last real token (or, by
// option, the mean over the sequence's real tokens, or the sum over the continuation's).
class RewardModel {
 public:
  // `base` holds frozen weights: head and lora read it, full trains a copy of it.
  RewardModel(Model& base, const RewardConfig& cfg);
  // Bradley–Terry on `train`; keeps the epoch with the best `dev` pair accuracy (the last
  // when dev is empty). Progress goes to meter.progress when set.
  RewardFitStats fit(const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& dev,
                     Meter* meter = nullptr);
  std::vector<double> score(const Sequences& s);
  // Fraction of pairs the model orders as the judge did (r_chosen > r_rejected); `correct`
  // (when non-null) gets 1/0 per pair.
  double accuracy(const std::vector<PreferencePair>& pairs, std::vector<int>* correct = nullptr);

  int64_t trainable_params() const;
  int64_t own_weight_bytes() const;  // what it holds beyond the shared base
  int64_t grad_bytes() const;
  int64_t optimizer_bytes() const { return optimizer_bytes_; }
  int64_t activation_bytes() const { return activation_bytes_; }
  // Trainable tensors for the adaptation file.
  std::vector<const ParamStore*> stores() const;
  const std::string& train_mode() const { return cfg_.train; }
  // The model it runs: the shared base, or its own copy (full).
  const Model& model() const { return *model_; }

 private:
  std::vector<ParamStore*> trainable_stores();
  void pooled(const Sequences& s, bool training, std::vector<float>& out /*(B,C)*/);
  // Backward of pooled(): dhidden (batch, seq_len, C) over the final hidden states.
  void pooled_backward(const Sequences& s, const float* dpooled /*(B,C)*/, std::vector<float>& dhidden);
  // Pooled last-token states of a frozen body: every chosen row, then every rejected row (2N,C).
  std::vector<float> features(const std::vector<PreferencePair>& pairs);

  RewardConfig cfg_;
  Model* model_ = nullptr;
  std::unique_ptr<Model> own_;
  std::unique_ptr<LoraHooks> lora_;
  ClassifierHead head_;
  int64_t optimizer_bytes_ = 0;
  int64_t activation_bytes_ = 0;
};


}  // namespace tb::methods::rlhf
