// Tiny random models of both families for the method tests (T <= 16, C <= 48, so a full
// forward + backward takes milliseconds), a random token batch, the logits of one forward,
// and a gradient check of a method's hook parameters through the whole model. The Llama config uses GQA (NKV < NH) and untied embeddings so the tests cover
// the asymmetric q/k/v shapes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "harness/core/model.h"
#include "tests/core/test_ops_util.h"  // randn

namespace tb::test {

inline ModelConfig tiny_gpt2_config(int64_t layers = 2) {
  ModelConfig c;
  c.family = Family::gpt2;
  c.model_type = "gpt2";
  c.vocab_size = 64;
  c.hidden = 32;
  c.n_layer = layers;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.head_dim = 8;
  c.intermediate = 128;
  c.max_positions = 32;
  c.tied_embeddings = true;
  c.qkv_bias = true;
  return c;
}

inline ModelConfig tiny_llama_config(int64_t layers = 2) {
  ModelConfig c;
  c.family = Family::llama;
  c.model_type = "llama";
  c.vocab_size = 64;
  c.hidden = 48;
  c.n_layer = layers;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.head_dim = 12;
  c.intermediate = 96;
  c.max_positions = 32;
  c.tied_embeddings = false;
  return c;
}

inline std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(g);
  return t;
}

inline std::vector<float> logits_of(Model& m, const std::vector<int32_t>& tokens, int64_t B,
                                    int64_t T, Hooks* hooks = nullptr) {
  m.forward(tokens.data(), B, T, hooks, /*training=*/false);
  std::vector<float> out(static_cast<size_t>(B * m.seq_len() * m.config().vocab_size));
  m.logits(out.data());
  return out;
}

// Gradient check of every parameter in `store` (the hooks' own) through full float
// forwards: f = Σ r·final_hidden for a fixed random r, analytic gradients from
// Model::backward(r), numeric ones from central differences of f with step eps on up to
// `samples` entries per parameter. Returns the worst |numeric - analytic| relative to the
// largest analytic gradient checked. The hooks must be deterministic (no dropout).
inline double model_fd_error(Model& m, Hooks& hooks, ParamStore& store,
                             const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                             int64_t samples = 5, float eps = 1e-2f) {
  m.forward(tokens.data(), B, T, &hooks, /*training=*/true);
  const int64_t n = B * m.seq_len() * m.config().hidden;
  std::mt19937_64 g(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> r(static_cast<size_t>(n));
  for (auto& x : r) x = d(g);
  store.zero_grads();
  m.backward(r.data(), &hooks);
  auto f = [&] {
    m.forward(tokens.data(), B, T, &hooks, /*training=*/false);
    const float* h = m.final_hidden();
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(r[i]) * h[i];
    return s;
  };
  double diff = 0.0, scale = 0.0;
  for (auto& p : store.params()) {
    const int64_t step = std::max<int64_t>(1, p.numel() / samples);
    for (int64_t i = step / 2; i < p.numel(); i += step) {
      const float x0 = p.data[i];
      const float xp = x0 + eps, xm = x0 - eps;
      p.data[i] = xp;
      const double fp = f();
      p.data[i] = xm;
      const double fm = f();
      p.data[i] = x0;
      const double num = (fp - fm) / (static_cast<double>(xp) - xm);
      diff = std::max(diff, std::fabs(num - p.grad[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(p.grad[i])));
    }
  }
  return diff / std::max(scale, 1e-6);
}

}  // namespace tb::test
