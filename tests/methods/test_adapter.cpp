// Tests of bottleneck adapters (methods/adapter.h) on tiny random GPT-2 and Llama models:
// a zero up-projection leaves logits bit-identical; the hook's backward matches central
// differences, isolated (float forward with f accumulated in double, GELU and ReLU, on the
// hook input and every adapter tensor) and through the whole model; trainable counts equal
// the closed forms; Pfeiffer places adapters after the MLP only; training leaves the
// frozen base bit-identical with no base gradient buffers. End to end, the `adapter`
// method learns the shared separable task (better than chance on dev), keeps the base
// bit-identical and reruns bit-identically.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/optimizer.h"
#include "harness/core/safetensors.h"
#include "methods/adapter.h"
#include "methods/trainer.h"
#include "tests/methods/method_fixture.h"
#include "tests/methods/tiny_models.h"

namespace {

using tb::Model;
using tb::ModelConfig;
using tb::Sublayer;
using tb::methods::AdapterAct;
using tb::methods::AdapterConfig;
using tb::methods::AdapterHooks;
using tb::methods::AdapterKind;

constexpr int64_t kB = 2, kT = 12;

std::vector<ModelConfig> both_families() { return {tb::test::tiny_gpt2_config(), tb::test::tiny_llama_config()}; }

AdapterConfig adapter_config(AdapterKind kind, AdapterAct act = AdapterAct::gelu, int64_t size = 8) {
  AdapterConfig ac;
  ac.kind = kind;
  ac.act = act;
  ac.size = size;
  ac.seed = 4;
  return ac;
}

// Gives the up-projections (and biases) random values so the adapters do something.
void randomise_up(AdapterHooks& a, float stddev, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  for (auto& p : a.store().params())
    if (p.name.find(".up.") != std::string::npos || p.name.find("down.bias") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = d(g);
}

TEST(Adapter, ZeroUpProjectionLeavesLogitsBitIdentical) {
  for (const auto& cfg : both_families()) {
    auto m = std::make_unique<Model>(cfg);
    m->init_random(1);
    const auto tokens = tb::test::random_tokens(kB * kT, cfg.vocab_size, 5);
    const auto plain = tb::test::logits_of(*m, tokens, kB, kT);
    for (auto kind : {AdapterKind::houlsby, AdapterKind::pfeiffer}) {
      AdapterHooks ad(cfg, adapter_config(kind));
      const auto adapted = tb::test::logits_of(*m, tokens, kB, kT, &ad);
      ASSERT_EQ(plain.size(), adapted.size());
      EXPECT_EQ(0, std::memcmp(plain.data(), adapted.data(), plain.size() * sizeof(float))) << cfg.model_type;
    }
  }
}

TEST(Adapter, IsolatedBackwardMatchesFiniteDifferences) {
  const auto cfg = tb::test::tiny_llama_config();
  const int64_t C = cfg.hidden, N = 5;
  for (auto act : {AdapterAct::gelu, AdapterAct::relu}) {
    AdapterHooks ad(cfg, adapter_config(AdapterKind::houlsby, act));
    randomise_up(ad, 0.5f, 7);
    auto h = tb::test::randn(N * C, 31);
    const auto r = tb::test::randn(N * C, 32);
    auto f = [&] {
      std::vector<float> y(h);
      ad.after_forward(1, Sublayer::mlp, y.data(), N, C, /*training=*/true);
      double s = 0.0;
      for (int64_t i = 0; i < N * C; ++i) s += static_cast<double>(r[i]) * y[i];
      return s;
    };
    f();
    ad.store().zero_grads();
    std::vector<float> dh(r);
    ad.after_backward(1, Sublayer::mlp, dh.data(), N, C);
    const float eps = act == AdapterAct::gelu ? 1e-2f : 1e-3f;
    auto check = [&](float* v, const float* grad, int64_t n, const std::string& what) {
      double diff = 0.0, scale = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const float v0 = v[i];
        v[i] = v0 + eps;
        const double fp = f();
        v[i] = v0 - eps;
        const double fm = f();
        v[i] = v0;
        diff = std::max(diff, std::fabs((fp - fm) / (2.0 * eps) - grad[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(grad[i])));
      }
      EXPECT_GT(scale, 0.0) << what;
      EXPECT_LT(diff / scale, 1e-3) << what << (act == AdapterAct::gelu ? " gelu" : " relu");
    };
    for (auto& p : ad.store().params())
      if (p.name.find("layers.1.adapter.mlp") != std::string::npos) check(p.data, p.grad, p.numel(), p.name);
    check(h.data(), dh.data(), N * C, "h");
  }
}

TEST(Adapter, BackwardThroughTheModelMatchesFiniteDifferences) {
  for (const auto& cfg : both_families()) {
    for (auto kind : {AdapterKind::houlsby, AdapterKind::pfeiffer}) {
      auto m = std::make_unique<Model>(cfg);
      m->init_random(2);
      AdapterHooks ad(cfg, adapter_config(kind));
      randomise_up(ad, 0.2f, 6);
      const auto tokens = tb::test::random_tokens(kB * 8, cfg.vocab_size, 12);
      EXPECT_LT(tb::test::model_fd_error(*m, ad, ad.store(), tokens, kB, 8), 2e-2) << cfg.model_type;
    }
  }
}

TEST(Adapter, TrainableCountsEqualClosedFormsAndPlacement) {
  for (const auto& cfg : both_families()) {
    const int64_t L = cfg.n_layer, C = cfg.hidden;
    for (int64_t m : {4, 16}) {
      AdapterHooks h(cfg, adapter_config(AdapterKind::houlsby, AdapterAct::gelu, m));
      AdapterHooks p(cfg, adapter_config(AdapterKind::pfeiffer, AdapterAct::gelu, m));
      EXPECT_EQ(h.store().num_trainable(), L * 2 * (2 * C * m + m + C));
      EXPECT_EQ(p.store().num_trainable(), L * (2 * C * m + m + C));
      for (int l = 0; l < L; ++l) {
        EXPECT_TRUE(h.has_after(l, Sublayer::attention));
        EXPECT_TRUE(h.has_after(l, Sublayer::mlp));
        EXPECT_FALSE(p.has_after(l, Sublayer::attention));
        EXPECT_TRUE(p.has_after(l, Sublayer::mlp));
      }
      EXPECT_FALSE(h.has_after(static_cast<int>(L), Sublayer::mlp));
    }
  }
}

TEST(Adapter, TrainingLeavesTheFrozenBaseBitIdentical) {
  for (const auto& cfg : both_families()) {
    auto m = std::make_unique<Model>(cfg);
    m->init_random(4);
    std::vector<std::vector<float>> before;
    for (const auto& p : m->params().params()) before.emplace_back(p.data, p.data + p.numel());
    AdapterHooks ad(cfg, adapter_config(AdapterKind::houlsby));
    EXPECT_EQ(m->lowest_backward_layer(&ad), 0);
    tb::AdamWConfig oc;
    oc.lr = 1e-2f;
    auto opt = tb::AdamW::for_stores({&ad.store()}, oc);
    const auto tokens = tb::test::random_tokens(kB * kT, cfg.vocab_size, 14);
    std::vector<int32_t> targets(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) targets[i] = (i + 1) % kT == 0 ? -100 : tokens[i + 1];
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 8; ++step) {
      m->forward(tokens.data(), kB, kT, &ad, /*training=*/true);
      last = m->lm_loss(targets.data());
      if (step == 0) first = last;
      ad.store().zero_grads();
      m->backward_lm(&ad);
      opt.step(oc.lr);
    }
    EXPECT_LT(last, first) << cfg.model_type;
    for (size_t i = 0; i < before.size(); ++i) {
      const auto& p = m->params().params()[i];
      EXPECT_EQ(p.grad, nullptr) << p.name;
      EXPECT_EQ(0, std::memcmp(before[i].data(), p.data, before[i].size() * sizeof(float))) << p.name;
    }
  }
}

TEST(Adapter, BadConfigurationIsAnInputError) {
  EXPECT_THROW(tb::methods::parse_adapter_kind("lora"), tb::InputError);
  EXPECT_THROW(tb::methods::parse_adapter_act("tanh"), tb::InputError);
  EXPECT_EQ(tb::methods::parse_adapter_kind("pfeiffer"), AdapterKind::pfeiffer);
  EXPECT_EQ(tb::methods::parse_adapter_act("relu"), AdapterAct::relu);
  EXPECT_THROW(AdapterHooks(tb::test::tiny_gpt2_config(), adapter_config(AdapterKind::houlsby, AdapterAct::gelu, 0)),
               tb::InputError);
}

double accuracy(const std::vector<tb::methods::Prediction>& p, const std::vector<tb::tasks::Example>& ex) {
  int64_t hit = 0;
  for (size_t i = 0; i < ex.size(); ++i) hit += p[i].label == ex[i].label;
  return static_cast<double>(hit) / static_cast<double>(ex.size());
}

class AdapterMethod : public ::testing::TestWithParam<tb::Family> {};

TEST_P(AdapterMethod, LearnsFrozenAndDeterministic) {
  const auto& info = tb::methods::find("adapter");
  for (const char* kind : {"houlsby", "pfeiffer"}) {
    std::vector<std::vector<double>> scores[2];
    for (int run = 0; run < 2; ++run) {
      tb::testing::MethodFixture f(GetParam());
      const auto& params = f.model->params().params();
      std::vector<std::vector<float>> before;
      for (const auto& p : params) before.emplace_back(p.data, p.data + p.numel());
      auto ctx = f.context(info, {{"epochs", "8"}, {"lr", "1e-2"}, {"patience", "100"}, {"kind", kind}, {"size", "16"}});
      auto method = info.make();
      method->prepare(ctx);
      ASSERT_EQ(f.meter.status, "ok") << f.meter.status_message;
      const auto& curve = f.meter.loss_curve;
      ASSERT_FALSE(curve.empty());
      EXPECT_LT(curve.back().loss, curve.front().loss) << kind;
      // Chance is 0.5 and a head on the frozen random body reaches about 0.8.
      EXPECT_GT(accuracy(method->predict(ctx, f.dev), f.dev), 0.9) << kind;
      const int64_t L = f.model->config().n_layer, C = f.model->config().hidden, m = 16;
      const int64_t per = std::string(kind) == "houlsby" ? 2 : 1;
      EXPECT_EQ(method->trainable_params(), L * per * (2 * C * m + m + C) + 2 * C + 2) << kind;
      const auto dir = f.dir / "adaptation";
      EXPECT_GT(method->save_adaptation(dir), 0);
      EXPECT_EQ(tb::SafetensorsFile::open(dir / "adaptation.safetensors").tensors().size(),
                static_cast<size_t>(L * per * 4 + 2));
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_EQ(params[i].grad, nullptr) << params[i].name;
        EXPECT_EQ(std::memcmp(before[i].data(), params[i].data, before[i].size() * sizeof(float)), 0) << params[i].name;
      }
      EXPECT_FALSE(method->changes_base());
      EXPECT_NE(method->lm_hooks(), nullptr);
      for (const auto& p : method->predict(ctx, f.test)) scores[run].push_back(p.scores);
    }
    EXPECT_EQ(scores[0], scores[1]) << kind;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, AdapterMethod, ::testing::Values(tb::Family::gpt2, tb::Family::llama),
                         [](const auto& info) { return info.param == tb::Family::gpt2 ? "gpt2" : "llama"; });

TEST(AdapterMethodOptions, BadOptionsAreInputErrors) {
  const auto& info = tb::methods::find("adapter");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"kind", "lora"}, {"size", "0"}, {"act", "tanh"}, {"size", "x"}}) {
    tb::testing::MethodFixture f(tb::Family::llama, 20);
    auto ctx = f.context(info, {{k, v}});
    EXPECT_THROW(info.make()->prepare(ctx), tb::InputError) << k << "=" << v;
  }
}

}  // namespace
