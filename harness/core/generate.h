// Inference on top of the model: sampling (greedy, temperature, top-k, top-p, fixed seed,
// stop tokens, max new tokens) with a KV cache, and scoring (per-token log-probabilities
// of a continuation given a context), the two ways methods query a language model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"

namespace tb {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  float temperature = 1.0f;   // 0 = greedy
  int64_t top_k = 0;          // 0 = off
  float top_p = 1.0f;         // 1 = off (nucleus sampling otherwise)
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;  // generation of a sequence ends after emitting one
};

struct Generation {
  std::vector<int32_t> tokens;    // the new tokens (stop token included when emitted)
  std::vector<float> logprobs;    // log p(token) under the model at temperature 1
  std::string stop_reason;        // "stop_token" | "max_new_tokens" | "context"
};

// Picks the next token from logits (V) by the options' rule; `rng_state` advances.
int32_t sample_token(const float* logits, int64_t V, const GenerateOptions& opt, uint64_t& rng_state);

// Generates a continuation for each prompt. Prompts of equal length decode together as
// one batch; results are in prompt order and deterministic in opt.seed.
std::vector<Generation> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const GenerateOptions& opt, Hooks* hooks = nullptr);

struct ScoreRequest {
  std::vector<int32_t> context;       // may be empty only if the model has a BOS to lean on:
                                      // the first continuation token is then unscored
  std::vector<int32_t> continuation;  // non-empty
};

struct Score {
  std::vector<float> token_logprobs;  // one per continuation token
  double sum = 0.0;
  bool greedy = true;                 // every continuation token is the argmax
};

// Log-probabilities of each continuation given its context, in batches of `batch_size`.
// Sequences longer than the context window keep their rightmost tokens (left truncation)
// and report it through `truncated` (count of truncated requests) when non-null.
std::vector<Score> score(Model& model, const std::vector<ScoreRequest>& requests,
                         Hooks* hooks = nullptr, int64_t batch_size = 16,
                         int64_t* truncated = nullptr);

}  // namespace tb
