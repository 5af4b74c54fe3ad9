// End-to-end tests of the shared trainer through the feature, head and full methods on a
// separable task: each learns it, the same seed reproduces bit-identical predictions, the
// frozen body stays bit-identical for head, and trainable counts are exact.
#include <gtest/gtest.h>

#include <cstring>

#include "harness/base/errors.h"
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
