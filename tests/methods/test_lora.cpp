// Tests of LoRA (methods/lora.h) on tiny random GPT-2 (fused qkv) and Llama (GQA) models:
// a zero B leaves logits bit-identical; the hook's backward matches central differences,
// both isolated (float forward, f accumulated in double; the delta is bilinear in A and B
// and linear in x, so central differences are exact up to float rounding) and through the
// whole model; trainable counts equal their closed forms; merging equals the unmerged
// model within 1e-5 and touches only the adapted rows; training leaves the frozen base
// bit-identical with no base gradient buffers; backward stops at the lowest LoRA layer.
// End to end, the `lora` method learns the shared separable task (better than chance on
// dev), its merged predictions equal the unmerged ones, and a rerun is bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/optimizer.h"
#include "harness/core/safetensors.h"
#include "methods/lora.h"
#include "methods/trainer.h"
#include "tests/methods/method_fixture.h"
#include "tests/methods/tiny_models.h"

namespace {

using tb::Family;
using tb::Model;
using tb::ModelConfig;
using tb::Site;
using tb::methods::LoraConfig;
using tb::methods::LoraHooks;

constexpr int64_t kB = 2, kT = 12;

std::unique_ptr<Model> random_model(const ModelConfig& cfg, uint64_t seed = 1) {
  auto m = std::make_unique<Model>(cfg);
  m->init_random(seed);
  return m;
}

void randomise_b(LoraHooks& lora, float stddev, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  for (auto& p : lora.store().params())
    if (p.name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = d(g);
}

LoraConfig lora_config(std::vector<std::string> sites, double dropout = 0.0) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8.0;
  lc.dropout = dropout;
  lc.sites = std::move(sites);
  lc.seed = 3;
  return lc;
}

std::vector<ModelConfig> both_families() { return {tb::test::tiny_gpt2_config(), tb::test::tiny_llama_config()}; }

TEST(Lora, ZeroInitialisedBLeavesLogitsBitIdentical) {
  for (const auto& cfg : both_families()) {
    auto m = random_model(cfg);
    const auto tokens = tb::test::random_tokens(kB * kT, cfg.vocab_size, 5);
    const auto plain = tb::test::logits_of(*m, tokens, kB, kT);
    LoraHooks lora(cfg, lora_config({"all-linear"}, /*dropout=*/0.1));
    const auto adapted = tb::test::logits_of(*m, tokens, kB, kT, &lora);
    ASSERT_EQ(plain.size(), adapted.size());
    EXPECT_EQ(0, std::memcmp(plain.data(), adapted.data(), plain.size() * sizeof(float))) << cfg.model_type;
    // A training forward (dropout active) adds B·A·drop(x) = 0 as well.
    m->forward(tokens.data(), kB, kT, &lora, /*training=*/true);
    std::vector<float> trained(plain.size());
    m->logits(trained.data());
    EXPECT_EQ(0, std::memcmp(plain.data(), trained.data(), plain.size() * sizeof(float))) << cfg.model_type;
  }
}

// The isolated hook: y = s·B·A·drop(x) on a zero y, f = Σ r·y.
void check_isolated(const ModelConfig& cfg, Site site, int64_t IC, int64_t OC, double dropout) {
  LoraHooks lora(cfg, lora_config({"q", "v"}, dropout));
  randomise_b(lora, 0.5f, 9);
  const int64_t N = 6;
  auto x = tb::test::randn(N * IC, 21);
  const auto r = tb::test::randn(N * OC, 22);
  auto f = [&] {
    lora.reseed_dropout(77);
    std::vector<float> y(static_cast<size_t>(N * OC), 0.0f);
    lora.delta_forward(0, site, y.data(), x.data(), N, IC, OC, /*training=*/true);
    double s = 0.0;
    for (int64_t i = 0; i < N * OC; ++i) s += static_cast<double>(r[i]) * y[i];
    return s;
  };
  f();
  lora.store().zero_grads();
  std::vector<float> dx(static_cast<size_t>(N * IC), 0.0f);
  lora.delta_backward(0, site, dx.data(), r.data(), x.data(), N, IC, OC);

  const float eps = 1e-2f;
  auto check = [&](float* v, const float* grad, int64_t n, const std::string& what) {
    double diff = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const float v0 = v[i];
      v[i] = v0 + eps;
      const double fp = f();
      v[i] = v0 - eps;
      const double fm = f();
      v[i] = v0;
      const double num = (fp - fm) / (2.0 * eps);
      diff = std::max(diff, std::fabs(num - grad[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(grad[i])));
    }
    EXPECT_GT(scale, 0.0) << what;
    EXPECT_LT(diff / scale, 1e-3) << cfg.model_type << " " << what << " dropout " << dropout;
  };
  for (auto& p : lora.store().params())
    if (p.name.find(cfg.family == Family::gpt2 ? "h.0." : "layers.0.") != std::string::npos &&
        (cfg.family == Family::gpt2 || p.name.find(site == Site::q ? "q_proj" : "v_proj") != std::string::npos))
      check(p.data, p.grad, p.numel(), p.name);
  check(x.data(), dx.data(), N * IC, "x");
}

TEST(Lora, IsolatedBackwardMatchesFiniteDifferences) {
  const auto g = tb::test::tiny_gpt2_config();
  const auto l = tb::test::tiny_llama_config();
  for (double dropout : {0.0, 0.3}) {
    // GPT-2: q and v are slices [0,C) and [2C,3C) of the fused (N,3C) output.
    check_isolated(g, Site::qkv, g.hidden, 3 * g.hidden, dropout);
    check_isolated(l, Site::q, l.hidden, l.n_head * l.head_dim, dropout);
    check_isolated(l, Site::v, l.hidden, l.n_kv_head * l.head_dim, dropout);
  }
}

TEST(Lora, GptTwoSlicesTouchOnlyTheirColumns) {
  const auto cfg = tb::test::tiny_gpt2_config();
  const int64_t C = cfg.hidden, N = 5;
  LoraHooks lora(cfg, lora_config({"q", "v"}));
  randomise_b(lora, 0.5f, 4);
  const auto x = tb::test::randn(N * C, 8);
  std::vector<float> y(static_cast<size_t>(N * 3 * C), 0.0f);
  lora.delta_forward(0, Site::qkv, y.data(), x.data(), N, C, 3 * C, false);
  double q = 0.0, k = 0.0, v = 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < C; ++j) {
      q += std::fabs(y[n * 3 * C + j]);
      k += std::fabs(y[n * 3 * C + C + j]);
      v += std::fabs(y[n * 3 * C + 2 * C + j]);
    }
  EXPECT_GT(q, 0.0);
  EXPECT_EQ(k, 0.0);
  EXPECT_GT(v, 0.0);
}

