// Tests of the soft-prompt method: its virtual-token hook on tiny random models of both
// families (a zero-length prompt is the plain model bit for bit; the backward matches
// central finite differences; the trainable count is P·C; the KV-cache path agrees with the
// full forward; a training step leaves the frozen base untouched), then the whole method
// end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/model.h"
#include "harness/core/optimizer.h"
#include "harness/core/safetensors.h"
#include "methods/softprompt.h"
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
using tb::methods::SoftPromptHooks;


class SoftPrompt : public ::testing::TestWithParam<Family> {};

TEST_P(SoftPrompt, ZeroLengthPromptIsThePlainModel) {
  Model m(tiny_config(GetParam()));
  m.init_random(1);
  const int64_t B = 2, T = 7;
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 2);
  const auto plain = logits_of(m, tokens, B, T);
  SoftPromptHooks hooks(0, m.config().hidden);
  EXPECT_EQ(hooks.store().num_trainable(), 0);
  EXPECT_EQ(hooks.lowest_trainable_layer(2), 2);
  const auto with = logits_of(m, tokens, B, T, &hooks);
  ASSERT_EQ(with.size(), plain.size());
  EXPECT_EQ(std::memcmp(with.data(), plain.data(), plain.size() * sizeof(float)), 0);
}

TEST_P(SoftPrompt, TrainableCountIsPTimesC) {
  const ModelConfig cfg = tiny_config(GetParam());
  for (int64_t P : {1, 5, 16}) {
    SoftPromptHooks hooks(P, cfg.hidden);
    EXPECT_EQ(hooks.store().num_trainable(), P * cfg.hidden);
    EXPECT_EQ(hooks.store().grad_bytes(), P * cfg.hidden * 4);
    EXPECT_EQ(hooks.lowest_trainable_layer(static_cast<int>(cfg.n_layer)), -1);
  }
}

TEST_P(SoftPrompt, InitialisationCopiesVocabularyRows) {
  Model m(tiny_config(GetParam()));
  m.init_random(3);
  const int64_t C = m.config().hidden, V = m.config().vocab_size;
  const tb::Param& wte = tb::methods::token_embeddings(m);

  SoftPromptHooks text(5, C);
  text.init_from_tokens(m, {7, 11});
  for (int64_t p = 0; p < 5; ++p)
    EXPECT_EQ(std::memcmp(text.prompt() + p * C, wte.data + (p % 2 == 0 ? 7 : 11) * C, C * sizeof(float)), 0)
        << "row " << p;
  EXPECT_THROW(text.init_from_tokens(m, {}), tb::InputError);
  EXPECT_THROW(text.init_from_tokens(m, {static_cast<int32_t>(V)}), tb::InputError);

  // Vocabulary init: every row is some token's embedding, distinct tokens, same for a seed.
  SoftPromptHooks a(8, C), b(8, C), c(8, C);
  a.init_from_vocab(m, 42);
  b.init_from_vocab(m, 42);
  c.init_from_vocab(m, 43);
  EXPECT_EQ(std::memcmp(a.prompt(), b.prompt(), 8 * C * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.prompt(), c.prompt(), 8 * C * sizeof(float)), 0);
  std::vector<int64_t> ids;
  for (int64_t p = 0; p < 8; ++p) {
    int64_t found = -1;
    for (int64_t v = 0; v < V && found < 0; ++v)
      if (std::memcmp(a.prompt() + p * C, wte.data + v * C, C * sizeof(float)) == 0) found = v;
    ASSERT_GE(found, 0) << "row " << p << " is no vocabulary embedding";
    for (int64_t id : ids) EXPECT_NE(id, found) << "row " << p << " repeats token " << found;
    ids.push_back(found);
  }
}

TEST_P(SoftPrompt, BackwardMatchesFiniteDifferences) {
  // Weights of std 0.3 (not 0.02) so attention mixes the prompt into every later row.
  Model m(tiny_config(GetParam()));
  m.init_random(5, 0.3f);
  const int64_t B = 2, T = 6, P = 3;
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 6);
  SoftPromptHooks hooks(P, m.config().hidden);
  hooks.init_from_vocab(m, 8);
  // Every prompt entry, central differences in float with eps = 1e-2 on entries of size
  // ~0.3: truncation O(eps²) and rounding ~1e-6/eps stay under 2% of the largest gradient.
  const double err = tb::test::model_fd_error(m, hooks, hooks.store(), tokens, B, T,
                                              /*samples=*/P * m.config().hidden);
  EXPECT_LT(err, 2e-2);
  double max_grad = 0.0;
  const tb::Param& p = hooks.store().at(0);
  for (int64_t i = 0; i < p.numel(); ++i) max_grad = std::max(max_grad, std::fabs(double(p.grad[i])));
  EXPECT_GT(max_grad, 1e-3) << "the prompt barely affects the objective; the check would be vacuous";
}

