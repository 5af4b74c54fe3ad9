// Saved activations follow what backward needs: the MLP's matmul inputs (the ln2 output and
// the SwiGLU/GELU output) are kept per layer only when an MLP weight trains (or a delta hook
// sits on that site); otherwise every layer shares one buffer. Flipping a weight to
// trainable between forward and backward is an error naming the weight, never a gradient
// computed from another layer's input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/model.h"
#include "harness/core/model_io.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDefault = fs::path(TB_SOURCE_DIR) / "models/default";

bool is_mlp_weight(const tb::Param& p) {
  return p.name.find("mlp.") != std::string::npos && p.shape.size() == 2;
}

TEST(Activations, MlpInputsAreSavedOnlyWhenAnMlpWeightTrains) {
  ASSERT_TRUE(fs::exists(kDefault / "model.safetensors")) << "models/default is missing";
  auto model = tb::load_model(kDefault);
  const auto& cfg = model->config();
  const int64_t B = 2, T = 24, N = B * T, C = cfg.hidden, F = cfg.intermediate, L = cfg.n_layer;
  std::vector<int32_t> x(N), y(N);
  for (int64_t i = 0; i < N; ++i) {
    x[i] = static_cast<int32_t>((i * 37 + 11) % cfg.vocab_size);
    y[i] = static_cast<int32_t>((i * 53 + 7) % cfg.vocab_size);
  }
  auto bytes_after_step = [&](bool mlp_trainable) {
    model->release_activations();
    model->params().set_all_trainable(false);
    model->params().set_trainable([](const tb::Param& p) { return p.name.find("self_attn.o_proj") != std::string::npos; }, true);
    if (mlp_trainable) model->params().set_trainable(is_mlp_weight, true);
    model->params().allocate_grads();
    model->forward(x.data(), B, T, nullptr, true);
    model->lm_loss(y.data());
    model->backward_lm();
    return model->activation_bytes();
  };
  const int64_t attention_only = bytes_after_step(false);
  const int64_t with_mlp = bytes_after_step(true);
  // Per layer: ln2 (N,C) and the SwiGLU output (N,F), 4 bytes each.
  EXPECT_EQ(with_mlp - attention_only, L * (N * C + N * F) * 4);

  // The same gradients either way for the weights both configurations train.
  bytes_after_step(false);
  const tb::Param& o = model->params().get("model.layers.2.self_attn.o_proj.weight");
  const std::vector<float> g_attention(o.grad, o.grad + o.numel());
  bytes_after_step(true);
  const tb::Param& o2 = model->params().get("model.layers.2.self_attn.o_proj.weight");
  for (int64_t i = 0; i < o2.numel(); i += 17) ASSERT_EQ(o2.grad[i], g_attention[i]) << i;
}

TEST(Activations, BackwardNeedingAnUnsavedInputIsAnErrorNamingTheWeight) {
  auto model = tb::load_model(kDefault);
  const int64_t B = 1, T = 8;
  std::vector<int32_t> x(T, 5), y(T, 6);
  model->params().set_all_trainable(false);
  model->params().set_trainable([](const tb::Param& p) { return p.name == "model.norm.weight"; }, true);
  model->params().allocate_grads();
  model->forward(x.data(), B, T, nullptr, true);
  model->lm_loss(y.data());
  // Made trainable after the forward: its input was not kept.
  model->params().set_trainable([](const tb::Param& p) { return p.name == "model.layers.5.mlp.down_proj.weight"; }, true);
  model->params().allocate_grads();
  try {
    model->backward_lm();
    FAIL() << "backward ran without the saved input";
  } catch (const tb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.5.mlp.down_proj.weight"), std::string::npos) << e.what();
  }
}

// After zero_grads() the model writes each weight gradient (beta = 0) instead of adding to
// zeros; a second backward without zero_grads() must still accumulate: exactly twice the
// gradient of one backward, for every trainable parameter (tied embedding included).
TEST(GradientWrites, FirstWriteOverwritesLaterWritesAccumulate) {
  auto model = tb::load_model(kDefault);
  const auto& cfg = model->config();
  const int64_t B = 2, T = 16, N = B * T;
  std::vector<int32_t> x(N), y(N);
  for (int64_t i = 0; i < N; ++i) {
    x[i] = static_cast<int32_t>((i * 29 + 3) % cfg.vocab_size);
    y[i] = static_cast<int32_t>((i * 31 + 5) % cfg.vocab_size);
  }
  model->params().set_all_trainable(true);
  model->params().allocate_grads();
  auto pass = [&] {
    model->forward(x.data(), B, T, nullptr, true);
    model->lm_loss(y.data());
    model->backward_lm();
  };
  // Garbage in the buffers first: zero_grads() must make the first write exact anyway.
  for (auto& p : model->params().params()) std::fill(p.grad, p.grad + p.numel(), 7.0f);
  model->params().zero_grads();
  pass();
  std::vector<std::vector<float>> once;
  for (const auto& p : model->params().params()) {
    EXPECT_FALSE(p.grad_fresh) << p.name << " was not written by backward";
    once.emplace_back(p.grad, p.grad + p.numel());
  }
  pass();
  size_t k = 0;
  for (const auto& p : model->params().params()) {
    const auto& g1 = once[k++];
    for (int64_t i = 0; i < p.numel(); i += 13)
      ASSERT_NEAR(p.grad[i], 2.0f * g1[i], 1e-5f * (1.0f + std::fabs(2.0f * g1[i]))) << p.name << "[" << i << "]";
  }
}

}  // namespace
