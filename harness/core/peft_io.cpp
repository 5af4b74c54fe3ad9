// PEFT adapter directories (see peft_io.h): adapter_config.json + adapter_model.safetensors.
#include "harness/core/peft_io.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/base/strict_json.h"
#include "harness/core/safetensors.h"

namespace tb {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kModelPrefix = "base_model.model.";

[[noreturn]] void fail(const fs::path& file, const std::string& key, const std::string& msg) {
  throw ModelError(file.string() + ": " + key + ": " + msg);
}

// The linears a LoRA can sit on in this family (GPT-2's q/k/v only as the fused c_attn).
std::vector<Site> whole_sites(const ModelConfig& cfg) {
  if (cfg.family == Family::gpt2) return {Site::qkv, Site::o, Site::up, Site::down};
  return {Site::q, Site::k, Site::v, Site::o, Site::gate, Site::up, Site::down};
}

int site_rank(Site s) { return static_cast<int>(s); }

bool is_null_or_absent(const json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

// PEFT's get_pattern_key: the first pattern p such that the module path matches (.*\.)?(p)$.
const json* pattern_value(const json& cfg, const char* field, const std::string& module, const fs::path& file) {
  if (is_null_or_absent(cfg, field)) return nullptr;
  const json& pat = cfg[field];
  if (!pat.is_object()) fail(file, field, "must be an object of module pattern -> value");
  for (auto it = pat.begin(); it != pat.end(); ++it) {
    std::regex re;
    try {
      re = std::regex("(.*\\.)?(" + it.key() + ")");
    } catch (const std::regex_error&) {
      fail(file, std::string(field) + "." + printable(it.key()), "not a regular expression tunebench can read");
    }
    if (std::regex_match(module, re)) {
      if (!it.value().is_number()) fail(file, std::string(field) + "." + printable(it.key()), "must be a number");
      return &it.value();
    }
  }
  return nullptr;
}

int64_t get_positive_int(const json& j, const char* key, const fs::path& file) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
    fail(file, key, "must be a positive integer");
  return j[key].get<int64_t>();
}

void expect_equal(const json& j, const char* key, int64_t want, const std::string& what, const fs::path& file) {
  if (is_null_or_absent(j, key)) return;
  if (!j[key].is_number_integer() || j[key].get<int64_t>() != want)
    fail(file, key, "is " + j[key].dump() + " but the base model's " + what + " is " + std::to_string(want) +
                        " (an adapter for another base model?)");
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t(1, '(');
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) t += ',';
    t += std::to_string(s[i]);
  }
  t += ')';
  return t;
}

}  // namespace

const char* peft_type_name(PeftType t) {
  switch (t) {
    case PeftType::lora: return "LORA";
    case PeftType::prefix_tuning: return "PREFIX_TUNING";
    default: return "PROMPT_TUNING";
  }
}

bool is_peft_dir(const fs::path& dir) { return fs::is_regular_file(dir / kConfigFile); }