TEST_P(SoftPrompt, TrainingStepLeavesTheBaseFrozen) {
  Model m(tiny_config(GetParam()));
  m.init_random(9);
  const auto& params = m.params().params();
  std::vector<std::vector<float>> before;
  for (const auto& p : params) before.emplace_back(p.data, p.data + p.numel());
  const int64_t B = 2, T = 5, P = 4, C = m.config().hidden;
  SoftPromptHooks hooks(P, C);
  hooks.init_from_vocab(m, 10);
  const std::vector<float> prompt0(hooks.prompt(), hooks.prompt() + P * C);
  auto opt = tb::AdamW::for_stores({&hooks.store()}, tb::AdamWConfig{});
  const auto tokens = random_tokens(B * T, m.config().vocab_size, 11);
  for (int step = 0; step < 2; ++step) {
    hooks.store().zero_grads();
    m.forward(tokens.data(), B, T, &hooks, /*training=*/true);
    m.lm_loss(tokens.data());
    m.backward_lm(&hooks);
    opt.step(1e-2f);
  }
  EXPECT_NE(std::memcmp(prompt0.data(), hooks.prompt(), P * C * sizeof(float)), 0) << "the prompt did not train";
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].grad, nullptr) << params[i].name << " owns a gradient buffer";
    EXPECT_EQ(std::memcmp(before[i].data(), params[i].data, before[i].size() * sizeof(float)), 0)
        << params[i].name << " changed";
  }
  EXPECT_EQ(m.params().grad_bytes(), 0);
}

TEST_P(SoftPrompt, CachedForwardMatchesFullForward) {
  Model m(tiny_config(GetParam()));
  m.init_random(12, 0.1f);
  const int64_t B = 2, T = 6, P = 3, C = m.config().hidden, V = m.config().vocab_size;
  SoftPromptHooks hooks(P, C);
  hooks.init_from_vocab(m, 13);
  const auto tokens = random_tokens(B * T, V, 14);
  const auto full = logits_of(m, tokens, B, T, &hooks);  // (B, P+T, V)

  // The prompt enters the cache with the first chunk; later tokens see it through the cache.
  tb::KVCache cache(m.config(), B, P + T);
  const int64_t T0 = 4;
  std::vector<int32_t> first(B * T0), next(B);
  for (int64_t b = 0; b < B; ++b) std::copy_n(tokens.data() + b * T, T0, first.data() + b * T0);
  std::vector<float> out(static_cast<size_t>(B * T0 * V));
  m.forward_cached(first.data(), B, T0, cache, out.data(), /*last_only=*/false, &hooks);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T0; ++t)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(out[(b * T0 + t) * V + v], full[(b * (P + T) + P + t) * V + v], 1e-5) << "b" << b << " t" << t;
  std::vector<float> last(static_cast<size_t>(B * V));
  for (int64_t t = T0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) next[b] = tokens[b * T + t];
    m.forward_cached(next.data(), B, 1, cache, last.data(), /*last_only=*/true, &hooks);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(last[b * V + v], full[(b * (P + T) + P + t) * V + v], 1e-5) << "b" << b << " t" << t;
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
// stays bit-identical without gradient buffers, the trainable count is P·C + the head, the
// saved adaptation holds exactly the prompt and the head, and a rerun is bit-identical.
TEST_P(SoftPrompt, MethodTrainsFrozenAndDeterministic) {
  const auto& info = tb::methods::find("softprompt");
  const int64_t P = 4, epochs = 6;
  const std::map<std::string, std::string> opts = {
      {"tokens", std::to_string(P)}, {"epochs", std::to_string(epochs)}, {"patience", "100"}};
  std::vector<std::vector<double>> scores[2];
  for (int run = 0; run < 2; ++run) {
    tb::testing::MethodFixture f(GetParam());
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
    const int64_t C = f.model->config().hidden;
    EXPECT_EQ(method->trainable_params(), P * C + 2 * C + 2);
    const auto dir = f.dir / "adaptation";
    EXPECT_GT(method->save_adaptation(dir), 0);
    const auto saved = tb::SafetensorsFile::open(dir / "adaptation.safetensors");
    EXPECT_EQ(saved.read_f32("prompt_embeddings").size(), static_cast<size_t>(P * C));
    EXPECT_EQ(saved.read_f32("head.weight").size(), static_cast<size_t>(2 * C));
    EXPECT_EQ(saved.tensors().size(), 3u);
    for (const auto& p : method->predict(ctx, f.test)) scores[run].push_back(p.scores);
  }
  EXPECT_EQ(scores[0], scores[1]);
}

TEST_P(SoftPrompt, MethodTrainsWithTheLmObjective) {
  const auto& info = tb::methods::find("softprompt");
  tb::testing::MethodFixture f(GetParam());
  auto ctx = f.context(info, {{"tokens", "4"}, {"epochs", "4"}, {"patience", "100"}, {"objective", "lm"},
                              {"init", "text"}, {"init-text", "It was good."}});
  auto method = info.make();
  method->prepare(ctx);
  ASSERT_EQ(f.meter.status, "ok") << f.meter.status_message;
  const auto [first, last] = first_last_epoch_loss(f.meter, 4);
  EXPECT_LT(last, first);
  EXPECT_EQ(method->trainable_params(), 4 * f.model->config().hidden);  // no head
  EXPECT_EQ(method->predict(ctx, f.test).size(), f.test.size());
}

TEST(SoftPromptMethod, RejectsBadOptions) {
  const auto& info = tb::methods::find("softprompt");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"tokens", "0"}, {"tokens", "64"}, {"init", "random"}, {"init-text", ""}}) {
    tb::testing::MethodFixture f(Family::llama, 20);
    std::map<std::string, std::string> opts = {{"init", k == "init-text" ? "text" : "vocab"}};
    opts[k] = v;
    auto ctx = f.context(info, opts);
    EXPECT_THROW(info.make()->prepare(ctx), tb::InputError) << k << "=" << v;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, SoftPrompt, ::testing::Values(Family::gpt2, Family::llama),
                         [](const auto& info) { return info.param == Family::gpt2 ? "gpt2" : "llama"; });

}  // namespace
