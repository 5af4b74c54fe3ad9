// The model's FLOP counter against closed-form counts written out here: forward (linear
// layers and attention's two products over the full T×T block), the LM head only when it
// runs, and a backward that goes only as deep as something trains, with weight-gradient
// GEMMs only for weights that train.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "harness/core/model.h"

namespace {

double mm(int64_t M, int64_t N, int64_t K) { return 2.0 * double(M) * double(N) * double(K); }

tb::ModelConfig tiny(tb::Family fam) {
  tb::ModelConfig c;
  c.family = fam;
  c.model_type = fam == tb::Family::gpt2 ? "gpt2" : "llama";
  c.vocab_size = 97;
  c.hidden = 32;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_kv_head = fam == tb::Family::gpt2 ? 4 : 2;
  c.head_dim = 8;
  c.intermediate = 48;
  c.max_positions = 32;
  c.qkv_bias = fam == tb::Family::gpt2;
  return c;
}

// Products of one layer's linear sublayers over N rows (each once: forward, or dx, or dW).
double layer_linear(const tb::ModelConfig& c, int64_t N) {
  const int64_t C = c.hidden, F = c.intermediate, q = c.n_head * c.head_dim, kv = c.n_kv_head * c.head_dim;
  if (c.family == tb::Family::gpt2) return mm(N, 3 * C, C) + mm(N, C, C) + mm(N, F, C) + mm(N, C, F);
  return mm(N, q, C) + 2 * mm(N, kv, C) + mm(N, C, q) + 3 * mm(N, F, C);
}

// Q·Kᵀ and A·V over B sequences of T tokens (the full block the batched kernel computes).
double layer_attention(const tb::ModelConfig& c, int64_t B, int64_t T) {
  return 2 * mm(B * c.n_head * T, T, c.head_dim);
}

std::vector<int32_t> tokens(int64_t n, int64_t V) {
  std::mt19937 g(7);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(g() % V);
  return t;
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * want) << what;
}

TEST(Flops, ForwardAndLmHeadMatchTheClosedForm) {
  for (auto fam : {tb::Family::llama, tb::Family::gpt2}) {
    const auto c = tiny(fam);
    tb::Model m(c);
    m.init_random(1);
    const int64_t B = 3, T = 7, N = B * T;
    const auto t = tokens(N, c.vocab_size);
    const std::string name = fam == tb::Family::gpt2 ? "gpt2" : "llama";
    const double body = double(c.n_layer) * (layer_linear(c, N) + layer_attention(c, B, T));
    double f0 = m.flop_count();
    m.forward(t.data(), B, T);
    expect_close(m.flop_count() - f0, body, name + " forward (no LM head)");
    expect_close(tb::Model::forward_flops(c, B, T), body, name + " forward_flops");
    f0 = m.flop_count();
    std::vector<float> logits(static_cast<size_t>(N * c.vocab_size));
    m.logits(logits.data());
    expect_close(m.flop_count() - f0, mm(N, c.vocab_size, c.hidden), name + " LM head");
  }
}

TEST(Flops, BackwardStopsWhereNothingTrainsAndSkipsFrozenWeightGradients) {
  const auto c = tiny(tb::Family::llama);
  const int64_t B = 2, T = 5, N = B * T;
  const auto t = tokens(N, c.vocab_size);
  const double lin = layer_linear(c, N), att = layer_attention(c, B, T);
  // Only the last block's norms train: backward runs through that block alone, with every
  // input-gradient GEMM and attention's four gradient products, but no weight gradients.
  {
    tb::Model m(c);
    m.init_random(2);
    m.params().set_trainable([](const tb::Param& p) { return p.name.find("layers.2.") != std::string::npos &&
                                                              p.name.find("norm") != std::string::npos; },
                             true);
    m.params().allocate_grads();
    m.forward(t.data(), B, T, nullptr, true);
    std::vector<float> dfinal(static_cast<size_t>(N * c.hidden), 0.01f);
    const double f0 = m.flop_count();
    m.backward(dfinal.data());
    expect_close(m.flop_count() - f0, lin + 2 * att, "norms of the last block");
  }
  // The last two blocks train entirely: two blocks of dx + dW and attention gradients.
  {
    tb::Model m(c);
    m.init_random(2);
    m.params().set_trainable([](const tb::Param& p) { return p.name.find("layers.1.") != std::string::npos ||
                                                              p.name.find("layers.2.") != std::string::npos; },
                             true);
    m.params().allocate_grads();
    m.forward(t.data(), B, T, nullptr, true);
    std::vector<float> dfinal(static_cast<size_t>(N * c.hidden), 0.01f);
    const double f0 = m.flop_count();
    m.backward(dfinal.data());
    expect_close(m.flop_count() - f0, 2 * (2 * lin + 2 * att), "last two blocks");
  }
  // Everything trains, LM loss: LM head forward, its dx and (tied wte) dW, all blocks.
  {
    tb::Model m(c);
    m.init_random(2);
    m.params().set_all_trainable(true);
    m.params().allocate_grads();
    const double f0 = m.flop_count();
    m.forward(t.data(), B, T, nullptr, true);
    std::vector<int32_t> targets(t.begin() + 1, t.end());
    targets.push_back(-100);
    m.lm_loss(targets.data());
    m.backward_lm();
    const double head = mm(N, c.vocab_size, c.hidden);
    const double want = double(c.n_layer) * (lin + att) + head + 2 * head + double(c.n_layer) * (2 * lin + 2 * att);
    expect_close(m.flop_count() - f0, want, "full LM step");
  }
}

}  // namespace
