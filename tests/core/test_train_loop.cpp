// Tests of the one training loop (harness/core/train_loop.h): the schedule it steps with,
// clipping (AdamW's, step for step), the divergence status, patience and the best snapshot
// (restored through ParamStore::restore, so bf16 copies follow), per-step units and the
// test-only injected step delay.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/train_loop.h"
#include "tests/methods/tiny_models.h"

namespace {

// One trainable vector w of n values; the loss of a step is 0.5·|w − target|² (grad w − target).
struct Quadratic {
  tb::ParamStore store;
  std::vector<float> target;
  explicit Quadratic(int64_t n, float scale = 1.0f) {
    store.declare("w", {n}, true);
    store.allocate();
    store.set_all_trainable(true);
    store.allocate_grads();
    for (int64_t i = 0; i < n; ++i) target.push_back(scale * static_cast<float>(i + 1));
  }
  tb::Param& w() { return store.get("w"); }
  tb::StepResult step() {
    auto& p = w();
    double loss = 0.0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      const float d = p.data[i] - target[i];
      p.grad[i] += d;
      loss += 0.5 * d * d;
    }
    return {loss, 7};
  }
};

TEST(TrainLoop, StepsWithTheScheduleAndMatchesAdamWStepForStep) {
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 0.1f;
  cfg.adamw.weight_decay = 0.01f;
  cfg.adamw.clip_norm = 1.0f;  // the gradients (|w − target| up to 80) are clipped every step
  cfg.schedule = tb::Schedule::cosine;
  cfg.warmup_steps = 3;
  cfg.total_steps = 12;
  cfg.min_lr_ratio = 0.1f;
  Quadratic a(8, 10.0f), b(8, 10.0f);
  tb::TrainLoop loop({&a.store}, cfg);
  auto ref = tb::AdamW::for_stores({&b.store}, cfg.adamw);
  for (int64_t s = 0; s < cfg.total_steps; ++s) {
    ASSERT_TRUE(loop.step([&] { return a.step(); }));
    const float lr = tb::schedule_lr(cfg.schedule, cfg.adamw.lr, s, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio);
    EXPECT_EQ(loop.last_lr(), lr) << s;
    EXPECT_EQ(loop.lr_at(s), lr) << s;
    b.store.zero_grads();
    b.step();
    const float norm = ref.step(lr);
    EXPECT_EQ(loop.last_grad_norm(), norm) << s;
    EXPECT_GT(norm, 1.0f) << s;  // clipping was active
    for (int64_t i = 0; i < 8; ++i) ASSERT_EQ(a.w().data[i], b.w().data[i]) << s << " " << i;
  }
  EXPECT_EQ(loop.steps(), cfg.total_steps);
  EXPECT_EQ(loop.optimizer().steps(), cfg.total_steps);
  ASSERT_EQ(loop.loss_curve().size(), static_cast<size_t>(cfg.total_steps));
  EXPECT_EQ(loop.loss_curve().front().step, 1);
  EXPECT_EQ(loop.loss_curve().back().step, cfg.total_steps);
  EXPECT_EQ(loop.status(), "ok");
  // Warm-up rises linearly, then the cosine decays to min_ratio × lr.
  EXPECT_FLOAT_EQ(loop.lr_at(0), 0.1f / 3);
  EXPECT_FLOAT_EQ(loop.lr_at(2), 0.1f);
  EXPECT_NEAR(loop.lr_at(12), 0.01f, 1e-7);
}

