// Tests of the prefix-tuning method: its per-layer K/V prefix hook, with and without the
// reparameterisation MLP, on tiny random models of both families (a zero-length prefix is
// the plain model bit for bit; the backward matches central finite differences for the
// prefix values and every MLP tensor; trainable counts equal their closed forms; merging
// the MLP leaves the logits unchanged; the KV-cache path agrees with the full forward; the
// real-word initialisation equals the model reading those words first; a training step
// leaves the frozen base untouched), then the whole method end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/optimizer.h"
#include "harness/base/errors.h"
#include "harness/core/safetensors.h"
#include "methods/prefix.h"
#include "methods/trainer.h"
#include "tests/methods/method_fixture.h"
#include "tests/methods/tiny_models.h"

namespace {

using tb::Family;
using tb::Model;
using tb::ModelConfig;
using tb::test::logits_of;
using tb::test::random_tokens;

ModelConfig tiny_config(Family family) {
  return family == Family::gpt2 ? tb::test::tiny_gpt2_config() : tb::test::tiny_llama_config();
}
using tb::methods::PrefixHooks;


struct Case {
  Family family;
  bool reparam;
};

std::string case_label(const Case& c) {
  return std::string(c.family == Family::gpt2 ? "gpt2" : "llama") + (c.reparam ? "_mlp" : "_direct");
}
std::string case_name(const ::testing::TestParamInfo<Case>& info) { return case_label(info.param); }
void PrintTo(const Case& c, std::ostream* os) { *os << case_label(c); }

class Prefix : public ::testing::TestWithParam<Case> {};

TEST_P(Prefix, ZeroLengthPrefixIsThePlainModel) {
  Model m(tiny_config(GetParam().family));
  m.init_random(1);
  const int64_t B = 2, T = 7;
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 2);
  const auto plain = logits_of(m, tokens, B, T);
  PrefixHooks hooks(m.config(), 0, GetParam().reparam, 16, 3);
  EXPECT_EQ(hooks.store().num_trainable(), 0);
  EXPECT_EQ(hooks.lowest_trainable_layer(2), 2);
  const auto with = logits_of(m, tokens, B, T, &hooks);
  ASSERT_EQ(with.size(), plain.size());
  EXPECT_EQ(std::memcmp(with.data(), plain.data(), plain.size() * sizeof(float)), 0);
}

TEST_P(Prefix, TrainableCountsAreClosedForms) {
  const ModelConfig cfg = tiny_config(GetParam().family);
  const int64_t L = cfg.n_layer, C = cfg.hidden, kv = cfg.n_kv_head * cfg.head_dim;
  for (int64_t P : {1, 4, 16})
    for (int64_t h : {8, 128}) {
      PrefixHooks hooks(cfg, P, GetParam().reparam, h, 4);
      const int64_t stored = L * 2 * P * kv;
      const int64_t expected = GetParam().reparam ? P * C + C * h + h + h * (L * 2 * kv) + L * 2 * kv : stored;
      EXPECT_EQ(hooks.store().num_trainable(), expected) << "P=" << P << " h=" << h;
      EXPECT_EQ(hooks.stored_params(), stored);
      EXPECT_EQ(hooks.lowest_trainable_layer(static_cast<int>(L)), 0);
      hooks.merge();
      EXPECT_EQ(hooks.store().num_trainable(), stored) << "after merge, P=" << P << " h=" << h;
      EXPECT_FALSE(hooks.reparameterised());
    }
}

TEST_P(Prefix, MergeKeepsTheLogits) {
  Model m(tiny_config(GetParam().family));
  m.init_random(5);
  const int64_t B = 2, T = 6;
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 6);
  PrefixHooks hooks(m.config(), 3, GetParam().reparam, 16, 7);
  const auto before = logits_of(m, tokens, B, T, &hooks);
  hooks.merge();
  const auto after = logits_of(m, tokens, B, T, &hooks);
  EXPECT_EQ(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)), 0);
  // The prefix changes the model: the check above is not between two plain forwards.
  const auto plain = logits_of(m, tokens, B, T);
  EXPECT_NE(std::memcmp(before.data(), plain.data(), before.size() * sizeof(float)), 0);
}

