// PEFT adapters (harness/core/peft_io.h, methods/saved.h) against the goldens made by
// tests/reference/make_peft_goldens.py: a LoRA (GPT-2's on the fused c_attn, Llama's with a
// rank_pattern), a prefix and a prompt-tuning adapter on the tiny GPT-2 and Llama models,
// with PyTorch's logits under PEFT's semantics. Also: an adapter tunebench trains, exported
// in PEFT format and read back, predicts exactly as before; bad adapters are one InputError
// naming the file and the key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <random>

#include "harness/base/errors.h"
#include "harness/base/strict_json.h"
#include "harness/core/model_io.h"
#include "harness/core/peft_io.h"
#include "harness/core/safetensors.h"
#include "methods/lora.h"
#include "methods/prefix.h"
#include "methods/saved.h"
#include "methods/softprompt.h"

namespace tb {
namespace {

namespace fs = std::filesystem;
const fs::path kGoldens = fs::path(TB_SOURCE_DIR) / "tests/goldens";
const fs::path kPeft = kGoldens / "peft";

// Logits of the real tokens (B, T, V) of `ids` (B rows of T) with `hooks`.
std::vector<float> real_logits(Model& m, const std::vector<int32_t>& ids, int64_t B, int64_t T, Hooks* hooks) {
  m.forward(ids.data(), B, T, hooks);
  const int64_t V = m.config().vocab_size, Tt = m.seq_len(), Pv = m.virtual_tokens();
  std::vector<float> all(B * Tt * V), out;
  m.logits(all.data());
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), all.begin() + (b * Tt + Pv) * V, all.begin() + (b * Tt + Tt) * V);
  return out;
}

struct Golden {
  std::vector<int32_t> ids;
  int64_t B = 0, T = 0;
};

Golden golden_inputs() {
  const auto j = read_json_file(kPeft / "goldens.json");
  Golden g;
  for (const auto& row : j["input_ids"]) {
    for (const auto& t : row) g.ids.push_back(t.get<int32_t>());
    g.T = static_cast<int64_t>(row.size());
    ++g.B;
  }
  return g;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - double(b[i])));
  return d;
}

class PeftGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(PeftGolden, LogitsMatchPyTorchUnderPeftSemantics) {
  const std::string name = GetParam();
  const std::string model_name = name.substr(0, name.find("-tiny") + 5);
  auto model = load_model(kGoldens / model_name);
  const auto g = golden_inputs();
  const auto st = SafetensorsFile::open(kPeft / "logits.safetensors");
  const auto want = st.read_f32(name);
  const auto base = st.read_f32(model_name + "-base");

  auto saved = methods::load_adaptation(kPeft / name, model->config(), &model->params());
  ASSERT_TRUE(saved.hooks);
  EXPECT_EQ(saved.format, "peft");
  EXPECT_TRUE(saved.info.is_null());
  const auto got = real_logits(*model, g.ids, g.B, g.T, saved.hooks.get());
  EXPECT_LT(max_abs_diff(got, want), 1e-4) << name;
  // The adapter changes the logits far beyond the tolerance (so the comparison means something),
  // and the plain model still matches the base goldens.
  EXPECT_GT(max_abs_diff(want, base), 1e-1) << name;
  EXPECT_LT(max_abs_diff(real_logits(*model, g.ids, g.B, g.T, nullptr), base), 1e-4);

