// Prefix tuning (Li & Liang 2021; Hugging Face PEFT PrefixTuning): P trainable key/value
// positions in every layer, attended to by every query without a mask and shared by the
// batch. Optionally reparameterised as in PEFT's prefix_projection: an embedding (P,C) →
// Linear(C,H) → tanh → Linear(H, L·2·NKV·hs), trained through the MLP, which is run once
// and dropped after training (merge()). Initialised at random as PEFT, or from the keys and
// values of real tokens as Li & Liang. The hook class is public for the tests.
#pragma once

#include <cstdint>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/params.h"

namespace tb::methods {

class PrefixHooks : public Hooks {
 public:
  // P prefix positions for a model of config `cfg`; P == 0 is the plain model. With
  // `reparam`, an MLP of hidden size `hidden` produces the prefix. Initialised as PEFT
  // (torch defaults): embeddings N(0,1), linears U(±1/sqrt(fan_in)); seeded.
  PrefixHooks(const ModelConfig& cfg, int64_t P, bool reparam, int64_t hidden, uint64_t seed);

  // Li & Liang's initialisation with real words: the prefix becomes the keys and values the
  // frozen model computes for `ids` (repeated cyclically and truncated to P) at positions
  // 0..P-1, so the prefixed model starts out as the model that has read those tokens.
  // With the MLP, its output layer is solved (ridge least squares, zero bias) so that the
  // MLP produces that prefix. InputError when ids is empty or outside the vocabulary.
  void init_from_tokens(Model& model, const std::vector<int32_t>& ids);

  ParamStore& store() { return store_; }
  const ParamStore& store() const { return store_; }
  int64_t tokens() const { return P_; }
  bool reparameterised() const { return reparam_; }
  // Values of the prefix tensors alone: L·2·P·NKV·hs.
  int64_t stored_params() const { return P_ * D_; }
  // Runs the MLP once and replaces the store's contents by the prefix it produces, a
  // trainable parameter "prefix" (P, L·2·NKV·hs) in PEFT's layout: row p holds, for each
  // layer l, its keys then its values, each (NKV,hs). A no-op without reparameterisation.
  // The store object stays the same, so pointers to it (the trainer's) remain valid.
  void merge();

  int lowest_trainable_layer(int num_layers) const override;
  int64_t prefix_length() const override { return P_; }
  // The model asks for layer 0 first in every forward (full or cached), so the MLP runs
  // there, once per forward, and the other layers read its output.
  void prefix_forward(int layer, float* pk /*(NKV,P,hs)*/, float* pv /*(NKV,P,hs)*/,
                      int64_t NKV, int64_t hs) override;
  // Gradients of the batch-shared prefix (already summed over the batch). With the MLP,
  // they are gathered until every layer has reported, then back-propagated through it.
  void prefix_backward(int layer, const float* dpk /*(NKV,P,hs)*/, const float* dpv /*(NKV,P,hs)*/,
                       int64_t NKV, int64_t hs) override;

 private:
  void run_mlp();
  void backward_mlp();
  void fit_mlp_output(const std::vector<float>& target /*(P,D)*/);
  void check_shape(int layer, int64_t NKV, int64_t hs) const;

  int64_t L_, NKV_, hs_, C_, P_, H_, D_;  // D_ = L·2·NKV·hs, the width of a prefix row
  bool reparam_;
  ParamStore store_;
  // With the MLP: its pre-activation (P,H), activation (P,H) and output (P,D) of the last
  // forward, and the gradient of the output gathered over the layers of one backward.
  std::vector<float> pre_, act_, out_, dout_;
  int layers_seen_ = 0;
};

}  // namespace tb::methods