// Initialised from real tokens, the prefixed model is the model that has read them first:
// its logits on the real tokens equal the plain model's on [init tokens, real tokens]. With
// the MLP the output layer is a ridge least-squares fit, hence the looser tolerance.
TEST_P(Prefix, TextInitIsTheModelThatReadTheText) {
  Model m(tiny_config(GetParam().family));
  m.init_random(18, 0.1f);
  const int64_t B = 1, T = 5, P = 4, V = m.config().vocab_size;
  const std::vector<int32_t> init = {3, 9, 27};  // repeated to P: 3 9 27 3
  const auto tokens = random_tokens(B * T, V, 19);
  PrefixHooks hooks(m.config(), P, GetParam().reparam, 16, 20);
  hooks.init_from_tokens(m, init);
  const auto with = logits_of(m, tokens, B, T, &hooks);
  std::vector<int32_t> joined = {3, 9, 27, 3};
  joined.insert(joined.end(), tokens.begin(), tokens.end());
  const auto read = logits_of(m, joined, B, P + T);
  const double tol = GetParam().reparam ? 1e-3 : 1e-5;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(with[t * V + v], read[(P + t) * V + v], tol) << "t" << t;
  EXPECT_THROW(hooks.init_from_tokens(m, {}), tb::InputError);
  EXPECT_THROW(hooks.init_from_tokens(m, {static_cast<int32_t>(V)}), tb::InputError);
}

// S = Σ R ⊙ final_hidden: every layer's prefix reaches it through attention.
double objective(Model& m, const std::vector<int32_t>& tokens, int64_t B, int64_t T,
                 PrefixHooks& hooks, const std::vector<float>& R) {
  m.forward(tokens.data(), B, T, &hooks);
  const float* h = m.final_hidden();
  double s = 0.0;
  for (size_t i = 0; i < R.size(); ++i) s += double(R[i]) * h[i];
  return s;
}

TEST_P(Prefix, BackwardMatchesFiniteDifferences) {
  // Weights of std 0.3 (not 0.02) so the attention scores, and hence the prefix keys, matter.
  Model m(tiny_config(GetParam().family));
  m.init_random(8, 0.3f);
  const int64_t B = 2, T = 5, P = 3, C = m.config().hidden;
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 9);
  std::vector<float> R(static_cast<size_t>(B * T * C));
  std::mt19937_64 gen(10);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& r : R) r = nd(gen);
  PrefixHooks hooks(m.config(), P, GetParam().reparam, 8, 11);

  m.forward(tokens.data(), B, T, &hooks, /*training=*/true);
  hooks.store().zero_grads();
  m.backward(R.data(), &hooks);

  // Checked per tensor (tb::test::model_fd_error scales by the largest gradient of the whole
  // store, and the MLP's tensors differ by orders of magnitude). Central differences in
  // float with eps = 1e-2 against values of size ~0.1–1: truncation O(eps²) and rounding
  // ~1e-6/eps stay under 1% of each tensor's gradient norm and 2% of its largest entry.
  // Large tensors are sampled at a stride (about 64 entries each).
  const float eps = 1e-2f;
  for (auto& p : hooks.store().params()) {
    const int64_t n = p.numel(), stride = std::max<int64_t>(1, n / 64);
    double num = 0.0, den = 0.0, max_err = 0.0, max_grad = 0.0;
    for (int64_t i = 0; i < n; i += stride) {
      const float saved = p.data[i];
      p.data[i] = saved + eps;
      const double up = objective(m, tokens, B, T, hooks, R);
      p.data[i] = saved - eps;
      const double down = objective(m, tokens, B, T, hooks, R);
      p.data[i] = saved;
      const double fd = (up - down) / (2.0 * eps);
      num += (fd - p.grad[i]) * (fd - p.grad[i]);
      den += double(p.grad[i]) * p.grad[i];
      max_err = std::max(max_err, std::fabs(fd - p.grad[i]));
      max_grad = std::max(max_grad, std::fabs(double(p.grad[i])));
    }
    ASSERT_GT(max_grad, 1e-3) << p.name << " barely affects the objective; the check would be vacuous";
    EXPECT_LT(std::sqrt(num / den), 1e-2) << p.name;
    EXPECT_LT(max_err, 2e-2 * max_grad) << p.name;
  }
}