PeftAdapter read_peft_adapter(const fs::path& dir, const ModelConfig& cfg) {
  const fs::path cfg_file = dir / kConfigFile;
  const fs::path st_file = dir / kWeightsFile;
  if (!fs::is_regular_file(cfg_file)) throw ModelError(cfg_file.string() + ": no such file (not a PEFT adapter directory)");
  const json c = read_json_file(cfg_file);
  if (!c.is_object()) fail(cfg_file, "(top level)", "must be a JSON object");
  if (!c.contains("peft_type") || !c["peft_type"].is_string()) fail(cfg_file, "peft_type", "missing or not a string");
  const std::string type = c["peft_type"].get<std::string>();
  PeftAdapter a;
  if (type == "LORA") a.type = PeftType::lora;
  else if (type == "PREFIX_TUNING") a.type = PeftType::prefix_tuning;
  else if (type == "PROMPT_TUNING") a.type = PeftType::prompt_tuning;
  else fail(cfg_file, "peft_type", "'" + printable(type) + "' is not supported (LORA, PREFIX_TUNING, PROMPT_TUNING)");
  if (!is_null_or_absent(c, "task_type") && c["task_type"] != "CAUSAL_LM")
    fail(cfg_file, "task_type", c["task_type"].dump() + " is not supported (CAUSAL_LM)");
  if (!fs::is_regular_file(st_file)) throw ModelError(st_file.string() + ": no such file");
  const auto st = SafetensorsFile::open(st_file);

  const int64_t L = cfg.n_layer, C = cfg.hidden;
  if (a.type != PeftType::lora) {
    a.num_virtual_tokens = get_positive_int(c, "num_virtual_tokens", cfg_file);
    if (a.num_virtual_tokens >= cfg.max_positions)
      fail(cfg_file, "num_virtual_tokens", std::to_string(a.num_virtual_tokens) + " leaves no room in the model's context of " +
                                               std::to_string(cfg.max_positions));
    expect_equal(c, "num_transformer_submodules", 1, "number of transformer submodules (decoder only)", cfg_file);
    expect_equal(c, "num_layers", L, "number of layers", cfg_file);
    int64_t width = 0;
    if (a.type == PeftType::prompt_tuning) {
      expect_equal(c, "token_dim", C, "hidden size", cfg_file);
      width = C;
    } else {
      const int64_t kv = cfg.n_kv_head * cfg.head_dim;
      expect_equal(c, "token_dim", kv, "key/value width (num_key_value_heads x head_dim)", cfg_file);
      expect_equal(c, "num_attention_heads", cfg.n_kv_head, "number of key/value heads", cfg_file);
      width = L * 2 * kv;
    }
    for (const auto& t : st.tensors())
      if (t.name != "prompt_embeddings")
        fail(st_file, printable(t.name), std::string("unexpected tensor (a ") + type + " adapter holds only prompt_embeddings)");
    const TensorInfo* t = st.find("prompt_embeddings");
    if (!t) fail(st_file, "prompt_embeddings", "missing");
    const std::vector<int64_t> want = {a.num_virtual_tokens, width};
    if (t->shape != want)
      fail(st_file, "prompt_embeddings", "shape " + shape_text(t->shape) + ", expected " + shape_text(want) +
                                              " for this base model and num_virtual_tokens");
    a.embeddings.resize(static_cast<size_t>(t->numel()));
    st.read_f32(*t, a.embeddings);
    return a;
  }

  // LoRA.
  a.r = get_positive_int(c, "r", cfg_file);
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number()) fail(cfg_file, "lora_alpha", "missing or not a number");
  a.lora_alpha = c["lora_alpha"].get<double>();
  if (!is_null_or_absent(c, "lora_dropout")) {
    if (!c["lora_dropout"].is_number()) fail(cfg_file, "lora_dropout", "not a number");
    a.lora_dropout = c["lora_dropout"].get<double>();
  }
  if (!is_null_or_absent(c, "use_rslora")) {
    if (!c["use_rslora"].is_boolean()) fail(cfg_file, "use_rslora", "not a boolean");
    a.use_rslora = c["use_rslora"].get<bool>();
  }
  for (const char* flag : {"use_dora", "lora_bias", "use_qalora"})
    if (!is_null_or_absent(c, flag) && c[flag] != false) fail(cfg_file, flag, "is set; tunebench implements plain LoRA only");
  if (!is_null_or_absent(c, "bias") && c["bias"] != "none")
    fail(cfg_file, "bias", c["bias"].dump() + " is not supported (\"none\": tunebench's LoRA trains no biases)");
  for (const char* list : {"modules_to_save", "trainable_token_indices", "target_parameters", "layer_replication"})
    if (!is_null_or_absent(c, list) && !c[list].empty())
      fail(cfg_file, list, "is set; tunebench applies only lora_A/lora_B pairs on linear layers");

  std::map<std::string, std::pair<int, Site>> modules;  // module path -> (layer, site)
  for (int l = 0; l < L; ++l)
    for (Site s : whole_sites(cfg)) modules[site_module(cfg, l, s)] = {l, s};

  struct Pair {
    const TensorInfo* A = nullptr;
    const TensorInfo* B = nullptr;
  };
  std::map<std::pair<int, int>, std::pair<std::string, Pair>> found;  // (layer, site) -> module, tensors
  for (const auto& t : st.tensors()) {
    const std::string& n = t.name;
    const std::string a_sfx = ".lora_A.weight", b_sfx = ".lora_B.weight";
    const bool is_a = n.size() > a_sfx.size() && n.compare(n.size() - a_sfx.size(), a_sfx.size(), a_sfx) == 0;
    const bool is_b = n.size() > b_sfx.size() && n.compare(n.size() - b_sfx.size(), b_sfx.size(), b_sfx) == 0;
    const std::string prefix = kModelPrefix;
    if ((!is_a && !is_b) || n.rfind(prefix, 0) != 0)
      fail(st_file, printable(n), "not a LoRA tensor (expected base_model.model.<module>.lora_A.weight / lora_B.weight)");
    const std::string module = n.substr(prefix.size(), n.size() - prefix.size() - a_sfx.size());
    const auto m = modules.find(module);
    if (m == modules.end())
      fail(st_file, printable(n), "'" + printable(module) + "' is not a linear layer tunebench can adapt in this " +
                                      cfg.model_type + " model (" + std::to_string(L) + " layers)");
    auto& slot = found[{m->second.first, site_rank(m->second.second)}];
    slot.first = module;
    (is_a ? slot.second.A : slot.second.B) = &t;
  }
  if (found.empty()) fail(st_file, "(tensors)", "no LoRA tensors");
  for (const auto& [key, entry] : found) {
    const auto& [module, pair] = entry;
    const std::string base = std::string(kModelPrefix) + module;
    if (!pair.A) fail(st_file, base + ".lora_A.weight", "missing (its lora_B is present)");
    if (!pair.B) fail(st_file, base + ".lora_B.weight", "missing (its lora_A is present)");
    PeftLoraModule pm;
    pm.layer = key.first;
    pm.site = static_cast<Site>(key.second);
    const SiteSlice sl = site_slice(cfg, pm.site);
    pm.in = sl.in_features;
    pm.out = sl.rows;
    int64_t rank = a.r;
    if (const json* v = pattern_value(c, "rank_pattern", module, cfg_file)) {
      if (!v->is_number_integer() || v->get<int64_t>() <= 0) fail(cfg_file, "rank_pattern", "a rank must be a positive integer");
      rank = v->get<int64_t>();
    }
    pm.alpha = a.lora_alpha;
    if (const json* v = pattern_value(c, "alpha_pattern", module, cfg_file)) pm.alpha = v->get<double>();
    pm.rank = rank;
    const std::vector<int64_t> want_a = {rank, pm.in}, want_b = {pm.out, rank};
    if (pair.A->shape != want_a)
      fail(st_file, base + ".lora_A.weight", "shape " + shape_text(pair.A->shape) + ", expected " + shape_text(want_a) +
                                                 " (r from adapter_config.json, in_features from the base model)");
    if (pair.B->shape != want_b)
      fail(st_file, base + ".lora_B.weight", "shape " + shape_text(pair.B->shape) + ", expected " + shape_text(want_b) +
                                                 " (out_features from the base model, r from adapter_config.json)");
    pm.scaling = static_cast<float>(a.use_rslora ? pm.alpha / std::sqrt(static_cast<double>(rank))
                                                 : pm.alpha / static_cast<double>(rank));
    pm.A.resize(static_cast<size_t>(rank * pm.in));
    pm.B.resize(static_cast<size_t>(pm.out * rank));
    st.read_f32(*pair.A, pm.A);
    st.read_f32(*pair.B, pm.B);
    for (float x : pm.A)
      if (!std::isfinite(x)) fail(st_file, base + ".lora_A.weight", "holds a non-finite value");
    for (float x : pm.B)
      if (!std::isfinite(x)) fail(st_file, base + ".lora_B.weight", "holds a non-finite value");
    a.lora.push_back(std::move(pm));
  }
  return a;
}