TEST(Lora, BackwardThroughTheModelMatchesFiniteDifferences) {
  for (const auto& cfg : both_families()) {
    auto m = random_model(cfg, 2);
    LoraHooks lora(cfg, lora_config({"all-linear"}));
    randomise_b(lora, 0.2f, 6);
    const auto tokens = tb::test::random_tokens(kB * 8, cfg.vocab_size, 12);
    const double err = tb::test::model_fd_error(*m, lora, lora.store(), tokens, kB, 8);
    EXPECT_LT(err, 2e-2) << cfg.model_type;
  }
}

TEST(Lora, TrainableCountsEqualClosedForms) {
  const int64_t r = 4;
  for (const auto& cfg : both_families()) {
    const int64_t L = cfg.n_layer, C = cfg.hidden, F = cfg.intermediate;
    const int64_t qd = cfg.n_head * cfg.head_dim, kvd = cfg.n_kv_head * cfg.head_dim;
    LoraHooks qv(cfg, lora_config({"q", "v"}));
    EXPECT_EQ(qv.store().num_trainable(), L * r * ((C + qd) + (C + kvd))) << cfg.model_type;
    if (cfg.family == Family::gpt2) {
      EXPECT_EQ(qv.store().num_trainable(), L * 2 * r * (C + C));
      LoraHooks fused(cfg, lora_config({"c_attn"}));
      EXPECT_EQ(fused.store().num_trainable(), L * 3 * r * (C + C));
      LoraHooks all(cfg, lora_config({"all-linear"}));
      EXPECT_EQ(all.store().num_trainable(), L * r * (3 * (C + C) + (C + C) + (C + F) + (F + C)));
    } else {
      LoraHooks all(cfg, lora_config({"all-linear"}));
      EXPECT_EQ(all.store().num_trainable(),
                L * r * ((C + qd) + 2 * (C + kvd) + (qd + C) + 2 * (C + F) + (F + C)));
    }
  }
  // The equal-head-count form of the issue: L·2·r·(C + C).
  auto eq = tb::test::tiny_llama_config(3);
  eq.n_kv_head = eq.n_head;
  LoraHooks qv(eq, lora_config({"v", "q"}));
  EXPECT_EQ(qv.store().num_trainable(), eq.n_layer * 2 * r * (eq.hidden + eq.hidden));
}