TEST_P(Prefix, TrainingStepLeavesTheBaseFrozen) {
  Model m(tiny_config(GetParam().family));
  m.init_random(12);
  const auto& params = m.params().params();
  std::vector<std::vector<float>> before;
  for (const auto& p : params) before.emplace_back(p.data, p.data + p.numel());
  const int64_t B = 2, T = 5;
  PrefixHooks hooks(m.config(), 4, GetParam().reparam, 16, 13);
  std::vector<std::vector<float>> adapt0;
  for (const auto& p : hooks.store().params()) adapt0.emplace_back(p.data, p.data + p.numel());
  auto opt = tb::AdamW::for_stores({&hooks.store()}, tb::AdamWConfig{});
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 14);
  for (int step = 0; step < 2; ++step) {
    hooks.store().zero_grads();
    m.forward(tokens.data(), B, T, &hooks, /*training=*/true);
    m.lm_loss(tokens.data());
    m.backward_lm(&hooks);
    opt.step(1e-2f);
  }
  for (size_t i = 0; i < adapt0.size(); ++i) {
    const auto& p = hooks.store().at(i);
    EXPECT_NE(std::memcmp(adapt0[i].data(), p.data, adapt0[i].size() * sizeof(float)), 0) << p.name << " did not train";
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].grad, nullptr) << params[i].name << " owns a gradient buffer";
    EXPECT_EQ(std::memcmp(before[i].data(), params[i].data, before[i].size() * sizeof(float)), 0)
        << params[i].name << " changed";
  }
  EXPECT_EQ(m.params().grad_bytes(), 0);
}

TEST_P(Prefix, CachedForwardMatchesFullForward) {
  Model m(tiny_config(GetParam().family));
  m.init_random(15, 0.1f);
  const int64_t B = 2, T = 6, P = 3, V = m.config().vocab_size;
  PrefixHooks hooks(m.config(), P, GetParam().reparam, 16, 16);
  const auto tokens = random_tokens(B * T, V, 17);
  const auto full = logits_of(m, tokens, B, T, &hooks);  // (B,T,V); real positions start at P in both paths

  tb::KVCache cache(m.config(), B, P + T);
  const int64_t T0 = 4;
  std::vector<int32_t> first(B * T0), next(B);
  for (int64_t b = 0; b < B; ++b) std::copy_n(tokens.data() + b * T, T0, first.data() + b * T0);
  std::vector<float> out(static_cast<size_t>(B * T0 * V));
  m.forward_cached(first.data(), B, T0, cache, out.data(), /*last_only=*/false, &hooks);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T0; ++t)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(out[(b * T0 + t) * V + v], full[(b * T + t) * V + v], 1e-5) << "b" << b << " t" << t;
  std::vector<float> last(static_cast<size_t>(B * V));
  for (int64_t t = T0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) next[b] = tokens[b * T + t];
    m.forward_cached(next.data(), B, 1, cache, last.data(), /*last_only=*/true, &hooks);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(last[b * V + v], full[(b * T + t) * V + v], 1e-5) << "b" << b << " t" << t;
  }
  EXPECT_EQ(cache.len, P + T);
}

// Mean training loss of the first and of the last epoch recorded in the meter.
std::pair<double, double> first_last_epoch_loss(const tb::methods::Meter& meter, int64_t epochs) {
  const size_t n = meter.loss_curve.size(), per = n / static_cast<size_t>(epochs);
  double first = 0, last = 0;
  for (size_t i = 0; i < per; ++i) {
    first += meter.loss_curve[i].loss;
    last += meter.loss_curve[n - 1 - i].loss;
  }
  return {first / double(per), last / double(per)};
}