TEST(TrainLoop, ClippingBoundsTheUpdateNotTheReportedNorm) {
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 0.5f;
  cfg.adamw.clip_norm = 0.5f;
  Quadratic q(3, 100.0f), r(3, 100.0f);
  tb::TrainLoop loop({&q.store}, cfg);
  ASSERT_TRUE(loop.step([&] { return q.step(); }));
  // The norm before clipping is |target| (w starts at 0).
  const double expected = std::sqrt(100.0 * 100.0 * (1 + 4 + 9));
  EXPECT_NEAR(loop.last_grad_norm(), expected, 1e-3 * expected);
  // Explicit groups: a group's lr_scale applies on top of the schedule (Adam's first step
  // moves each value by lr × scale).
  tb::TrainLoop grouped({&r.store}, {tb::ParamGroup{{&r.w()}, 0.5f, 0.0f}}, cfg);
  ASSERT_TRUE(grouped.step([&] { return r.step(); }));
  EXPECT_NEAR(grouped.last_grad_norm(), expected, 1e-3 * expected);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(q.w().data[i], 0.5f, 1e-5) << i;
    EXPECT_NEAR(r.w().data[i], 0.25f, 1e-5) << i;
  }
}

TEST(TrainLoop, NonFiniteLossStopsWithDivergedAndNoUpdate) {
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 0.1f;
  cfg.what = "tester";
  Quadratic q(4);
  tb::TrainLoop loop({&q.store}, cfg);
  std::vector<int> progress;
  loop.progress = [&](int64_t step, int64_t, double) { progress.push_back(static_cast<int>(step)); };
  for (int s = 0; s < 2; ++s) ASSERT_TRUE(loop.step([&] { return q.step(); }));
  const std::vector<float> before(q.w().data, q.w().data + 4);
  const bool ok = loop.step([&] {
    q.step();
    return tb::StepResult{std::numeric_limits<double>::quiet_NaN(), 3};
  });
  EXPECT_FALSE(ok);
  EXPECT_TRUE(loop.diverged());
  EXPECT_EQ(loop.status(), "diverged");
  EXPECT_EQ(loop.message(), "tester: non-finite training loss at step 2");
  EXPECT_EQ(loop.steps(), 2);
  EXPECT_EQ(loop.optimizer().steps(), 2);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.w().data[i], before[i]) << i;
  EXPECT_EQ(progress, (std::vector<int>{1, 2}));
  EXPECT_EQ(loop.loss_curve().size(), 2u);
  // The diverged step's cost is still a unit of the run.
  ASSERT_EQ(loop.units().size(), 3u);
  EXPECT_EQ(loop.units().back().tokens, 3);
  EXPECT_EQ(loop.total().tokens, 7 + 7 + 3);
  EXPECT_THROW(loop.step([&] { return q.step(); }), tb::Error);
}

// A NaN in a gradient with a finite loss: with clipping the norm is known before the update,
// so nothing is written; without, the update is made and the loop still stops. Either way the
// run is "diverged" with a message naming the gradient.
TEST(TrainLoop, NonFiniteGradientStopsWithDiverged) {
  for (const float clip : {1.0f, 0.0f}) {
    SCOPED_TRACE(clip);
    tb::TrainLoopConfig cfg;
    cfg.adamw.lr = 0.1f;
    cfg.adamw.clip_norm = clip;
    cfg.what = "tester";
    Quadratic q(4);
    tb::TrainLoop loop({&q.store}, cfg);
    for (int s = 0; s < 2; ++s) ASSERT_TRUE(loop.step([&] { return q.step(); }));
    const std::vector<float> before(q.w().data, q.w().data + 4);
    const bool ok = loop.step([&] {
      auto r = q.step();
      q.w().grad[3] = std::numeric_limits<float>::infinity();
      return r;
    });
    EXPECT_FALSE(ok);
    EXPECT_TRUE(loop.diverged());
    EXPECT_EQ(loop.message(), "tester: non-finite gradient at step 2");
    EXPECT_EQ(loop.steps(), 2);
    EXPECT_FALSE(std::isfinite(loop.last_grad_norm()));
    if (clip > 0) {
      EXPECT_EQ(loop.optimizer().steps(), 2);
      for (int i = 0; i < 4; ++i) EXPECT_EQ(q.w().data[i], before[i]) << i;
    }
    EXPECT_EQ(loop.units().size(), 3u);
    EXPECT_THROW(loop.step([&] { return q.step(); }), tb::Error);
  }
}