TEST(Lora, MergedLogitsEqualUnmerged) {
  struct Case {
    ModelConfig cfg;
    std::vector<std::string> sites;
  };
  for (const auto& c : {Case{tb::test::tiny_gpt2_config(), {"q", "v"}}, Case{tb::test::tiny_gpt2_config(), {"all-linear"}},
                        Case{tb::test::tiny_llama_config(), {"q", "v"}}, Case{tb::test::tiny_llama_config(), {"all-linear"}}}) {
    auto m = random_model(c.cfg, 3);
    LoraHooks lora(c.cfg, lora_config(c.sites, 0.05));
    randomise_b(lora, 0.3f, 10);
    const auto tokens = tb::test::random_tokens(kB * kT, c.cfg.vocab_size, 13);
    const auto plain = tb::test::logits_of(*m, tokens, kB, kT);
    const auto unmerged = tb::test::logits_of(*m, tokens, kB, kT, &lora);
    const std::string qkv = c.cfg.family == Family::gpt2 ? "transformer.h.0.attn.c_attn.weight" : "model.layers.0.self_attn.k_proj.weight";
    const tb::Param& w = m->params().get(qkv);
    const std::vector<float> before(w.data, w.data + w.numel());
    lora.merge_into(*m);
    EXPECT_TRUE(lora.merged());
    EXPECT_FALSE(lora.has_delta(0, c.cfg.family == Family::gpt2 ? Site::qkv : Site::q));
    const auto merged = tb::test::logits_of(*m, tokens, kB, kT);
    // With the hooks still passed, a merged LoRA adds nothing more.
    const auto merged_hooks = tb::test::logits_of(*m, tokens, kB, kT, &lora);
    double diff = 0.0, moved = 0.0;
    for (size_t i = 0; i < merged.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(merged[i] - unmerged[i])));
      moved = std::max(moved, static_cast<double>(std::fabs(unmerged[i] - plain[i])));
    }
    EXPECT_LE(diff, 1e-5) << c.cfg.model_type << " " << c.sites[0];
    EXPECT_GT(moved, 1e-3) << "the LoRA must change the logits for the comparison to mean anything";
    EXPECT_EQ(0, std::memcmp(merged.data(), merged_hooks.data(), merged.size() * sizeof(float)));
    // Rows the LoRA does not touch stay bit-identical: GPT-2's k slice of c_attn with q,v,
    // Llama's k_proj with q,v.
    if (c.sites[0] == "q") {
      const int64_t C = c.cfg.hidden;
      const int64_t lo = c.cfg.family == Family::gpt2 ? C * C : 0;
      const int64_t hi = c.cfg.family == Family::gpt2 ? 2 * C * C : w.numel();
      EXPECT_EQ(0, std::memcmp(before.data() + lo, w.data + lo, (hi - lo) * sizeof(float)));
      if (c.cfg.family == Family::gpt2) {
        EXPECT_NE(0, std::memcmp(before.data(), w.data, C * C * sizeof(float)));
      }
    }
  }
}

