// Golden tests of the model, in the manner of llm.c's test_gpt2: tiny random GPT-2, Llama
// (GQA, untied head) and Qwen2-style (QKV bias, tied) checkpoints in Hugging Face format,
// made by tests/reference/make_goldens.py with float64 PyTorch. The C++ model must match
// logits (1e-4 absolute), hidden states, the loss, every parameter's gradient (1e-3
// relative) and the losses of 3 AdamW steps; KV-cache decoding must reproduce full
// recomputation position by position. Runs from the committed goldens, without torch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/model.h"
#include "harness/core/model_io.h"
#include "harness/core/optimizer.h"
#include "harness/core/safetensors.h"

namespace {

const std::string kGoldens = std::string(TB_SOURCE_DIR) + "/tests/goldens/";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return nlohmann::json::parse(in);
}

std::vector<int32_t> flat_ids(const nlohmann::json& rows, int64_t* B, int64_t* T) {
  std::vector<int32_t> ids;
  *B = static_cast<int64_t>(rows.size());
  *T = static_cast<int64_t>(rows[0].size());
  for (const auto& r : rows)
    for (const auto& v : r) ids.push_back(v.get<int32_t>());
  return ids;
}

double max_abs_diff(const float* a, const std::vector<float>& ref) {
  double m = 0;
  for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - ref[i]));
  return m;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double scale = 1e-6, err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(double(ref[i])));
    err = std::max(err, std::fabs(double(a[i]) - ref[i]));
  }
  return err / scale;
}

struct Case {
  const char* checkpoint;
  const char* goldens;
};

class ModelGolden : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGolden, LogitsHiddenStatesAndLoss) {
  const auto c = GetParam();
  auto model = tb::load_model(kGoldens + c.checkpoint);
  const auto j = read_json(kGoldens + c.goldens + "/goldens.json");
  const auto g = tb::SafetensorsFile::open(kGoldens + c.goldens + "/goldens.safetensors");
  int64_t B, T;
  auto ids = flat_ids(j["input_ids"], &B, &T);
  model->forward(ids.data(), B, T);
  const int64_t V = model->config().vocab_size, L = model->config().n_layer;
  std::vector<float> logits(B * T * V);
  model->logits(logits.data());
  EXPECT_LE(max_abs_diff(logits.data(), g.read_f32("logits")), 1e-4);

  const int64_t n = B * T * model->config().hidden;
  EXPECT_LE(max_abs_diff(model->hidden_state(0), g.read_f32("hidden.embed")), 1e-5);
  for (int64_t l = 1; l < L; ++l)
    EXPECT_LE(max_abs_diff(model->hidden_state(static_cast<int>(l)), g.read_f32("hidden." + std::to_string(l - 1))), 1e-4)
        << "layer " << l;
  EXPECT_LE(max_abs_diff(model->hidden_state(static_cast<int>(L)), g.read_f32("hidden.final_norm")), 1e-4);
  EXPECT_EQ(static_cast<int64_t>(g.read_f32("hidden.final_norm").size()), n);

  auto targets = flat_ids(j["targets"], &B, &T);
  int64_t count = 0;
  const float loss = model->lm_loss(targets.data(), &count);
  EXPECT_EQ(count, j["n_valid_targets"].get<int64_t>());
  EXPECT_NEAR(loss, j["loss"].get<double>(), 1e-5 * std::max(1.0, j["loss"].get<double>()));
}