// The injected fault: TB_FAULT_NAN_GRAD_STEP=N poisons the gradient of step N (0-based).
TEST(TrainLoop, InjectedNanGradientFaultDivergesAtItsStep) {
  ASSERT_EQ(::setenv("TB_FAULT_NAN_GRAD_STEP", "1", 1), 0);
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 0.1f;
  cfg.adamw.clip_norm = 1.0f;
  Quadratic q(3);
  tb::TrainLoop loop({&q.store}, cfg);
  ASSERT_EQ(::unsetenv("TB_FAULT_NAN_GRAD_STEP"), 0);
  EXPECT_TRUE(loop.step([&] { return q.step(); }));
  EXPECT_FALSE(loop.step([&] { return q.step(); }));
  EXPECT_EQ(loop.message(), "non-finite gradient at step 1");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isfinite(q.w().data[i])) << i;
  // Unset: no fault; malformed: a clear error.
  tb::TrainLoop clean({&q.store}, cfg);
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(clean.step([&] { return q.step(); }));
  ASSERT_EQ(::setenv("TB_FAULT_NAN_GRAD_STEP", "-2", 1), 0);
  EXPECT_THROW(tb::TrainLoop({&q.store}, cfg), tb::InputError);
  ASSERT_EQ(::unsetenv("TB_FAULT_NAN_GRAD_STEP"), 0);
}

TEST(TrainLoop, PatienceAndBestSnapshotRestore) {
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 0.1f;
  cfg.patience = 2;
  Quadratic q(4);
  tb::TrainLoop loop({&q.store}, cfg);
  const std::vector<double> metrics = {0.5, 0.9, 0.7, 0.6};
  const std::vector<bool> stop = {false, false, false, true};
  std::vector<std::vector<float>> after;
  for (size_t e = 0; e < metrics.size(); ++e) {
    ASSERT_TRUE(loop.step([&] { return q.step(); }));
    after.emplace_back(q.w().data, q.w().data + 4);
    EXPECT_EQ(loop.evaluate(metrics[e]), stop[e]) << e;
    EXPECT_EQ(loop.loss_curve().back().dev_metric, metrics[e]);
  }
  EXPECT_EQ(loop.best_evaluation(), 1);
  EXPECT_EQ(loop.best_metric(), 0.9);
  EXPECT_EQ(loop.evaluations(), 4);
  loop.restore_best();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.w().data[i], after[1][i]) << i;
  // A stand-in score (no dev set) selects without marking the curve.
  tb::TrainLoop plain({&q.store}, cfg);
  ASSERT_TRUE(plain.step([&] { return q.step(); }));
  plain.evaluate(0.0, /*on_curve=*/false);
  EXPECT_TRUE(std::isnan(plain.loss_curve().back().dev_metric));
}

TEST(TrainLoop, UnitsAndFlopsOfEveryStep) {
  const auto cfg_m = tb::test::tiny_llama_config();
  tb::Model model(cfg_m);
  model.init_random(3);
  model.params().set_all_trainable(true);
  model.params().allocate_grads();
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 1e-3f;
  tb::TrainLoop loop({&model.params()}, cfg, &model);
  const auto toks = tb::test::random_tokens(2 * 8, cfg_m.vocab_size, 5);
  std::vector<int32_t> targets(toks.begin() + 1, toks.end());
  targets.push_back(0);
  for (int s = 0; s < 3; ++s) {
    const double f0 = model.flop_count();
    ASSERT_TRUE(loop.step([&] {
      model.forward(toks.data(), 2, 8, nullptr, true);
      const float loss = model.lm_loss(targets.data());
      model.backward_lm();
      return tb::StepResult{loss, 16};
    }));
    EXPECT_DOUBLE_EQ(loop.units().back().flops, model.flop_count() - f0);
    EXPECT_GT(loop.units().back().flops, 0.0);
    EXPECT_GT(loop.units().back().seconds, 0.0);
  }
  EXPECT_EQ(loop.total().tokens, 48);
}

