// Soft prompt tuning (Lester et al. 2021; Hugging Face PEFT PromptTuning): P trainable
// virtual-token embeddings are prepended to every input sequence; the base model stays
// frozen and the gradient flows through the whole body down to the input embeddings.
// The hook class is public so the tests can check it against finite differences.
#pragma once

#include <cstdint>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/params.h"

namespace tb::methods {

class SoftPromptHooks : public Hooks {
 public:
  // P virtual tokens of width C, zero until initialised; P == 0 is the plain model.
  SoftPromptHooks(int64_t P, int64_t C);

  // PEFT's SAMPLE_VOCAB: rows copied from the model's token embeddings of P ids drawn
  // without replacement (with replacement when P exceeds the vocabulary), seeded.
  void init_from_vocab(const Model& model, uint64_t seed);
  // PEFT's TEXT init: the embeddings of `ids`, repeated cyclically and truncated to P.
  // InputError when ids is empty or holds an id outside the model's vocabulary.
  void init_from_tokens(const Model& model, const std::vector<int32_t>& ids);

  ParamStore& store() { return store_; }
  const ParamStore& store() const { return store_; }
  int64_t tokens() const { return P_; }
  // The prompt rows (P,C); null when P == 0.
  float* prompt();

  int lowest_trainable_layer(int num_layers) const override;
  int64_t num_virtual_tokens() const override { return P_; }
  void virtual_tokens_forward(float* out /*(P,C)*/, int64_t C) override;
  // The prompt is shared by the batch, so its gradient is the sum over sequences.
  void virtual_tokens_backward(const float* dout /*(B,P,C)*/, int64_t B, int64_t C) override;

 private:
  int64_t P_, C_;
  ParamStore store_;
};

// The model's token-embedding table (V,C), whichever family's name it carries: the rows a
// prompt is initialised from.
const Param& token_embeddings(const Model& model);

}  // namespace tb::methods