  // A LoRA merged into the weights gives the same logits.
  if (saved.lora) {
    saved.lora->merge_into(*model);
    EXPECT_LT(max_abs_diff(real_logits(*model, g.ids, g.B, g.T, nullptr), want), 1e-4) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Adapters, PeftGolden,
                         ::testing::Values("gpt2-tiny-lora", "gpt2-tiny-prefix", "gpt2-tiny-prompt", "llama-tiny-lora",
                                           "llama-tiny-prefix", "llama-tiny-prompt"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// ---- export and re-read --------------------------------------------------------------------

class PeftRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tb_peft_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// A trained-looking LoRA: B random instead of zero.
void randomise_b(methods::LoraHooks& h, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> d(0.0f, 0.2f);
  for (auto& p : h.store().params())
    if (p.name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = d(gen);
}

TEST_F(PeftRoundTrip, Gpt2PerSliceLoraIsOneBlockStructuredPairOnCAttn) {
  auto a = load_model(kGoldens / "gpt2-tiny");
  auto b = load_model(kGoldens / "gpt2-tiny");
  const auto& cfg = a->config();
  methods::LoraConfig lc;
  lc.rank = 3;
  lc.alpha = 5.0;
  lc.sites = {"q", "v", "o"};
  lc.seed = 11;
  methods::LoraHooks trained(cfg, lc);
  randomise_b(trained, 12);
  const auto pairs = trained.pairs();
  const auto peft = methods::peft_from_lora(pairs, cfg, lc.rank, lc.alpha, 0.0);
  write_peft_adapter(dir_, cfg, peft, "");

  // What PEFT reads: c_attn with rank 2r = 6 and alpha 2·5 (r and lora_alpha of the config,
  // the most common), c_proj at rank 3 / alpha 5 through rank_pattern / alpha_pattern.
  const auto c = read_json_file(dir_ / "adapter_config.json");
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["fan_in_fan_out"], true);
  EXPECT_EQ(c["r"], 6);
  EXPECT_EQ(c["lora_alpha"], 10.0);
  EXPECT_EQ(c["rank_pattern"]["transformer.h.0.attn.c_proj"], 3);
  EXPECT_EQ(c["alpha_pattern"]["transformer.h.1.attn.c_proj"], 5.0);
  const auto st = SafetensorsFile::open(dir_ / "adapter_model.safetensors");
  const auto& B0 = st.at("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
  EXPECT_EQ(B0.shape, (std::vector<int64_t>{3 * cfg.hidden, 6}));
  EXPECT_EQ(st.at("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").shape,
            (std::vector<int64_t>{6, cfg.hidden}));
  // k rows are zero; q rows read only columns 0..2, v rows only 3..5.
  const auto Bv = st.read_f32(B0.name);
  const int64_t C = cfg.hidden;
  double k_rows = 0, q_off = 0, v_off = 0, q_on = 0;
  for (int64_t o = 0; o < 3 * C; ++o)
    for (int64_t j = 0; j < 6; ++j) {
      const double x = std::abs(Bv[o * 6 + j]);
      if (o >= C && o < 2 * C) k_rows += x;
      else if (o < C) (j < 3 ? q_on : q_off) += x;
      else if (j < 3) v_off += x;
    }
  EXPECT_EQ(k_rows, 0.0);
  EXPECT_EQ(q_off, 0.0);
  EXPECT_EQ(v_off, 0.0);
  EXPECT_GT(q_on, 0.0);

  // Read back: the same outputs unmerged, and bit-identical weights merged.
  auto saved = methods::load_adaptation(dir_, cfg, &a->params());
  ASSERT_TRUE(saved.lora);
  const auto g = golden_inputs();
  const auto want = real_logits(*b, g.ids, g.B, g.T, &trained);
  const auto got = real_logits(*a, g.ids, g.B, g.T, saved.lora);
  EXPECT_LT(max_abs_diff(got, want), 1e-5);
  EXPECT_GT(max_abs_diff(want, real_logits(*b, g.ids, g.B, g.T, nullptr)), 1e-2);
  trained.merge_into(*b);
  saved.lora->merge_into(*a);
  for (size_t i = 0; i < a->params().params().size(); ++i) {
    const Param& pa = a->params().params()[i];
    const Param& pb = b->params().params()[i];
    ASSERT_EQ(pa.name, pb.name);
    EXPECT_EQ(0, std::memcmp(pa.data, pb.data, sizeof(float) * pa.numel())) << pa.name;
  }
}

TEST_F(PeftRoundTrip, PrefixAndPromptValuesComeBackExactly) {
  auto m = load_model(kGoldens / "llama-tiny");
  const auto& cfg = m->config();
  methods::PrefixHooks prefix(cfg, 4, /*reparam=*/true, 16, 5);
  prefix.merge();
  PeftAdapter a;
  a.type = PeftType::prefix_tuning;
  a.num_virtual_tokens = 4;
  a.embeddings.assign(prefix.store().at(0).data, prefix.store().at(0).data + prefix.store().at(0).numel());
  write_peft_adapter(dir_ / "prefix", cfg, a, "models/x");
  const auto c = read_json_file(dir_ / "prefix/adapter_config.json");
  EXPECT_EQ(c["token_dim"], cfg.n_kv_head * cfg.head_dim);  // PEFT's grouped-query convention
  EXPECT_EQ(c["num_attention_heads"], cfg.n_kv_head);
  EXPECT_EQ(c["prefix_projection"], false);
  EXPECT_EQ(c["base_model_name_or_path"], "models/x");
  auto saved = methods::load_adaptation(dir_ / "prefix", cfg, &m->params());
  const auto g = golden_inputs();
  EXPECT_EQ(real_logits(*m, g.ids, g.B, g.T, saved.hooks.get()), real_logits(*m, g.ids, g.B, g.T, &prefix));

  methods::SoftPromptHooks prompt(3, cfg.hidden);
  prompt.init_from_vocab(*m, 9);
  a = PeftAdapter{};
  a.type = PeftType::prompt_tuning;
  a.num_virtual_tokens = 3;
  a.embeddings.assign(prompt.prompt(), prompt.prompt() + 3 * cfg.hidden);
  write_peft_adapter(dir_ / "prompt", cfg, a, "");
  auto saved2 = methods::load_adaptation(dir_ / "prompt", cfg, &m->params());
  EXPECT_EQ(real_logits(*m, g.ids, g.B, g.T, saved2.hooks.get()), real_logits(*m, g.ids, g.B, g.T, &prompt));
}

// ---- bad adapters ------------------------------------------------------------------------

class PeftErrors : public PeftRoundTrip {
 protected:
  // A copy of a golden adapter whose config is edited by `edit`.
  fs::path edited(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path d = dir_ / (name + "." + std::to_string(++edits_));
    fs::create_directories(d);
    fs::copy_file(kPeft / name / "adapter_model.safetensors", d / "adapter_model.safetensors");
    auto c = read_json_file(kPeft / name / "adapter_config.json");
    edit(c);
    std::ofstream(d / "adapter_config.json") << c.dump(2);
    return d;
  }
  static std::string error_of(const fs::path& dir, const fs::path& model) {
    auto m = load_model(model);
    try {
      methods::load_adaptation(dir, m->config(), &m->params());
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  int edits_ = 0;
};

TEST_F(PeftErrors, NameTheFileAndTheKey) {
  const auto gpt2 = kGoldens / "gpt2-tiny", llama = kGoldens / "llama-tiny";
  auto err = error_of(edited("llama-tiny-lora", [](auto& c) { c["peft_type"] = "IA3"; }), llama);
  EXPECT_NE(err.find("adapter_config.json: peft_type: 'IA3' is not supported"), std::string::npos) << err;
  err = error_of(edited("llama-tiny-lora", [](auto& c) { c["use_dora"] = true; }), llama);
  EXPECT_NE(err.find("adapter_config.json: use_dora"), std::string::npos) << err;
  err = error_of(edited("llama-tiny-lora", [](auto& c) { c["r"] = 5; }), llama);
  EXPECT_NE(err.find("adapter_model.safetensors: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight: shape (4,48), expected (5,48)"),
            std::string::npos)
      << err;
  // A Llama adapter on GPT-2: its modules do not exist there.
  err = error_of(kPeft / "llama-tiny-lora", gpt2);
  EXPECT_NE(err.find("adapter_model.safetensors: base_model.model.model.layers.0."), std::string::npos) << err;
  EXPECT_NE(err.find("is not a linear layer"), std::string::npos) << err;
  // A GPT-2 prefix on Llama: the key/value width differs.
  err = error_of(kPeft / "gpt2-tiny-prefix", llama);
  EXPECT_NE(err.find("adapter_config.json: token_dim: is 48 but the base model's key/value width"), std::string::npos) << err;
  err = error_of(edited("llama-tiny-prompt", [](auto& c) { c.erase("token_dim"); c["num_virtual_tokens"] = 2; }), llama);
  EXPECT_NE(err.find("adapter_model.safetensors: prompt_embeddings: shape (3,48), expected (2,48)"), std::string::npos) << err;
  err = error_of(dir_ / "nothing-here", llama);
  EXPECT_NE(err.find("no such adaptation directory"), std::string::npos) << err;
}

}  // namespace
}  // namespace tb
