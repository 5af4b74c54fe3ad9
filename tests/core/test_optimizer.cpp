// Tests of parameters and AdamW: hand-computed updates, decoupled decay, clipping, groups,
// frozen parameters (no gradient, no state, bit-identical), and the lr schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/dtype.h"
#include "harness/core/optimizer.h"

namespace {

TEST(Params, OneBlockViewsAndLookup) {
  tb::ParamStore s;
  s.declare("a", {2, 3}, true);
  s.declare("b", {4}, false);
  s.allocate();
  EXPECT_EQ(s.num_params(), 10);
  EXPECT_EQ(s.get("b").data, s.get("a").data + 6);
  EXPECT_EQ(s.find("c"), nullptr);
  EXPECT_THROW(s.get("c"), tb::ModelError);
  EXPECT_THROW(s.declare("late", {1}, true), tb::Error);
}

TEST(Params, FrozenParamsOwnNoGradient) {
  tb::ParamStore s;
  s.declare("w", {100, 100}, true);
  s.declare("head", {10}, false);
  s.allocate();
  s.set_trainable([](const tb::Param& p) { return p.name == "head"; }, true);
  s.allocate_grads();
  EXPECT_EQ(s.get("w").grad, nullptr);
  EXPECT_NE(s.get("head").grad, nullptr);
  EXPECT_EQ(s.num_trainable(), 10);
  EXPECT_EQ(s.grad_bytes(), 40);
}

TEST(AdamW, MatchesHandComputedSteps) {
  // w=1, g=0.5, lr=0.1, wd=0.1, betas (0.9, 0.999). Step 1: w = 1*(1-0.01) - 0.1*0.5/0.5
  // = 0.89. Step 2: w = 0.89*0.99 - 0.1 * 0.5/0.5 = 0.7811 (bias-corrected m̂ = 0.5,
  // sqrt(v̂) = 0.5 on both steps since g is constant).
  tb::ParamStore s;
  s.declare("w", {1}, true);
  s.allocate();
  s.set_all_trainable(true);
  s.allocate_grads();
  s.get("w").data[0] = 1.0f;
  tb::AdamWConfig cfg;
  cfg.lr = 0.1f;
  cfg.weight_decay = 0.1f;
  auto opt = tb::AdamW::for_stores({&s}, cfg);
  s.get("w").grad[0] = 0.5f;
  opt.step(cfg.lr);
  EXPECT_NEAR(s.get("w").data[0], 0.89f, 1e-6);
  opt.step(cfg.lr);
  EXPECT_NEAR(s.get("w").data[0], 0.7811f, 1e-6);
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, NoDecayGroupIsNotDecayed) {
  tb::ParamStore s;
  s.declare("bias", {1}, false);
  s.allocate();
  s.set_all_trainable(true);
  s.allocate_grads();
  s.get("bias").data[0] = 1.0f;
  tb::AdamWConfig cfg;
  cfg.lr = 0.1f;
  cfg.weight_decay = 0.5f;
  auto opt = tb::AdamW::for_stores({&s}, cfg);
  s.get("bias").grad[0] = -2.0f;
  opt.step(cfg.lr);
  EXPECT_NEAR(s.get("bias").data[0], 1.1f, 1e-6);  // no decay; Adam step of +lr
}

TEST(AdamW, GlobalNormClipping) {
  // g = (3, 4), |g| = 5, clip 1 -> g' = (0.6, 0.8) (times 5/(5+1e-6)). With eps = 1 the
  // first Adam step is lr*g'/(|g'|+1): w0 -= 0.1*0.6/1.6, w1 -= 0.1*0.8/1.8.
  tb::ParamStore s;
  s.declare("a", {1}, true);
  s.declare("b", {1}, true);
  s.allocate();
  s.set_all_trainable(true);
  s.allocate_grads();
  tb::AdamWConfig cfg;
  cfg.lr = 0.1f;
  cfg.eps = 1.0f;
  cfg.clip_norm = 1.0f;
  auto opt = tb::AdamW::for_stores({&s}, cfg);
  s.get("a").grad[0] = 3.0f;
  s.get("b").grad[0] = 4.0f;
  const float norm = opt.step(cfg.lr);
  EXPECT_NEAR(norm, 5.0f, 1e-6);
  EXPECT_NEAR(s.get("a").data[0], -0.1 * 0.6 / 1.6, 1e-6);
  EXPECT_NEAR(s.get("b").data[0], -0.1 * 0.8 / 1.8, 1e-6);
}

// Without clipping the update loop sums the gradient squares itself (fp32 blocks, double
// across blocks); the norm it returns equals an exact double-precision sum, over sizes that
// cross block and thread boundaries, and the bf16 copies it writes are the rounded values.
TEST(AdamW, FusedNormAndBf16CopiesMatchSeparatePasses) {
  for (int64_t n : {1, 7, 2048, 2049, 100003}) {
    tb::ParamStore s;
    s.declare("a", {n}, true);
    s.declare("b", {3, 5}, true);
    s.allocate();
    s.set_all_trainable(true);
    s.allocate_grads();
    s.enable_bf16([](const tb::Param& p) { return p.name == "a"; });
    double exact = 0.0;
    for (auto& p : s.params())
      for (int64_t i = 0; i < p.numel(); ++i) {
        p.data[i] = 0.01f * static_cast<float>(i % 13);
        p.grad[i] = std::sin(0.37 * static_cast<double>(i) + static_cast<double>(p.numel()));
        exact += double(p.grad[i]) * p.grad[i];
      }
    tb::AdamWConfig cfg;
    cfg.lr = 1e-2f;
    auto opt = tb::AdamW::for_stores({&s}, cfg);
    EXPECT_NEAR(opt.grad_norm(), std::sqrt(exact), 1e-5 * std::sqrt(exact)) << "n=" << n;
    const float norm = opt.step(cfg.lr);
    EXPECT_NEAR(norm, std::sqrt(exact), 1e-5 * std::sqrt(exact)) << "n=" << n;
    const tb::Param& a = s.get("a");
    EXPECT_EQ(a.bf16_version, a.version);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a.bf16[i], tb::f32_to_bf16(a.data[i])) << "n=" << n << " i=" << i;
    EXPECT_EQ(s.get("b").bf16, nullptr);
  }
}