TEST_P(ModelGolden, KvCacheDecodingMatchesFullRecomputation) {
  const auto c = GetParam();
  auto model = tb::load_model(kGoldens + c.checkpoint);
  const auto j = read_json(kGoldens + c.goldens + "/goldens.json");
  const auto g = tb::SafetensorsFile::open(kGoldens + c.goldens + "/goldens.safetensors");
  int64_t B, T;
  auto ids = flat_ids(j["input_ids_long"], &B, &T);
  const int64_t V = model->config().vocab_size;
  model->forward(ids.data(), B, T);
  std::vector<float> full(B * T * V);
  model->logits(full.data());
  EXPECT_LE(max_abs_diff(full.data(), g.read_f32("logits_long")), 1e-4);

  // A 3-token prompt, then one token at a time.
  tb::KVCache cache(model->config(), B, T);
  const int64_t P0 = 3;
  std::vector<int32_t> step(B * P0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < P0; ++t) step[b * P0 + t] = ids[b * T + t];
  std::vector<float> out(B * P0 * V);
  model->forward_cached(step.data(), B, P0, cache, out.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < P0; ++t)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(out[(b * P0 + t) * V + v], full[(b * T + t) * V + v], 1e-4) << "b" << b << " t" << t;
  std::vector<int32_t> one(B);
  std::vector<float> last(B * V);
  for (int64_t t = P0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) one[b] = ids[b * T + t];
    model->forward_cached(one.data(), B, 1, cache, last.data(), /*last_only=*/true);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(last[b * V + v], full[(b * T + t) * V + v], 1e-4) << "b" << b << " t" << t;
  }
  EXPECT_EQ(cache.len, T);
  EXPECT_THROW(model->forward_cached(one.data(), B, 1, cache, last.data(), true), tb::InputError);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ModelGolden,
                         ::testing::Values(Case{"gpt2-tiny", "gpt2-tiny"}, Case{"llama-tiny", "llama-tiny"},
                                           Case{"qwen2-tiny", "qwen2-tiny"},
                                           Case{"gpt2-tiny-bf16", "gpt2-tiny-bf16"},
                                           Case{"gpt2-tiny-f16", "gpt2-tiny-f16"},
                                           Case{"llama-tiny-sharded", "llama-tiny"}),
                         [](const auto& info) {
                           std::string n = info.param.checkpoint;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

class ModelGradGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelGradGolden, EveryGradientAndThreeAdamWSteps) {
  const std::string name = GetParam();
  auto model = tb::load_model(kGoldens + name);
  const auto j = read_json(kGoldens + name + "/goldens.json");
  const auto g = tb::SafetensorsFile::open(kGoldens + name + "/goldens.safetensors");
  int64_t B, T;
  auto ids = flat_ids(j["input_ids"], &B, &T);
  auto targets = flat_ids(j["targets"], &B, &T);
  auto& store = model->params();
  store.set_all_trainable(true);
  store.allocate_grads();
  model->forward(ids.data(), B, T, nullptr, /*training=*/true);
  model->lm_loss(targets.data());
  model->backward_lm();
  for (const auto& p : store.params()) {
    auto ref = g.read_f32("grad." + p.name);
    std::vector<float> got(p.grad, p.grad + p.numel());
    if (tb::is_conv1d_weight(model->config(), p.name)) {
      // Golden is (in, out); ours is (out, in).
      const int64_t OC = p.shape[0], IC = p.shape[1];
      for (int64_t o = 0; o < OC; ++o)
        for (int64_t i = 0; i < IC; ++i) got[i * OC + o] = p.grad[o * IC + i];
    }
    ASSERT_EQ(got.size(), ref.size()) << p.name;
    EXPECT_LE(rel_err(got, ref), 1e-3) << p.name;
  }

  // Three AdamW steps from the same start, with the script's exact conventions.
  const auto& a = j["adamw"];
  tb::AdamWConfig cfg;
  cfg.lr = a["lr"].get<float>();
  cfg.beta1 = a["betas"][0].get<float>();
  cfg.beta2 = a["betas"][1].get<float>();
  cfg.eps = a["eps"].get<float>();
  cfg.weight_decay = a["weight_decay"].get<float>();
  cfg.clip_norm = a["clip_grad_norm"].get<float>();
  for (const auto& p : store.params()) {
    const bool decayed = std::find(a["decayed_params"].begin(), a["decayed_params"].end(), p.name) !=
                         a["decayed_params"].end();
    EXPECT_EQ(p.decay, decayed) << p.name;
  }
  auto fresh = tb::load_model(kGoldens + name);
  fresh->params().set_all_trainable(true);
  fresh->params().allocate_grads();
  auto opt = tb::AdamW::for_stores({&fresh->params()}, cfg);
  for (int s = 0; s < a["steps"].get<int>(); ++s) {
    fresh->params().zero_grads();
    fresh->forward(ids.data(), B, T, nullptr, true);
    const float loss = fresh->lm_loss(targets.data());
    const double want = a["losses"][s].get<double>();
    EXPECT_NEAR(loss, want, 1e-4 * std::max(1.0, want)) << "step " << s;
    fresh->backward_lm();
    const float norm = opt.step(cfg.lr);
    EXPECT_NEAR(norm, a["grad_norms_before_clip"][s].get<double>(), 1e-3 * a["grad_norms_before_clip"][s].get<double>());
  }
  fresh->forward(ids.data(), B, T);
  EXPECT_NEAR(fresh->lm_loss(targets.data()), a["loss_after"].get<double>(), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ModelGradGolden,
                         ::testing::Values("gpt2-tiny", "llama-tiny", "qwen2-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST(ModelConfig, ParameterCountMatchesClosedForm) {
  for (const char* name : {"gpt2-tiny", "llama-tiny", "qwen2-tiny"}) {
    auto model = tb::load_model(kGoldens + name);
    EXPECT_EQ(model->params().num_params(), tb::count_params(model->config())) << name;
  }
}

}  // namespace