// The whole method on the shared separable task: training lowers the loss, the base model
// stays bit-identical without gradient buffers, the trained count is the closed form (MLP
// included) while the saved adaptation holds only the prefix (post-MLP) and the head, and a
// rerun is bit-identical.
TEST_P(Prefix, MethodTrainsFrozenAndDeterministic) {
  const auto& info = tb::methods::find("prefix");
  const int64_t P = 4, H = 16, epochs = 6;
  const std::map<std::string, std::string> opts = {
      {"tokens", std::to_string(P)}, {"hidden", std::to_string(H)}, {"reparam", GetParam().reparam ? "true" : "false"},
      {"epochs", std::to_string(epochs)}, {"patience", "100"}};
  std::vector<std::vector<double>> scores[2];
  for (int run = 0; run < 2; ++run) {
    tb::testing::MethodFixture f(GetParam().family);
    const auto& params = f.model->params().params();
    std::vector<std::vector<float>> before;
    for (const auto& p : params) before.emplace_back(p.data, p.data + p.numel());
    auto ctx = f.context(info, opts);
    auto method = info.make();
    method->prepare(ctx);
    ASSERT_EQ(f.meter.status, "ok") << f.meter.status_message;
    const auto [first, last] = first_last_epoch_loss(f.meter, epochs);
    EXPECT_LT(last, first) << "training did not lower the loss";
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(params[i].grad, nullptr) << params[i].name;
      EXPECT_EQ(std::memcmp(before[i].data(), params[i].data, before[i].size() * sizeof(float)), 0) << params[i].name;
    }
    const auto& mc = f.model->config();
    const int64_t C = mc.hidden, D = mc.n_layer * 2 * mc.n_kv_head * mc.head_dim, head = 2 * C + 2;
    const int64_t trained = GetParam().reparam ? P * C + C * H + H + H * D + D : P * D;
    EXPECT_EQ(method->trainable_params(), trained + head);
    EXPECT_EQ(f.meter.details["trained_params"].get<int64_t>(), trained + head);
    EXPECT_EQ(f.meter.details["stored_params"].get<int64_t>(), P * D + head);
    const auto dir = f.dir / "adaptation";
    EXPECT_GT(method->save_adaptation(dir), 0);
    const auto saved = tb::SafetensorsFile::open(dir / "adaptation.safetensors");
    EXPECT_EQ(saved.read_f32("prefix").size(), static_cast<size_t>(P * D));
    EXPECT_EQ(saved.read_f32("head.weight").size(), static_cast<size_t>(2 * C));
    EXPECT_EQ(saved.tensors().size(), 3u);
    for (const auto& p : method->predict(ctx, f.test)) scores[run].push_back(p.scores);
  }
  EXPECT_EQ(scores[0], scores[1]);
}

TEST_P(Prefix, MethodTrainsWithTheLmObjective) {
  const auto& info = tb::methods::find("prefix");
  tb::testing::MethodFixture f(GetParam().family);
  auto ctx = f.context(info, {{"tokens", "4"}, {"hidden", "16"}, {"reparam", GetParam().reparam ? "true" : "false"},
                              {"epochs", "4"}, {"patience", "100"}, {"objective", "lm"}});
  auto method = info.make();
  method->prepare(ctx);
  ASSERT_EQ(f.meter.status, "ok") << f.meter.status_message;
  const auto [first, last] = first_last_epoch_loss(f.meter, 4);
  EXPECT_LT(last, first);
  EXPECT_EQ(method->predict(ctx, f.test).size(), f.test.size());
}

TEST(PrefixMethod, RejectsBadOptions) {
  const auto& info = tb::methods::find("prefix");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"tokens", "0"}, {"tokens", "64"}, {"hidden", "0"}, {"reparam", "maybe"}, {"init", "vocab"}}) {
    tb::testing::MethodFixture f(Family::llama, 20);
    auto ctx = f.context(info, {{k, v}});
    EXPECT_THROW(info.make()->prepare(ctx), tb::InputError) << k << "=" << v;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Prefix,
                         ::testing::Values(Case{Family::gpt2, false}, Case{Family::gpt2, true},
                                           Case{Family::llama, false}, Case{Family::llama, true}),
                         case_name);

}  // namespace