TEST(Lora, TrainingLeavesTheFrozenBaseBitIdentical) {
  for (const auto& cfg : both_families()) {
    auto m = random_model(cfg, 4);
    std::vector<std::vector<float>> before;
    for (const auto& p : m->params().params()) before.emplace_back(p.data, p.data + p.numel());
    LoraHooks lora(cfg, lora_config({"q", "v"}, 0.05));
    tb::AdamWConfig oc;
    oc.lr = 1e-2f;
    auto opt = tb::AdamW::for_stores({&lora.store()}, oc);
    const auto tokens = tb::test::random_tokens(kB * kT, cfg.vocab_size, 14);
    std::vector<int32_t> targets(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) targets[i] = (i + 1) % kT == 0 ? -100 : tokens[i + 1];
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 8; ++step) {
      m->forward(tokens.data(), kB, kT, &lora, /*training=*/true);
      last = m->lm_loss(targets.data());
      if (step == 0) first = last;
      lora.store().zero_grads();
      m->backward_lm(&lora);
      opt.step(oc.lr);
    }
    EXPECT_LT(last, first) << cfg.model_type << ": training the LoRA must lower the loss";
    for (size_t i = 0; i < before.size(); ++i) {
      const auto& p = m->params().params()[i];
      EXPECT_EQ(p.grad, nullptr) << p.name;
      EXPECT_FALSE(p.trainable) << p.name;
      EXPECT_EQ(0, std::memcmp(before[i].data(), p.data, before[i].size() * sizeof(float))) << p.name;
    }
    double bsum = 0.0;
    for (const auto& p : lora.store().params())
      if (p.name.find("lora_B") != std::string::npos)
        for (int64_t i = 0; i < p.numel(); ++i) bsum += std::fabs(p.data[i]);
    EXPECT_GT(bsum, 0.0);
  }
}

TEST(Lora, BackwardStopsAtTheLowestLoraLayer) {
  for (auto cfg : {tb::test::tiny_gpt2_config(3), tb::test::tiny_llama_config(3)}) {
    auto m = random_model(cfg, 5);
    auto lc = lora_config({"q", "v"});
    lc.layers = {2};
    LoraHooks last(cfg, lc);
    EXPECT_EQ(last.lowest_trainable_layer(3), 2);
    EXPECT_EQ(m->lowest_backward_layer(&last), 2);
    EXPECT_FALSE(last.has_delta(1, cfg.family == Family::gpt2 ? Site::qkv : Site::q));
    lc.layers = {1, 2};
    LoraHooks two(cfg, lc);
    EXPECT_EQ(m->lowest_backward_layer(&two), 1);
    // The LoRA on the last layer still gets its gradient when backward stops above layer 0.
    randomise_b(last, 0.2f, 1);
    const auto tokens = tb::test::random_tokens(kB * 8, cfg.vocab_size, 15);
    EXPECT_LT(tb::test::model_fd_error(*m, last, last.store(), tokens, kB, 8), 2e-2) << cfg.model_type;
  }
}

TEST(Lora, BadConfigurationIsAnInputError) {
  const auto g = tb::test::tiny_gpt2_config();
  const auto l = tb::test::tiny_llama_config();
  EXPECT_THROW(LoraHooks(g, lora_config({"gate"})), tb::InputError);
  EXPECT_THROW(LoraHooks(l, lora_config({"c_attn"})), tb::InputError);
  EXPECT_THROW(LoraHooks(l, lora_config({"qq"})), tb::InputError);
  EXPECT_THROW(LoraHooks(l, lora_config({})), tb::InputError);
  auto lc = lora_config({"q"});
  lc.rank = 0;
  EXPECT_THROW(LoraHooks(l, lc), tb::InputError);
  lc = lora_config({"q"}, 1.0);
  EXPECT_THROW(LoraHooks(l, lc), tb::InputError);
  lc = lora_config({"q"});
  lc.layers = {2};
  EXPECT_THROW(LoraHooks(l, lc), tb::InputError);
  lc.layers = {-1};
  EXPECT_THROW(LoraHooks(l, lc), tb::InputError);
}

double accuracy(const std::vector<tb::methods::Prediction>& p, const std::vector<tb::tasks::Example>& ex) {
  int64_t hit = 0;
  for (size_t i = 0; i < ex.size(); ++i) hit += p[i].label == ex[i].label;
  return static_cast<double>(hit) / static_cast<double>(ex.size());
}

double mean_loss(const tb::methods::Meter& m, bool first_epoch) {
  const size_t per = m.loss_curve.size() / static_cast<size_t>(m.epochs);
  double s = 0.0;
  for (size_t i = 0; i < per; ++i) s += m.loss_curve[first_epoch ? i : m.loss_curve.size() - 1 - i].loss;
  return s / static_cast<double>(per);
}

class LoraMethod : public ::testing::TestWithParam<Family> {};