TEST(TrainLoop, InjectedStepDelaySleepsInsideEveryTimedStep) {
  ASSERT_EQ(::setenv("TB_TEST_STEP_DELAY_MS", "30", 1), 0);
  EXPECT_EQ(tb::TrainLoop::injected_step_delay_ms(), 30);
  tb::TrainLoopConfig cfg;
  Quadratic q(2);
  tb::TrainLoop loop({&q.store}, cfg);
  std::vector<tb::UnitCost> seen;
  loop.on_unit = [&](const tb::UnitCost& u) { seen.push_back(u); };
  for (int s = 0; s < 2; ++s) ASSERT_TRUE(loop.step([&] { return q.step(); }));
  ASSERT_EQ(::setenv("TB_TEST_STEP_DELAY_MS", "soon", 1), 0);
  EXPECT_THROW(tb::TrainLoop::injected_step_delay_ms(), tb::InputError);
  ASSERT_EQ(::unsetenv("TB_TEST_STEP_DELAY_MS"), 0);
  EXPECT_EQ(tb::TrainLoop::injected_step_delay_ms(), 0);
  ASSERT_EQ(seen.size(), 2u);
  for (const auto& u : loop.units()) EXPECT_GE(u.seconds, 0.030);
}

// After training past the best evaluation, restore_best() must leave a bf16 model that
// predicts exactly what a fresh model loaded with the best weights predicts: the restore
// goes through ParamStore::restore, which re-makes the bf16 copies AdamW marked current.
TEST(TrainLoop, Bf16BestRestoreMatchesAFreshModelWithTheBestWeights) {
  if (!tb::dnn::info().bf16_supported)
    GTEST_SKIP() << "CPU has no native bf16 (AVX512-BF16/AMX): bf16 matmuls cannot run here";
  const auto cfg_m = tb::test::tiny_llama_config();
  tb::Model model(cfg_m);
  model.init_random(11);
  model.set_precision(tb::Precision::bf16);
  model.params().set_all_trainable(true);
  model.params().allocate_grads();
  tb::TrainLoopConfig cfg;
  cfg.adamw.lr = 1e-2f;
  tb::TrainLoop loop({&model.params()}, cfg, &model);
  const auto toks = tb::test::random_tokens(2 * 8, cfg_m.vocab_size, 5);
  std::vector<int32_t> targets(toks.begin() + 1, toks.end());
  targets.push_back(0);
  auto step = [&] {
    model.forward(toks.data(), 2, 8, nullptr, true);
    const float loss = model.lm_loss(targets.data());
    model.backward_lm();
    return tb::StepResult{loss, 16};
  };
  std::vector<std::vector<float>> best;
  const std::vector<double> metrics = {0.2, 0.8, 0.5, 0.4};  // best after the second epoch
  for (size_t e = 0; e < metrics.size(); ++e) {
    for (int s = 0; s < 2; ++s) ASSERT_TRUE(loop.step(step));
    if (e == 1)
      for (const auto& p : model.params().params()) best.emplace_back(p.data, p.data + p.numel());
    loop.evaluate(metrics[e]);
  }
  loop.restore_best();
  const auto restored = tb::test::logits_of(model, toks, 2, 8);

  tb::Model fresh(cfg_m);
  fresh.init_random(99);
  auto& dst = fresh.params().params();
  ASSERT_EQ(dst.size(), best.size());
  for (size_t i = 0; i < dst.size(); ++i) std::copy(best[i].begin(), best[i].end(), dst[i].data);
  fresh.params().touch_all();
  fresh.set_precision(tb::Precision::bf16);
  const auto expected = tb::test::logits_of(fresh, toks, 2, 8);
  ASSERT_EQ(restored.size(), expected.size());
  for (size_t i = 0; i < restored.size(); ++i) ASSERT_EQ(restored[i], expected[i]) << i;
}

}  // namespace