int64_t write_peft_adapter(const fs::path& dir, const ModelConfig& cfg, const PeftAdapter& a,
                           const std::string& base_model) {
  fs::create_directories(dir);
  json c = {{"peft_type", peft_type_name(a.type)},
            {"task_type", "CAUSAL_LM"},
            {"base_model_name_or_path", base_model.empty() ? json(nullptr) : json(base_model)},
            {"inference_mode", true},
            {"revision", nullptr},
            {"auto_mapping", nullptr}};
  std::vector<TensorToWrite> tensors;
  std::vector<std::string> names;  // storage for the names tensors point to
  const int64_t L = cfg.n_layer, C = cfg.hidden, kv = cfg.n_kv_head * cfg.head_dim;
  if (a.type == PeftType::lora) {
    TB_CHECK(!a.lora.empty(), "PEFT export of a LoRA without modules");
    json targets = json::array(), rank_pattern = json::object(), alpha_pattern = json::object();
    names.reserve(a.lora.size() * 2);
    std::set<std::string> seen;
    for (const auto& m : a.lora) {
      const auto sites = whole_sites(cfg);
      TB_CHECK(std::find(sites.begin(), sites.end(), m.site) != sites.end(),
               "PEFT export: site " << site_name(m.site) << " is not a whole linear of " << cfg.model_type);
      const SiteSlice sl = site_slice(cfg, m.site);
      TB_CHECK(m.in == sl.in_features && m.out == sl.rows && m.A.size() == static_cast<size_t>(m.rank * m.in) &&
                   m.B.size() == static_cast<size_t>(m.out * m.rank),
               "PEFT export: LoRA shapes do not fit the model");
      const std::string module = site_module(cfg, m.layer, m.site);
      TB_CHECK(seen.insert(module).second, "PEFT export: two LoRA pairs on " << module);
      targets.push_back(module);
      if (m.rank != a.r) rank_pattern[module] = m.rank;
      if (m.alpha != a.lora_alpha) alpha_pattern[module] = m.alpha;
      names.push_back(std::string(kModelPrefix) + module + ".lora_A.weight");
      tensors.push_back({names.back(), {m.rank, m.in}, m.A.data(), DType::F32});
      names.push_back(std::string(kModelPrefix) + module + ".lora_B.weight");
      tensors.push_back({names.back(), {m.out, m.rank}, m.B.data(), DType::F32});
    }
    c["r"] = a.r;
    c["lora_alpha"] = a.lora_alpha;
    c["lora_dropout"] = a.lora_dropout;
    c["target_modules"] = targets;
    c["fan_in_fan_out"] = cfg.family == Family::gpt2;  // GPT-2's Conv1D stores (in, out)
    c["bias"] = "none";
    c["use_rslora"] = a.use_rslora;
    c["use_dora"] = false;
    c["modules_to_save"] = nullptr;
    c["init_lora_weights"] = true;
    c["layers_to_transform"] = nullptr;
    c["layers_pattern"] = nullptr;
    c["rank_pattern"] = rank_pattern;
    c["alpha_pattern"] = alpha_pattern;
  } else {
    const int64_t P = a.num_virtual_tokens;
    const bool prompt = a.type == PeftType::prompt_tuning;
    const int64_t width = prompt ? C : L * 2 * kv;
    TB_CHECK(P > 0 && a.embeddings.size() == static_cast<size_t>(P * width), "PEFT export: embeddings do not fit the model");
    c["num_virtual_tokens"] = P;
    c["num_transformer_submodules"] = 1;
    c["num_layers"] = L;
    if (prompt) {
      c["token_dim"] = C;
      c["num_attention_heads"] = cfg.n_head;
      c["prompt_tuning_init"] = "RANDOM";
      c["prompt_tuning_init_text"] = nullptr;
      c["tokenizer_name_or_path"] = nullptr;
    } else {
      // PEFT's grouped-query convention: token_dim = NKV·hs, num_attention_heads = NKV.
      c["token_dim"] = kv;
      c["num_attention_heads"] = cfg.n_kv_head;
      c["encoder_hidden_size"] = kv;
      c["prefix_projection"] = false;  // the stored tensor is the prefix itself
    }
    tensors.push_back({"prompt_embeddings", {P, width}, a.embeddings.data(), DType::F32});
  }
  write_safetensors(dir / kWeightsFile, tensors, {{"format", "pt"}});
  write_file_atomic(dir / kConfigFile, c.dump(2) + "\n");
  return static_cast<int64_t>(fs::file_size(dir / kWeightsFile) + fs::file_size(dir / kConfigFile));
}

}  // namespace tb
