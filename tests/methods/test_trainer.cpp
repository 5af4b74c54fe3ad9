// End-to-end tests of the shared trainer through the feature, head and full methods on a
// separable task: each learns it, the same seed reproduces bit-identical predictions, the
// frozen body stays bit-identical for head, and trainable counts are exact.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "methods/lm_scoring.h"
#include "methods/trainer.h"
#include "tests/methods/method_fixture.h"

namespace {

using tb::methods::find;

double test_accuracy(const std::vector<tb::methods::Prediction>& p, const std::vector<tb::tasks::Example>& ex) {
  int ok = 0;
  for (size_t i = 0; i < ex.size(); ++i) ok += p[i].label == ex[i].label;
  return double(ok) / double(ex.size());
}

struct Run {
  double acc;
  std::vector<std::vector<double>> scores;
  int64_t trainable;
};

Run run_method(const std::string& name, tb::Family fam, std::map<std::string, std::string> opts, uint64_t seed = 0) {
  tb::testing::MethodFixture f(fam);
  const auto& info = find(name);
  auto ctx = f.context(info, opts, seed);
  auto m = info.make();
  m->prepare(ctx);
  auto pred = m->predict(ctx, f.test);
  Run r{test_accuracy(pred, f.test), {}, m->trainable_params()};
  for (auto& p : pred) r.scores.push_back(p.scores);
  EXPECT_EQ(f.meter.status, "ok");
  return r;
}

TEST(Trainer, HeadLearnsSeparableTaskAndIsDeterministic) {
  for (auto fam : {tb::Family::llama, tb::Family::gpt2}) {
    auto a = run_method("head", fam, {{"epochs", "8"}, {"lr", "0.01"}});
    EXPECT_GE(a.acc, 0.8) << (fam == tb::Family::gpt2 ? "gpt2" : "llama");
    EXPECT_EQ(a.trainable, 2 * 32 + 2);
    auto b = run_method("head", fam, {{"epochs", "8"}, {"lr", "0.01"}});
    EXPECT_EQ(a.scores, b.scores);
  }
}

TEST(Trainer, HeadKeepsTheBodyBitIdenticalAndUnfreezeCountsBlocks) {
  tb::testing::MethodFixture f(tb::Family::llama);
  std::vector<float> before(f.model->params().params()[1].data,
                            f.model->params().params()[1].data + f.model->params().params()[1].numel());
  const auto& info = find("head");
  auto ctx = f.context(info, {{"epochs", "2"}});
  auto m = info.make();
  m->prepare(ctx);
  EXPECT_EQ(std::memcmp(before.data(), f.model->params().params()[1].data, before.size() * 4), 0);
  for (const auto& p : f.model->params().params()) EXPECT_EQ(p.grad, nullptr) << p.name;
  EXPECT_EQ(f.model->lowest_backward_layer(nullptr), 2);

  tb::testing::MethodFixture g(tb::Family::llama);
  auto ctx2 = g.context(info, {{"epochs", "1"}, {"unfreeze-last", "1"}});
  auto m2 = info.make();
  m2->prepare(ctx2);
  // Last block of the tiny Llama: 2 norms (C) + q (C·C) + k, v (C·16) + o (C·C) + MLP 3·C·64, + final norm C.
  const int64_t C = 32, block = 2 * C + C * C + 2 * C * 16 + C * C + 3 * C * 64;
  EXPECT_EQ(m2->trainable_params(), block + C + 2 * C + 2);
  EXPECT_EQ(g.model->lowest_backward_layer(nullptr), 1);
}

TEST(Trainer, FullFinetuningLearnsAndCountsEveryParameter) {
  auto r = run_method("full", tb::Family::gpt2, {{"epochs", "6"}, {"lr", "0.003"}});
  EXPECT_GE(r.acc, 0.8);
  tb::testing::MethodFixture f(tb::Family::gpt2);
  EXPECT_EQ(r.trainable, f.model->params().num_params() + 2 * 32 + 2);
}

TEST(Trainer, LmObjectiveScoresVerbalisers) {
  auto r = run_method("full", tb::Family::llama, {{"epochs", "6"}, {"lr", "0.003"}, {"objective", "lm"}});
  EXPECT_GE(r.acc, 0.8);
  EXPECT_EQ(r.scores[0].size(), 2u);
}

// Best-epoch selection under bf16: after fit() restores the best epoch, the trainer must
// predict exactly what a fresh model holding those weights predicts. AdamW keeps the bf16
// matmul copies current after every step, so a restore that only rewrote the fp32 values
// predicted with the last epoch's matmul weights and the best epoch's norms and biases.
TEST(Trainer, Bf16BestEpochRestoreMatchesAFreshModelWithTheBestWeights) {
  if (!tb::dnn::info().bf16_supported)
    GTEST_SKIP() << "CPU has no native bf16 (AVX512-BF16/AMX): bf16 training cannot run here";
  tb::testing::MethodFixture f(tb::Family::llama);
  f.model->set_precision(tb::Precision::bf16);
  const auto& info = find("full");
  // lm objective: the predictions depend on the model's weights alone (no separate head).
  auto ctx = f.context(info, {{"epochs", "6"}, {"lr", "0.003"}, {"objective", "lm"}, {"patience", "2"}});
  const auto cfg = tb::methods::TrainConfig::from(ctx.options);
  f.model->params().set_all_trainable(true);
  f.model->params().allocate_grads();
  tb::methods::ClassificationTrainer trained(ctx, cfg, tb::methods::Adaptation{});
  trained.fit();
  ASSERT_EQ(f.meter.status, "ok");
  const int64_t best = f.meter.details["best_epoch"].get<int64_t>();
  // The case under test: training went on past the best epoch, which is then restored.
  ASSERT_LT(best, f.meter.epochs - 1) << "best epoch " << best << " of " << f.meter.epochs;
  const auto restored = trained.predict(f.test);

  // A fresh model of the same shape, loaded with the restored (best) fp32 weights.
  tb::testing::MethodFixture g(tb::Family::llama);
  auto& src = f.model->params().params();
  auto& dst = g.model->params().params();
  ASSERT_EQ(src.size(), dst.size());
  for (size_t i = 0; i < src.size(); ++i) std::copy(src[i].data, src[i].data + src[i].numel(), dst[i].data);
  g.model->params().touch_all();
  g.model->set_precision(tb::Precision::bf16);
  auto ctx2 = g.context(info, {{"objective", "lm"}});
  tb::methods::ClassificationTrainer fresh(ctx2, cfg, tb::methods::Adaptation{});
  const auto expected = fresh.predict(g.test);
  ASSERT_EQ(restored.size(), expected.size());
  for (size_t i = 0; i < restored.size(); ++i) {
    EXPECT_EQ(restored[i].label, expected[i].label) << i;
    EXPECT_EQ(restored[i].scores, expected[i].scores) << i;
  }
}

TEST(Trainer, FeatureMethodLearnsAndCachesFeatures) {
  tb::testing::MethodFixture f(tb::Family::llama);
  const auto& info = find("feature");
  auto ctx = f.context(info, {{"pool", "last"}});
  auto m = info.make();
  m->prepare(ctx);
  EXPECT_GE(test_accuracy(m->predict(ctx, f.test), f.test), 0.8);
  EXPECT_EQ(m->trainable_params(), 2 * 32 + 2);
  EXPECT_EQ(f.meter.details["cache_hit_train"], false);
  tb::methods::Meter meter2;
  tb::methods::RunContext ctx2{*f.model, *f.tok, *f.task, 0, ctx.options, meter2, 0, f.dir / "cache", "test-model", f.train, f.dev};
  auto m2 = info.make();
  m2->prepare(ctx2);
  EXPECT_EQ(meter2.details["cache_hit_train"], true);
  // A cache hit is recorded as one, with the cost measured when the cache was made; it
  // never passes off a near-zero extraction time as a measurement.
  EXPECT_FALSE(f.meter.cache_hit);
  EXPECT_GT(f.meter.phase("train").tokens, 0);
  EXPECT_GT(f.meter.phase("train").flops, 0.0);
  EXPECT_TRUE(meter2.cache_hit);
  EXPECT_EQ(meter2.phase("train").tokens, 0);
  EXPECT_EQ(meter2.phase("train").flops, 0.0);
  ASSERT_TRUE(meter2.cached_cost.contains("train"));
  EXPECT_EQ(meter2.cached_cost["train"]["tokens"].get<int64_t>(), f.meter.phase("train").tokens);
  EXPECT_DOUBLE_EQ(meter2.cached_cost["train"]["flops"].get<double>(), f.meter.phase("train").flops);
  EXPECT_GT(meter2.cached_cost["train"]["seconds"].get<double>(), 0.0);
}

namespace {

// Tokens the head objective runs for a text: encode (as text), capped, at least one.
int64_t head_tokens(const tb::Tokenizer& tok, const std::string& text, int64_t max_len) {
  const auto n = static_cast<int64_t>(tok.encode(text, tb::SpecialTokens::as_text).size());
  return std::min<int64_t>(std::max<int64_t>(n, 1), max_len);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// The trainer's figures, against counts made here: train tokens = the train split's real
// tokens × epochs; training seconds and FLOPs are the steps' (the dev passes are
// details.dev_eval, and the two add up to the model's own count over prepare()); the eval
// figures are the test predictions' alone — for a frozen body, one forward per batch.
TEST(Trainer, MeterCountsTheTrainingStepsAndTheTestPredictionsAlone) {
  for (const char* name : {"head", "full"}) {
    tb::testing::MethodFixture f(tb::Family::llama);
    const auto& info = find(name);
    auto ctx = f.context(info, {{"epochs", "3"}, {"patience", "9"}, {"batch", "16"}});
    auto m = info.make();
    const double f0 = f.model->flop_count();
    const auto t0 = std::chrono::steady_clock::now();
    m->prepare(ctx);
    const double prepare_s = seconds_since(t0);
    const double f1 = f.model->flop_count();
    ASSERT_EQ(f.meter.status, "ok") << name;
    ASSERT_EQ(f.meter.epochs, 3) << name;
    int64_t real = 0;
    for (const auto& ex : f.train) real += head_tokens(*f.tok, ex.text, 128);
    EXPECT_EQ(f.meter.phase("train").tokens, 3 * real) << name;
    const auto& dev = f.meter.details["dev_eval"];
    int64_t dev_real = 0;
    for (const auto& ex : f.dev) dev_real += head_tokens(*f.tok, ex.text, 128);
    EXPECT_EQ(dev["tokens"].get<int64_t>(), 3 * dev_real) << name;
    EXPECT_GT(f.meter.phase("train").flops, 0.0) << name;
    EXPECT_NEAR(f.meter.phase("train").flops + dev["flops"].get<double>(), f1 - f0, 1e-9 * (f1 - f0)) << name;
    EXPECT_GT(f.meter.phase("train").seconds, 0.0) << name;
    EXPECT_GT(dev["seconds"].get<double>(), 0.0) << name;
    EXPECT_LE(f.meter.phase("train").seconds + dev["seconds"].get<double>(), prepare_s) << name;

    const int64_t tokens_before = f.meter.phase("test_eval").tokens;
    const double flops_before = f.meter.phase("test_eval").flops;
    const double g0 = f.model->flop_count();
    m->predict(ctx, f.test);
    const double model_eval = f.model->flop_count() - g0;
    int64_t test_real = 0;
    double closed_form = 0.0;
    for (size_t s = 0; s < f.test.size(); s += 16) {
      const size_t e = std::min(f.test.size(), s + 16);
      int64_t T = 1;
      for (size_t i = s; i < e; ++i) {
        const int64_t n = head_tokens(*f.tok, f.test[i].text, 128);
        test_real += n;
        T = std::max(T, n);
      }
      closed_form += tb::Model::forward_flops(f.model->config(), static_cast<int64_t>(e - s), T);
    }
    EXPECT_EQ(f.meter.phase("test_eval").tokens - tokens_before, test_real) << name;
    EXPECT_DOUBLE_EQ(f.meter.phase("test_eval").flops - flops_before, model_eval) << name;
    EXPECT_NEAR(model_eval, closed_form, 1e-9 * closed_form) << name;
  }
}

// One BOS rule: the lm objective encodes its prompts as encode_prompt does (BOS first when
// the model has one), in training and in prediction alike.
TEST(Trainer, LmObjectivePrependsBosLikeEveryLmScoredPrompt) {
  tb::testing::MethodFixture f(tb::Family::llama);
  ASSERT_TRUE(f.tok->eos_id().has_value());
  auto c = f.model->config();
  c.bos_token_id = *f.tok->eos_id();
  f.model = std::make_unique<tb::Model>(c);
  f.model->init_random(0, 0.1f);
  const auto& info = find("full");
  auto ctx = f.context(info, {{"epochs", "1"}, {"objective", "lm"}});
  auto m = info.make();
  m->prepare(ctx);
  ASSERT_EQ(f.meter.status, "ok");
  auto tokens_of = [&](const std::vector<tb::tasks::Example>& exs) {
    int64_t n = 0;
    for (const auto& ex : exs) {
      const auto prompt = tb::methods::encode_prompt(*f.model, *f.tok, f.task->render(ex));
      EXPECT_EQ(prompt.front(), c.bos_token_id);
      for (const auto& v : f.task->verbalisers())
        n += static_cast<int64_t>(prompt.size() + f.tok->encode(" " + v, tb::SpecialTokens::as_text).size());
    }
    return n;
  };
  EXPECT_EQ(f.meter.phase("train").tokens, tokens_of(f.train));
  const int64_t before = f.meter.phase("test_eval").tokens;
  m->predict(ctx, f.test);
  EXPECT_EQ(f.meter.phase("test_eval").tokens - before, tokens_of(f.test));
}

TEST(Trainer, BadOptionValuesAreInputErrors) {
  tb::testing::MethodFixture f(tb::Family::llama);
  const auto& info = find("head");
  auto ctx = f.context(info, {{"schedule", "sometimes"}});
  auto m = info.make();
  EXPECT_THROW(m->prepare(ctx), tb::InputError);
  auto ctx2 = f.context(info, {{"unfreeze-last", "9"}});
  EXPECT_THROW(info.make()->prepare(ctx2), tb::InputError);
}

}  // namespace