// Three runs on the separable task with one seed: merged, merged again (must be bit-identical)
// and unmerged (must leave the base bit-identical and predict what the merged model does).
TEST_P(LoraMethod, LearnsMergesAndIsDeterministic) {
  const auto& info = tb::methods::find("lora");
  std::vector<std::vector<double>> scores[3];
  for (int run = 0; run < 3; ++run) {
    tb::testing::MethodFixture f(GetParam());
    const auto& cfg = f.model->config();
    const auto& params = f.model->params().params();
    std::vector<std::vector<float>> before;
    for (const auto& p : params) before.emplace_back(p.data, p.data + p.numel());
    auto ctx = f.context(info, {{"epochs", "8"}, {"lr", "5e-3"}, {"patience", "100"}, {"merge", run == 2 ? "false" : "true"}});
    auto method = info.make();
    method->prepare(ctx);
    ASSERT_EQ(f.meter.status, "ok") << f.meter.status_message;
    EXPECT_LT(mean_loss(f.meter, false), mean_loss(f.meter, true)) << "training did not lower the loss";
    const double dev = accuracy(method->predict(ctx, f.dev), f.dev);
    // Chance is 0.5 and a head on the frozen random body reaches about 0.8.
    EXPECT_GT(dev, 0.9) << "dev accuracy of a LoRA on a separable task";

    const int64_t L = cfg.n_layer, C = cfg.hidden, r = 8;
    const int64_t qd = cfg.n_head * cfg.head_dim, kvd = cfg.n_kv_head * cfg.head_dim;
    EXPECT_EQ(method->trainable_params(), L * r * ((C + qd) + (C + kvd)) + 2 * C + 2);
    const auto dir = f.dir / "adaptation";
    EXPECT_GT(method->save_adaptation(dir), 0);
    const auto saved = tb::SafetensorsFile::open(dir / "adaptation.safetensors");
    EXPECT_EQ(saved.tensors().size(), static_cast<size_t>(2 * 2 * L + 2));
    const std::string a0 = cfg.family == Family::gpt2 ? "transformer.h.0.attn.c_attn.q.lora_A.weight"
                                                      : "model.layers.0.self_attn.q_proj.lora_A.weight";
    EXPECT_EQ(saved.read_f32(a0).size(), static_cast<size_t>(r * C));

    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(params[i].grad, nullptr) << params[i].name;
      const bool same = std::memcmp(before[i].data(), params[i].data, before[i].size() * sizeof(float)) == 0;
      const bool adapted = params[i].name.find("c_attn.weight") != std::string::npos ||
                           params[i].name.find("q_proj.weight") != std::string::npos ||
                           params[i].name.find("v_proj.weight") != std::string::npos;
      // Merged, exactly the q and v weights move; unmerged, nothing does.
      EXPECT_EQ(same, run == 2 || !adapted) << params[i].name << " run " << run;
    }
    EXPECT_EQ(method->changes_base(), run != 2);
    EXPECT_EQ(method->lm_hooks() != nullptr, run == 2);
    for (const auto& p : method->predict(ctx, f.test)) scores[run].push_back(p.scores);
  }
  EXPECT_EQ(scores[0], scores[1]);
  ASSERT_EQ(scores[0].size(), scores[2].size());
  double diff = 0.0;
  for (size_t i = 0; i < scores[0].size(); ++i)
    for (size_t k = 0; k < scores[0][i].size(); ++k) diff = std::max(diff, std::fabs(scores[0][i][k] - scores[2][i][k]));
  EXPECT_LE(diff, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Families, LoraMethod, ::testing::Values(Family::gpt2, Family::llama),
                         [](const auto& info) { return info.param == Family::gpt2 ? "gpt2" : "llama"; });

TEST(LoraMethodOptions, BadOptionsAreInputErrors) {
  const auto& info = tb::methods::find("lora");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"rank", "0"}, {"alpha", "-1"}, {"dropout", "1"}, {"sites", "q,x"}, {"sites", "c_attn"},
           {"layers", "5"}, {"layers", "a"}, {"merge", "maybe"}}) {
    tb::testing::MethodFixture f(Family::llama, 20);
    auto ctx = f.context(info, {{k, v}});
    EXPECT_THROW(info.make()->prepare(ctx), tb::InputError) << k << "=" << v;
  }
}

}  // namespace