TEST(AdamW, FrozenParamsBitIdenticalAndStatelessAfterSteps) {
  tb::ParamStore s;
  s.declare("frozen", {64}, true);
  s.declare("train", {8}, true);
  s.allocate();
  for (int i = 0; i < 64; ++i) s.get("frozen").data[i] = 0.01f * i - 0.3f;
  std::vector<float> before(s.get("frozen").data, s.get("frozen").data + 64);
  s.set_trainable([](const tb::Param& p) { return p.name == "train"; }, true);
  s.allocate_grads();
  tb::AdamWConfig cfg;
  cfg.weight_decay = 0.1f;
  auto opt = tb::AdamW::for_stores({&s}, cfg);
  EXPECT_EQ(opt.state_bytes(), 8 * 2 * 4);
  for (int step = 0; step < 5; ++step) {
    for (int i = 0; i < 8; ++i) s.get("train").grad[i] = 0.1f * (i + step);
    opt.step(cfg.lr);
  }
  EXPECT_EQ(std::memcmp(before.data(), s.get("frozen").data, 64 * sizeof(float)), 0);
  EXPECT_NE(s.get("train").data[3], 0.0f);
}

// Restoring a snapshot after optimizer steps (best-epoch selection) must also restore what
// the bf16 matmuls read: AdamW marks each bf16 copy current after its step, so a restore
// that only wrote `data` would leave the copies at the last step's values.
TEST(Params, RestoreRefreshesBf16Copies) {
  tb::ParamStore s;
  s.declare("w", {4, 33}, true);
  s.declare("bias", {33}, false);
  s.declare("frozen", {5}, true);
  s.allocate();
  for (auto& p : s.params())
    for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = 0.1f * static_cast<float>(i % 17) - 0.7f;
  s.set_trainable([](const tb::Param& p) { return p.name != "frozen"; }, true);
  s.allocate_grads();
  s.enable_bf16([](const tb::Param& p) { return p.shape.size() == 2; });
  const tb::ParamSnapshot snap = s.snapshot_trainable();
  ASSERT_EQ(snap.index.size(), 2u);
  const std::vector<float> w0(s.get("w").data, s.get("w").data + s.get("w").numel());
  const std::vector<float> b0(s.get("bias").data, s.get("bias").data + 33);
  tb::AdamWConfig cfg;
  cfg.lr = 0.05f;
  auto opt = tb::AdamW::for_stores({&s}, cfg);
  for (int step = 0; step < 3; ++step) {
    for (auto& p : s.params())
      if (p.grad)
        for (int64_t i = 0; i < p.numel(); ++i) p.grad[i] = std::cos(0.3 * static_cast<double>(i + step));
    opt.step(cfg.lr);
  }
  const tb::Param& w = s.get("w");
  ASSERT_NE(w.data[0], w0[0]);
  s.restore(snap);
  for (int64_t i = 0; i < w.numel(); ++i) ASSERT_EQ(w.data[i], w0[static_cast<size_t>(i)]) << i;
  for (int64_t i = 0; i < 33; ++i) ASSERT_EQ(s.get("bias").data[i], b0[static_cast<size_t>(i)]) << i;
  const std::uint16_t* copy = w.bf16_data();
  for (int64_t i = 0; i < w.numel(); ++i) ASSERT_EQ(copy[i], tb::f32_to_bf16(w0[static_cast<size_t>(i)])) << i;
  // A snapshot of another shape is an error, not a silent partial copy.
  tb::ParamSnapshot bad = snap;
  bad.values[0].pop_back();
  EXPECT_THROW(s.restore(bad), tb::Error);
}

TEST(AdamW, RejectsFrozenParamInGroup) {
  tb::ParamStore s;
  s.declare("w", {2}, true);
  s.allocate();
  s.allocate_grads();
  EXPECT_THROW(tb::AdamW({{{&s.get("w")}, 1.0f, 0.0f}}, tb::AdamWConfig{}), tb::Error);
}

TEST(Schedule, WarmupThenCosineOrLinear) {
  using tb::Schedule;
  EXPECT_FLOAT_EQ(tb::schedule_lr(Schedule::cosine, 1.0f, 0, 10, 110), 0.1f);
  EXPECT_FLOAT_EQ(tb::schedule_lr(Schedule::cosine, 1.0f, 9, 10, 110), 1.0f);
  EXPECT_FLOAT_EQ(tb::schedule_lr(Schedule::cosine, 1.0f, 10, 10, 110), 1.0f);
  EXPECT_NEAR(tb::schedule_lr(Schedule::cosine, 1.0f, 60, 10, 110), 0.5f, 1e-6);
  EXPECT_NEAR(tb::schedule_lr(Schedule::cosine, 1.0f, 110, 10, 110, 0.1f), 0.1f, 1e-6);
  EXPECT_NEAR(tb::schedule_lr(Schedule::linear, 2.0f, 35, 10, 60), 1.0f, 1e-6);
  EXPECT_FLOAT_EQ(tb::schedule_lr(Schedule::constant, 3.0f, 500, 0, 10), 3.0f);
}

}  // namespace
