// The transformer over ops.h, with the hook points of hooks.h: the config parsing, the site
// table (the only place checkpoint tensor names are spelled), the block (block_forward,
// block_backward) and its three callers (forward, backward, forward_cached). Shapes: B batch, T real tokens, Pv virtual tokens (soft prompt),
// Tt = Pv + T rows per sequence, Pp prefix K/V positions, N = B*Tt, C hidden, F MLP width,
// NH/NKV query/key-value heads of size hs, QKV = (NH + 2*NKV)*hs.
#include "harness/core/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"

namespace tb {

const char* site_name(Site s) {
  switch (s) {
    case Site::qkv: return "qkv";
    case Site::q: return "q";
    case Site::k: return "k";
    case Site::v: return "v";
    case Site::o: return "o";
    case Site::gate: return "gate";
    case Site::up: return "up";
    case Site::down: return "down";
  }
  return "?";
}

// ---- config ----------------------------------------------------------------------------

namespace {

const nlohmann::json* field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t get_int(const nlohmann::json& j, const char* name, const std::string& src,
                const int64_t* fallback = nullptr) {
  const auto* f = field(j, name);
  if (!f) {
    if (fallback) return *fallback;
    throw ModelError(src + ": missing field '" + name + "'");
  }
  if (!f->is_number_integer())
    throw ModelError(src + ": field '" + name + "' must be an integer, got " + f->dump());
  return f->get<int64_t>();
}

double get_num(const nlohmann::json& j, const char* name, const std::string& src, double fallback) {
  const auto* f = field(j, name);
  if (!f) return fallback;
  if (!f->is_number()) throw ModelError(src + ": field '" + name + "' must be a number, got " + f->dump());
  return f->get<double>();
}

bool get_bool(const nlohmann::json& j, const char* name, const std::string& src, bool fallback) {
  const auto* f = field(j, name);
  if (!f) return fallback;
  if (!f->is_boolean()) throw ModelError(src + ": field '" + name + "' must be true or false, got " + f->dump());
  return f->get<bool>();
}

int32_t get_token_id(const nlohmann::json& j, const char* name) {
  const auto* f = field(j, name);
  if (f && f->is_number_integer()) return f->get<int32_t>();
  if (f && f->is_array() && !f->empty() && (*f)[0].is_number_integer()) return (*f)[0].get<int32_t>();
  return -1;
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object()) throw ModelError(src + ": config must be a JSON object");
  ModelConfig c;
  const auto* mt = field(j, "model_type");
  if (!mt || !mt->is_string()) throw ModelError(src + ": missing field 'model_type'");
  c.model_type = mt->get<std::string>();
  if (c.model_type == "gpt2") {
    c.family = Family::gpt2;
    c.vocab_size = get_int(j, "vocab_size", src);
    c.hidden = get_int(j, "n_embd", src);
    c.n_layer = get_int(j, "n_layer", src);
    c.n_head = get_int(j, "n_head", src);
    c.n_kv_head = c.n_head;
    if (c.n_head <= 0) throw ModelError(src + ": field 'n_head' must be positive");
    c.head_dim = c.hidden / c.n_head;
    const int64_t inner = 4 * c.hidden;
    c.intermediate = get_int(j, "n_inner", src, &inner);
    c.max_positions = get_int(j, "n_positions", src);
    c.norm_eps = static_cast<float>(get_num(j, "layer_norm_epsilon", src, 1e-5));
    c.tied_embeddings = get_bool(j, "tie_word_embeddings", src, true);
    if (!c.tied_embeddings)
      throw ModelError(src + ": field 'tie_word_embeddings' = false is not supported for gpt2");
    c.qkv_bias = true;
    const auto* act = field(j, "activation_function");
    if (act && (!act->is_string() || (act->get<std::string>() != "gelu_new" &&
                                      act->get<std::string>() != "gelu_pytorch_tanh")))
      throw ModelError(src + ": field 'activation_function' must be gelu_new, got " + act->dump());
    if (c.hidden % std::max<int64_t>(c.n_head, 1) != 0)
      throw ModelError(src + ": field 'n_embd' must be divisible by 'n_head'");
  } else if (c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "mistral") {
    c.family = Family::llama;
    c.vocab_size = get_int(j, "vocab_size", src);
    c.hidden = get_int(j, "hidden_size", src);
    c.n_layer = get_int(j, "num_hidden_layers", src);
    c.n_head = get_int(j, "num_attention_heads", src);
    c.n_kv_head = get_int(j, "num_key_value_heads", src, &c.n_head);
    if (c.n_head <= 0) throw ModelError(src + ": field 'num_attention_heads' must be positive");
    const int64_t hd = c.hidden / c.n_head;
    c.head_dim = get_int(j, "head_dim", src, &hd);
    c.intermediate = get_int(j, "intermediate_size", src);
    c.max_positions = get_int(j, "max_position_embeddings", src);
    c.norm_eps = static_cast<float>(get_num(j, "rms_norm_eps", src, 1e-6));
    c.rope_theta = static_cast<float>(get_num(j, "rope_theta", src, 10000.0));
    c.tied_embeddings = get_bool(j, "tie_word_embeddings", src, c.model_type == "qwen2");
    c.qkv_bias = get_bool(j, "attention_bias", src, c.model_type == "qwen2");
    if (get_bool(j, "mlp_bias", src, false))
      throw ModelError(src + ": field 'mlp_bias' = true is not supported");
    const auto* act = field(j, "hidden_act");
    if (act && (!act->is_string() || act->get<std::string>() != "silu"))
      throw ModelError(src + ": field 'hidden_act' must be silu, got " + act->dump());
    const auto* rs = field(j, "rope_scaling");
    if (rs) throw ModelError(src + ": field 'rope_scaling' is not supported");
  } else {
    throw ModelError(src + ": field 'model_type' = '" + c.model_type +
                     "' is not supported (gpt2, llama, qwen2, mistral)");
  }
  c.bos_token_id = get_token_id(j, "bos_token_id");
  c.eos_token_id = get_token_id(j, "eos_token_id");
  c.validate(src);
  return c;
}

void ModelConfig::validate(const std::string& src) const {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) throw ModelError(src + ": field '" + name + "' must be positive, got " + std::to_string(v));
  };
  const bool g = family == Family::gpt2;
  positive(vocab_size, "vocab_size");
  positive(hidden, g ? "n_embd" : "hidden_size");
  positive(n_layer, g ? "n_layer" : "num_hidden_layers");
  positive(n_head, g ? "n_head" : "num_attention_heads");
  positive(n_kv_head, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(intermediate, g ? "n_inner" : "intermediate_size");
  positive(max_positions, g ? "n_positions" : "max_position_embeddings");
  // Bounds far above any real checkpoint, so every size computed from them (parameter
  // counts, buffer sizes) stays exact in 64 bits.
  auto at_most = [&](int64_t v, int64_t limit, const char* name) {
    if (v > limit)
      throw ModelError(src + ": field '" + name + "' = " + std::to_string(v) + " is beyond what tunebench supports (at most " +
                       std::to_string(limit) + ")");
  };
  at_most(vocab_size, int64_t{1} << 31, "vocab_size");
  at_most(hidden, int64_t{1} << 20, g ? "n_embd" : "hidden_size");
  at_most(n_layer, int64_t{1} << 12, g ? "n_layer" : "num_hidden_layers");
  at_most(n_head, int64_t{1} << 16, g ? "n_head" : "num_attention_heads");
  at_most(head_dim, int64_t{1} << 16, "head_dim");
  at_most(n_head * head_dim, int64_t{1} << 20, "num_attention_heads × head_dim");
  at_most(intermediate, int64_t{1} << 22, g ? "n_inner" : "intermediate_size");
  at_most(max_positions, int64_t{1} << 24, g ? "n_positions" : "max_position_embeddings");
  if (n_head % n_kv_head != 0)
    throw ModelError(src + ": field 'num_key_value_heads' must divide 'num_attention_heads'");
  if (family == Family::llama && head_dim % 2 != 0)
    throw ModelError(src + ": field 'head_dim' must be even for rotary embeddings");
  if (!(norm_eps > 0.0f)) throw ModelError(src + ": norm epsilon must be positive");
  if (!(rope_theta > 0.0f)) throw ModelError(src + ": field 'rope_theta' must be positive");
}

nlohmann::json ModelConfig::to_hf_json() const {
  nlohmann::json j;
  if (family == Family::gpt2) {
    j = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"},
         {"vocab_size", vocab_size}, {"n_embd", hidden}, {"n_layer", n_layer},
         {"n_head", n_head}, {"n_inner", intermediate}, {"n_positions", max_positions},
         {"n_ctx", max_positions}, {"layer_norm_epsilon", norm_eps},
         {"activation_function", "gelu_new"}, {"tie_word_embeddings", true}};
  } else {
    j = {{"architectures", {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
         {"model_type", model_type}, {"vocab_size", vocab_size}, {"hidden_size", hidden},
         {"num_hidden_layers", n_layer}, {"num_attention_heads", n_head},
         {"num_key_value_heads", n_kv_head}, {"head_dim", head_dim},
         {"intermediate_size", intermediate}, {"max_position_embeddings", max_positions},
         {"rms_norm_eps", norm_eps}, {"rope_theta", rope_theta}, {"hidden_act", "silu"},
         {"tie_word_embeddings", tied_embeddings}, {"attention_bias", qkv_bias}};
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "float32";
  return j;
}

BlockConfig BlockConfig::from(const ModelConfig& c) {
  BlockConfig b;
  if (c.family == Family::gpt2) {
    b.norm = NormKind::layernorm;
    b.mlp = MlpKind::gelu;
    b.positions = PositionKind::learned;
    b.fused_qkv = true;
    b.linear_bias = true;
    b.qkv_bias = true;
  } else {
    b.norm = NormKind::rmsnorm;
    b.mlp = MlpKind::swiglu;
    b.positions = PositionKind::rope;
    b.fused_qkv = false;
    b.linear_bias = false;
    b.qkv_bias = c.qkv_bias;
  }
  return b;
}

int64_t count_params(const ModelConfig& c) {
  const int64_t C = c.hidden, F = c.intermediate, V = c.vocab_size, L = c.n_layer;
  const int64_t q = c.n_head * c.head_dim, kv = c.n_kv_head * c.head_dim;
  if (c.family == Family::gpt2) {
    const int64_t per = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * F + F) + (F * C + C);
    return V * C + c.max_positions * C + L * per + 2 * C;
  }
  int64_t per = C + C * q + 2 * C * kv + q * C + C + 3 * C * F;
  if (c.qkv_bias) per += q + 2 * kv;
  return V * C + L * per + C + (c.tied_embeddings ? 0 : V * C);
}

// ---- parameters ------------------------------------------------------------------------

// One block's parameters: its two norms and, by hook site, the weight and bias of every
// linear the family runs (null for a site the family computes otherwise or a missing bias).
struct Model::LayerParams {
  Param *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;
  Param* w[kNumSites] = {};
  Param* b[kNumSites] = {};
  Param* weight(Site s) const { return w[static_cast<int>(s)]; }
  Param* bias(Site s) const { return b[static_cast<int>(s)]; }
};

// What one block's training forward saves for its backward. fc1 is the first MLP linear's
// output (the gate when gated, else up), fc2 the up output of a gated MLP, mlpin the
// activation output (the down projection's input).
struct LayerActs {
  std::vector<float> ln1, ln1_mean, ln1_rstd, qkv, att, atty, attproj, res1;
  std::vector<float> ln2, ln2_mean, ln2_rstd, fc1, fc2, mlpin, mlpproj, res2, pk, pv;
};

// Where one block's forward writes (see Model::block_forward): a training forward points
// them at the layer's LayerActs, cached decoding at one set of scratch buffers every layer
// reuses. Shapes for N = B*Tt rows attending to P + Tt positions.
struct Model::BlockBufs {
  float *ln1, *ln1_mean, *ln1_rstd;   // (N,C), (N), (N); the mean is unused by RMSNorm
  float* qkv;                          // (N,QKV): fused rows, or the q, k, v blocks one after another
  float *att, *atty, *attproj, *res1;  // (B,NH,Tt,P+Tt), (N,NH*hs), (N,C), (N,C)
  float *ln2, *ln2_mean, *ln2_rstd;    // as ln1
  float *fc1, *fc2, *mlpin, *mlpproj;  // (N,F), (N,F) when gated, (N,F), (N,C)
};

// The keys and values a block's attention reads besides its own rows, and where it leaves
// its own. P positions come before this call's rows (they also offset the positions of its
// rows): a prefix shared by the batch in training, the filled part of the KV cache in
// decoding, which the block then appends its keys and values to.
struct Model::KVSink {
  const float* pk = nullptr;  // (NKV,P,hs) per batch block (see ops::AttentionShape), null when P == 0
  const float* pv = nullptr;
  int64_t P = 0;
  int64_t bstride = 0, hstride = 0;  // ops::AttentionShape::extra_bstride, extra_hstride
  float* cache_k = nullptr;          // (B,NKV,S,hs), or null: keep nothing
  float* cache_v = nullptr;
  int64_t S = 0;
};

struct Model::Acts {
  std::vector<LayerActs> layers;
  std::vector<float> encoded, lnf, lnf_mean, lnf_rstd, vt;
  // The MLP's matmul inputs (ln2 output; GELU or SwiGLU output) are saved per layer only
  // when backward needs them: a trainable MLP weight or a delta hook on that site. Otherwise
  // every layer computes into these shared buffers (LoRA on attention, heads, inference).
  std::vector<float> ln2_shared, mlpin_shared;
  std::vector<int32_t> tokens;
  // backward scratch, reused by every layer
  std::vector<float> dres, dln, dqkv, datty, dproj, dfc1, dfc2, dmlpin, dscratch, dpk, dpv;
  int64_t B = -1, Tt = -1, Pp = -1;
  bool backward_ready = false;
};

Model::Model(const ModelConfig& cfg) : cfg_(cfg), acts_(std::make_unique<Acts>()) {
  cfg_.validate("model config");
  block_ = BlockConfig::from(cfg_);
  declare_params();
  params_.allocate();
  bind_params();
}

Model::~Model() = default;

// ---- the site table --------------------------------------------------------------------

namespace {

// The checkpoint name of the linear computing hook site `s`, relative to the layer prefix;
// null where the family has no such linear.
const char* linear_module(Family f, Site s) {
  if (f == Family::gpt2) {
    switch (s) {
      case Site::qkv: return "attn.c_attn";
      case Site::o: return "attn.c_proj";
      case Site::up: return "mlp.c_fc";
      case Site::down: return "mlp.c_proj";
      default: return nullptr;
    }
  }
  switch (s) {
    case Site::q: return "self_attn.q_proj";
    case Site::k: return "self_attn.k_proj";
    case Site::v: return "self_attn.v_proj";
    case Site::o: return "self_attn.o_proj";
    case Site::gate: return "mlp.gate_proj";
    case Site::up: return "mlp.up_proj";
    case Site::down: return "mlp.down_proj";
    default: return nullptr;
  }
}

// The user-facing alias of the fused q,k,v linear: GPT-2's module name.
constexpr const char* kFusedQkvModule = "c_attn";

}  // namespace

bool has_site(const ModelConfig& cfg, Site s) {
  if (cfg.family == Family::gpt2) return s != Site::gate;
  return s != Site::qkv;
}

SiteSlice site_slice(const ModelConfig& cfg, Site s) {
  if (!has_site(cfg, s))
    throw InputError(std::string("site ") + site_name(s) + ": a " + cfg.model_type + " model has no such linear");
  const int64_t C = cfg.hidden, F = cfg.intermediate;
  const int64_t qd = cfg.n_head * cfg.head_dim, kvd = cfg.n_kv_head * cfg.head_dim;
  auto whole = [](Site site, int64_t out, int64_t in) { return SiteSlice{site, 0, out, out, in}; };
  if (cfg.family == Family::gpt2) {
    switch (s) {
      case Site::qkv: return whole(Site::qkv, 3 * C, C);
      case Site::q: return SiteSlice{Site::qkv, 0, C, 3 * C, C};
      case Site::k: return SiteSlice{Site::qkv, C, C, 3 * C, C};
      case Site::v: return SiteSlice{Site::qkv, 2 * C, C, 3 * C, C};
      case Site::o: return whole(Site::o, C, C);
      case Site::up: return whole(Site::up, F, C);
      default: return whole(Site::down, C, F);
    }
  }
  switch (s) {
    case Site::q: return whole(Site::q, qd, C);
    case Site::k: return whole(Site::k, kvd, C);
    case Site::v: return whole(Site::v, kvd, C);
    case Site::o: return whole(Site::o, C, qd);
    case Site::gate: return whole(Site::gate, F, C);
    case Site::up: return whole(Site::up, F, C);
    default: return whole(Site::down, C, F);
  }
}

std::vector<Site> sites_from_name(const ModelConfig& cfg, const std::string& name, const std::string& what) {
  if (name == site_name(Site::qkv) || name == kFusedQkvModule) {
    if (!has_site(cfg, Site::qkv))
      throw InputError(what + ": " + name + " is a fused q,k,v linear; this " + cfg.model_type +
                       " model has separate q,k,v");
    return {Site::q, Site::k, Site::v};
  }
  for (Site s : {Site::q, Site::k, Site::v, Site::o, Site::gate, Site::up, Site::down}) {
    if (name != site_name(s)) continue;
    if (!has_site(cfg, s)) throw InputError(what + ": " + cfg.model_type + " has no " + name + " projection");
    return {s};
  }
  throw InputError(what + ": unknown site '" + name + "' (known: q,k,v,o,gate,up,down; qkv or " +
                   kFusedQkvModule + " = q,k,v on a fused family)");
}

std::string layer_prefix(const ModelConfig& cfg, int layer) {
  return (cfg.family == Family::gpt2 ? "transformer.h." : "model.layers.") + std::to_string(layer) + ".";
}

std::string site_module(const ModelConfig& cfg, int layer, Site s) {
  return layer_prefix(cfg, layer) + linear_module(cfg.family, site_slice(cfg, s).hook_site);
}

// ---- parameters ------------------------------------------------------------------------

void Model::declare_params() {
  const int64_t C = cfg_.hidden, F = cfg_.intermediate, V = cfg_.vocab_size;
  const int64_t q = cfg_.n_head * cfg_.head_dim, kv = cfg_.n_kv_head * cfg_.head_dim;
  // Decay group: every matrix (embeddings included, as nanoGPT); no decay for vectors.
  auto mat = [&](const std::string& n, std::vector<int64_t> s) { params_.declare(n, std::move(s), true); };
  auto vec = [&](const std::string& n, int64_t d) { params_.declare(n, {d}, false); };
  const Family f = cfg_.family;
  // A linear's weight (out, in) and, with `bias`, its bias (out).
  auto lin = [&](const std::string& p, Site s, int64_t out, int64_t in, bool bias) {
    const std::string m = p + linear_module(f, s);
    mat(m + ".weight", {out, in});
    if (bias) vec(m + ".bias", out);
  };
  if (f == Family::gpt2) {
    mat("transformer.wte.weight", {V, C});
    mat("transformer.wpe.weight", {cfg_.max_positions, C});
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = layer_prefix(cfg_, l);
      vec(p + "ln_1.weight", C);
      vec(p + "ln_1.bias", C);
      lin(p, Site::qkv, 3 * C, C, block_.qkv_bias);
      lin(p, Site::o, C, C, block_.linear_bias);
      vec(p + "ln_2.weight", C);
      vec(p + "ln_2.bias", C);
      lin(p, Site::up, F, C, block_.linear_bias);
      lin(p, Site::down, C, F, block_.linear_bias);
    }
    vec("transformer.ln_f.weight", C);
    vec("transformer.ln_f.bias", C);
  } else {
    mat("model.embed_tokens.weight", {V, C});
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = layer_prefix(cfg_, l);
      vec(p + "input_layernorm.weight", C);
      lin(p, Site::q, q, C, false);
      lin(p, Site::k, kv, C, false);
      lin(p, Site::v, kv, C, false);
      if (block_.qkv_bias) {
        vec(p + linear_module(f, Site::q) + ".bias", q);
        vec(p + linear_module(f, Site::k) + ".bias", kv);
        vec(p + linear_module(f, Site::v) + ".bias", kv);
      }
      lin(p, Site::o, C, q, block_.linear_bias);
      vec(p + "post_attention_layernorm.weight", C);
      lin(p, Site::gate, F, C, block_.linear_bias);
      lin(p, Site::up, F, C, block_.linear_bias);
      lin(p, Site::down, C, F, block_.linear_bias);
    }
    vec("model.norm.weight", C);
    if (!cfg_.tied_embeddings) mat("lm_head.weight", {V, C});
  }
}

void Model::bind_params() {
  layers_.assign(cfg_.n_layer, LayerParams{});
  const Family f = cfg_.family;
  auto P = [&](const std::string& n) { return &params_.get(n); };
  // Every linear of a layer, by hook site.
  auto linears = [&](LayerParams& L, const std::string& p) {
    for (int i = 0; i < kNumSites; ++i) {
      const char* m = linear_module(f, static_cast<Site>(i));
      if (!m) continue;
      L.w[i] = &params_.get(p + m + ".weight");
      L.b[i] = params_.find(p + m + ".bias");
    }
  };
  if (f == Family::gpt2) {
    wte_ = P("transformer.wte.weight");
    wpe_ = P("transformer.wpe.weight");
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = layer_prefix(cfg_, l);
      auto& L = layers_[l];
      L.ln1_w = P(p + "ln_1.weight");
      L.ln1_b = P(p + "ln_1.bias");
      L.ln2_w = P(p + "ln_2.weight");
      L.ln2_b = P(p + "ln_2.bias");
      linears(L, p);
    }
    lnf_w_ = P("transformer.ln_f.weight");
    lnf_b_ = P("transformer.ln_f.bias");
    lm_head_ = wte_;
  } else {
    wte_ = P("model.embed_tokens.weight");
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = layer_prefix(cfg_, l);
      auto& L = layers_[l];
      L.ln1_w = P(p + "input_layernorm.weight");
      L.ln2_w = P(p + "post_attention_layernorm.weight");
      linears(L, p);
    }
    lnf_w_ = P("model.norm.weight");
    lm_head_ = cfg_.tied_embeddings ? wte_ : P("lm_head.weight");
  }
  layer_of_.clear();
  for (int l = 0; l < cfg_.n_layer; ++l)
    for (Param* p : layer_params(l)) layer_of_[p] = l;
}

std::vector<Param*> Model::layer_params(int layer) const {
  TB_CHECK(layer >= 0 && layer < cfg_.n_layer, "layer " << layer << " of " << cfg_.n_layer);
  const auto& P = layers_[layer];
  std::vector<Param*> out;
  for (Param* p : {P.ln1_w, P.ln1_b, P.ln2_w, P.ln2_b})
    if (p) out.push_back(p);
  for (int i = 0; i < kNumSites; ++i)
    for (Param* p : {P.w[i], P.b[i]})
      if (p) out.push_back(p);
  return out;
}

int Model::layer_of(const Param& p) const {
  const auto it = layer_of_.find(&p);
  return it == layer_of_.end() ? -1 : it->second;
}

std::vector<Param*> Model::final_norm_params() const {
  std::vector<Param*> out = {lnf_w_};
  if (lnf_b_) out.push_back(lnf_b_);
  return out;
}

SiteRef Model::site(int layer, Site s) const {
  TB_CHECK(layer >= 0 && layer < cfg_.n_layer, "site of layer " << layer << " of " << cfg_.n_layer);
  const SiteSlice slice = site_slice(cfg_, s);
  const auto& P = layers_[layer];
  return {P.weight(slice.hook_site), P.bias(slice.hook_site), slice};
}

void Model::init_random(uint64_t seed, float std) {
  std::mt19937_64 gen(seed);
  const float proj_std = std / std::sqrt(2.0f * static_cast<float>(cfg_.n_layer));
  for (auto& p : params_.params()) {
    const int64_t n = p.numel();
    const bool is_norm = p.name.find("ln_") != std::string::npos ||
                         p.name.find("layernorm") != std::string::npos ||
                         p.name.find("norm.weight") != std::string::npos;
    if (p.shape.size() == 1) {
      std::fill(p.data, p.data + n, is_norm && p.name.find(".bias") == std::string::npos ? 1.0f : 0.0f);
      continue;
    }
    const bool residual_out = p.name.find("c_proj.weight") != std::string::npos ||
                              p.name.find("o_proj.weight") != std::string::npos ||
                              p.name.find("down_proj.weight") != std::string::npos;
    std::normal_distribution<float> d(0.0f, residual_out ? proj_std : std);
    for (int64_t i = 0; i < n; ++i) p.data[i] = d(gen);
  }
  params_.touch_all();
}

// ---- helpers ---------------------------------------------------------------------------

namespace {

void fit(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) == n) return;
  if (n == 0) {
    std::vector<float>().swap(v);  // release the memory, not just the size
    return;
  }
  v.assign(static_cast<size_t>(n), 0.0f);
}

void zero(std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); }

}  // namespace

void Model::ensure_acts(int64_t B, int64_t Tt, int64_t Pp) {
  Acts& a = *acts_;
  if (a.B == B && a.Tt == Tt && a.Pp == Pp) return;
  const int64_t N = B * Tt, C = cfg_.hidden, F = cfg_.intermediate, NH = cfg_.n_head;
  const int64_t hs = cfg_.head_dim, S = Pp + Tt, QKV = cfg_.qkv_dim();
  const int64_t pkv = cfg_.n_kv_head * Pp * hs;
  a.layers.resize(cfg_.n_layer);
  for (auto& L : a.layers) {
    fit(L.ln1, N * C); fit(L.ln1_mean, N); fit(L.ln1_rstd, N);
    fit(L.qkv, N * QKV); fit(L.att, B * NH * Tt * S); fit(L.atty, N * NH * hs);
    fit(L.attproj, N * C); fit(L.res1, N * C);
    fit(L.ln2_mean, N); fit(L.ln2_rstd, N);
    fit(L.fc1, N * F);
    if (block_.mlp == MlpKind::swiglu) fit(L.fc2, N * F);  // SwiGLU backward reads gate and up
    // ln2 and mlpin (the down projection's input) are sized per forward.
    fit(L.mlpproj, N * C); fit(L.res2, N * C);
    fit(L.pk, pkv); fit(L.pv, pkv);
  }
  fit(a.encoded, N * C); fit(a.lnf, N * C); fit(a.lnf_mean, N); fit(a.lnf_rstd, N);
  fit(a.ln2_shared, N * C);
  fit(a.mlpin_shared, N * F);
  // Backward scratch is sized lazily by backward() so inference never pays for it.
  a.backward_ready = false;
  a.B = B;
  a.Tt = Tt;
  a.Pp = Pp;
}

void Model::release_activations() {
  acts_ = std::make_unique<Acts>();
  for (auto* v : {&logits_buf_, &dlogits_buf_, &dfinal_buf_}) std::vector<float>().swap(*v);
  loss_targets_.clear();
  B_ = T_ = Tt_ = Pv_ = Pp_ = 0;
  trained_forward_ = false;
}

int64_t Model::activation_bytes() const {
  const Acts& a = *acts_;
  int64_t n = 0;
  auto add = [&](const std::vector<float>& v) { n += static_cast<int64_t>(v.size()); };
  for (const auto& L : a.layers) {
    for (auto* v : {&L.ln1, &L.ln1_mean, &L.ln1_rstd, &L.qkv, &L.att, &L.atty, &L.attproj, &L.res1,
                    &L.ln2, &L.ln2_mean, &L.ln2_rstd, &L.fc1, &L.fc2, &L.mlpin, &L.mlpproj, &L.res2,
                    &L.pk, &L.pv})
      add(*v);
  }
  for (auto* v : {&a.ln2_shared, &a.mlpin_shared, &a.encoded, &a.lnf, &a.lnf_mean, &a.lnf_rstd, &a.dres, &a.dln, &a.dqkv, &a.datty,
                  &a.dproj, &a.dfc1, &a.dfc2, &a.dmlpin, &a.dscratch, &a.dpk, &a.dpv})
    add(*v);
  return n * 4 + static_cast<int64_t>((logits_buf_.size() + dlogits_buf_.size()) * 4);
}

void Model::norm_forward(float* out, float* mean, float* rstd, const float* x, const Param* w,
                         const Param* b, int64_t N) const {
  switch (block_.norm) {
    case NormKind::layernorm:
      ops::layernorm_forward(out, mean, rstd, x, w->data, b->data, N, cfg_.hidden, cfg_.norm_eps);
      break;
    case NormKind::rmsnorm:
      ops::rmsnorm_forward(out, rstd, x, w->data, N, cfg_.hidden, cfg_.norm_eps);
      break;
  }
}

void Model::norm_backward(float* dx, const Param* w, const Param* b, const float* dout,
                          const float* x, const float* mean, const float* rstd, int64_t N) const {
  switch (block_.norm) {
    case NormKind::layernorm:
      ops::layernorm_backward(dx, w->grad, b->grad, dout, x, w->data, mean, rstd, N, cfg_.hidden);
      break;
    case NormKind::rmsnorm:
      ops::rmsnorm_backward(dx, w->grad, dout, x, w->data, rstd, N, cfg_.hidden);
      break;
  }
  w->grad_fresh = false;
  if (b) b->grad_fresh = false;
}

Precision parse_precision(const std::string& text, const std::string& what) {
  if (text == "f32") return Precision::f32;
  if (text == "bf16") return Precision::bf16;
  throw InputError(what + ": '" + text + "' is not a precision (f32 | bf16)");
}

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "f32"; }

void Model::set_precision(Precision p) {
  if (p == precision_) return;
  if (p == Precision::bf16) {
    if (!dnn::info().bf16_supported)
      throw InputError("precision bf16: this CPU has no native bf16 dot products (AVX512-BF16 or "
                       "AMX) for oneDNN to use; run with f32");
    // The matmul weights: every 2-D parameter except learned positions (an embedding table
    // used by lookup only). A tied wte is the LM head, so it gets a copy too.
    const Param* wpe = wpe_;
    const Param* wte = wte_;
    const Param* head = lm_head_;
    params_.enable_bf16([wpe, wte, head](const Param& q) {
      if (&q == wpe) return false;
      if (&q == wte) return wte == head;
      return q.shape.size() == 2;
    });
  } else {
    params_.disable_bf16();
  }
  precision_ = p;
}

namespace {
// 2·M·N·K of one product.
double mm_flops(int64_t M, int64_t N, int64_t K) {
  return 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
}
// Attention over B sequences of T query rows attending to L = prefix + T keys: the score
// and value products, full (B,NH,T,L) blocks (the masked half included).
double attention_flops(int64_t B, int64_t NH, int64_t T, int64_t L, int64_t hs) {
  return 2.0 * mm_flops(B * NH * T, L, hs);
}
}  // namespace

double Model::forward_flops(const ModelConfig& c, int64_t B, int64_t T) {
  const int64_t N = B * T, C = c.hidden, F = c.intermediate, hs = c.head_dim;
  const int mlp_linears = BlockConfig::from(c).mlp == MlpKind::swiglu ? 3 : 2;
  const double proj = mm_flops(N, c.qkv_dim(), C) + mm_flops(N, C, c.n_head * hs) + mlp_linears * mm_flops(N, F, C);
  return static_cast<double>(c.n_layer) * (proj + attention_flops(B, c.n_head, T, T, hs));
}

void Model::lm_head_forward(float* out, const float* x, int64_t N) const {
  flops_ += mm_flops(N, cfg_.vocab_size, cfg_.hidden);
  if (precision_ == Precision::bf16)
    ops::linear_forward_bf16(out, x, lm_head_->bf16_data(), nullptr, N, cfg_.hidden, cfg_.vocab_size);
  else
    ops::linear_forward(out, x, lm_head_->data, nullptr, N, cfg_.hidden, cfg_.vocab_size);
}

void Model::lm_head_backward(float* dx, const float* dlogits, const float* x, int64_t N) const {
  flops_ += mm_flops(N, cfg_.vocab_size, cfg_.hidden) * ((dx ? 1 : 0) + (lm_head_->grad ? 1 : 0));
  if (precision_ == Precision::bf16)
    ops::linear_backward_bf16(dx, lm_head_->grad, nullptr, dlogits, x, lm_head_->bf16_data(), N,
                              cfg_.hidden, cfg_.vocab_size, lm_head_->grad_fresh);
  else
    ops::linear_backward(dx, lm_head_->grad, nullptr, dlogits, x, lm_head_->data, N, cfg_.hidden,
                         cfg_.vocab_size, lm_head_->grad_fresh);
  lm_head_->grad_fresh = false;
}

void Model::linear_forward(int layer, Site site, float* y, const float* x, const Param* w,
                           const Param* b, int64_t N, int64_t IC, int64_t OC, Hooks* hooks,
                           bool training) const {
  flops_ += mm_flops(N, OC, IC);
  if (precision_ == Precision::bf16)
    ops::linear_forward_bf16(y, x, w->bf16_data(), b ? b->data : nullptr, N, IC, OC);
  else
    ops::linear_forward(y, x, w->data, b ? b->data : nullptr, N, IC, OC);
  if (hooks && hooks->has_delta(layer, site)) hooks->delta_forward(layer, site, y, x, N, IC, OC, training);
}

void Model::linear_backward(int layer, Site site, float* dx, const float* dy, const float* x,
                            const Param* w, const Param* b, int64_t N, int64_t IC, int64_t OC,
                            Hooks* hooks) const {
  // x is null when the forward did not save this input (nothing needed it, see Acts).
  TB_CHECK(x || (!w->grad && !(hooks && hooks->has_delta(layer, site))),
           "backward needs the input of " << w->name << ", which the forward did not save");
  flops_ += mm_flops(N, OC, IC) * ((dx ? 1 : 0) + (w->grad ? 1 : 0));
  if (precision_ == Precision::bf16)
    ops::linear_backward_bf16(dx, w->grad, b ? b->grad : nullptr, dy, x, w->bf16_data(), N, IC, OC, w->grad_fresh);
  else
    ops::linear_backward(dx, w->grad, b ? b->grad : nullptr, dy, x, w->data, N, IC, OC, w->grad_fresh);
  w->grad_fresh = false;
  if (b) b->grad_fresh = false;
  if (hooks && hooks->has_delta(layer, site)) hooks->delta_backward(layer, site, dx, dy, x, N, IC, OC);
}

// ---- the block ------------------------------------------------------------------------

namespace {
// A saved activation, or null when the forward kept none (see Model::Acts).
const float* saved(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// q, k and v inside a (N,QKV) buffer: one fused linear's rows (q | k | v per token) or the
// three linears' outputs one after another; ld is the token stride.
template <typename F>
struct QkvView {
  F *q, *k, *v;
  int64_t q_ld, kv_ld;
};
template <typename F>
QkvView<F> qkv_view(F* base, bool fused, int64_t N, int64_t NH, int64_t NKV, int64_t hs) {
  if (fused) {
    const int64_t ld = (NH + 2 * NKV) * hs;
    return {base, base + NH * hs, base + (NH + NKV) * hs, ld, ld};
  }
  return {base, base + N * NH * hs, base + N * (NH + NKV) * hs, NH * hs, NKV * hs};
}
}  // namespace

void Model::embed(float* out, const int32_t* tokens, int64_t B, int64_t T, int64_t Pv, const float* vt,
                  int64_t pos0) const {
  const int64_t C = cfg_.hidden, Tt = Pv + T;
  const float* wpe = block_.positions == PositionKind::learned ? wpe_->data : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    float* row = out + b * Tt * C;
    for (int64_t p = 0; p < Pv; ++p)
      for (int64_t c = 0; c < C; ++c)
        row[p * C + c] = wpe ? vt[p * C + c] + wpe[(pos0 + p) * C + c] : vt[p * C + c];
    ops::embedding_forward(row + Pv * C, tokens + b * T, wte_->data, wpe, 1, T, C, pos0 + Pv);
  }
}

void Model::block_forward(int layer, float* out, const float* x, const BlockBufs& A, const KVSink& kv,
                          int64_t B, int64_t Tt, Hooks* hooks, bool training) const {
  const int64_t C = cfg_.hidden, F = cfg_.intermediate, NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int64_t hs = cfg_.head_dim, N = B * Tt;
  const auto& P = layers_[layer];
  auto linear = [&](Site site, float* y, const float* in, int64_t IC, int64_t OC) {
    linear_forward(layer, site, y, in, P.weight(site), P.bias(site), N, IC, OC, hooks, training);
  };

  // Attention sublayer: res1 = x + o(attention(q, k, v of norm1(x))).
  norm_forward(A.ln1, A.ln1_mean, A.ln1_rstd, x, P.ln1_w, P.ln1_b, N);
  const auto qkv = qkv_view(A.qkv, block_.fused_qkv, N, NH, NKV, hs);
  if (block_.fused_qkv) {
    linear(Site::qkv, A.qkv, A.ln1, C, cfg_.qkv_dim());
  } else {
    linear(Site::q, qkv.q, A.ln1, C, NH * hs);
    linear(Site::k, qkv.k, A.ln1, C, NKV * hs);
    linear(Site::v, qkv.v, A.ln1, C, NKV * hs);
  }
  if (block_.positions == PositionKind::rope) {
    ops::rope_forward(qkv.q, qkv.q, B, Tt, NH, hs, qkv.q_ld, cfg_.rope_theta, kv.P);
    ops::rope_forward(qkv.k, qkv.k, B, Tt, NKV, hs, qkv.kv_ld, cfg_.rope_theta, kv.P);
  }
  ops::AttentionShape s{B, Tt, NH, NKV, hs, kv.P};
  s.q_ld = qkv.q_ld;
  s.kv_ld = qkv.kv_ld;
  s.extra_bstride = kv.bstride;
  s.extra_hstride = kv.hstride;
  flops_ += attention_flops(B, NH, Tt, kv.P + Tt, hs);
  ops::attention_forward(A.atty, A.att, qkv.q, qkv.k, qkv.v, kv.P ? kv.pk : nullptr, kv.P ? kv.pv : nullptr, s);
  if (kv.cache_k) {
    // Append this call's keys and values: cache (B, NKV, S, hs) at positions P.. .
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tt; ++t)
        for (int64_t h = 0; h < NKV; ++h) {
          const int64_t src = (b * Tt + t) * qkv.kv_ld + h * hs;
          const int64_t dst = ((b * NKV + h) * kv.S + kv.P + t) * hs;
          std::copy_n(qkv.k + src, hs, kv.cache_k + dst);
          std::copy_n(qkv.v + src, hs, kv.cache_v + dst);
        }
  }
  linear(Site::o, A.attproj, A.atty, NH * hs, C);
  if (hooks && hooks->has_after(layer, Sublayer::attention))
    hooks->after_forward(layer, Sublayer::attention, A.attproj, N, C, training);
  ops::residual_forward(A.res1, x, A.attproj, N * C);

  // MLP sublayer: out = res1 + down(act(norm2(res1))).
  norm_forward(A.ln2, A.ln2_mean, A.ln2_rstd, A.res1, P.ln2_w, P.ln2_b, N);
  switch (block_.mlp) {
    case MlpKind::gelu:
      linear(Site::up, A.fc1, A.ln2, C, F);
      ops::gelu_forward(A.mlpin, A.fc1, N * F);
      break;
    case MlpKind::swiglu:
      linear(Site::gate, A.fc1, A.ln2, C, F);
      linear(Site::up, A.fc2, A.ln2, C, F);
      ops::swiglu_forward(A.mlpin, A.fc1, A.fc2, N * F);
      break;
  }
  linear(Site::down, A.mlpproj, A.mlpin, F, C);
  if (hooks && hooks->has_after(layer, Sublayer::mlp))
    hooks->after_forward(layer, Sublayer::mlp, A.mlpproj, N, C, training);
  ops::residual_forward(out, A.res1, A.mlpproj, N * C);
}

void Model::block_backward(int layer, const float* x, Hooks* hooks) {
  Acts& a = *acts_;
  const int64_t C = cfg_.hidden, F = cfg_.intermediate, NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int64_t hs = cfg_.head_dim, B = B_, Tt = Tt_, Pp = Pp_, N = B * Tt;
  const auto& P = layers_[layer];
  auto& A = a.layers[layer];
  auto linear = [&](Site site, float* dx, const float* dy, const float* in, int64_t IC, int64_t OC) {
    linear_backward(layer, site, dx, dy, in, P.weight(site), P.bias(site), N, IC, OC, hooks);
  };

  // MLP sublayer: out = res1 + down(act(norm2(res1))).
  std::copy(a.dres.begin(), a.dres.end(), a.dproj.begin());
  if (hooks && hooks->has_after(layer, Sublayer::mlp)) hooks->after_backward(layer, Sublayer::mlp, a.dproj.data(), N, C);
  zero(a.dln);
  zero(a.dmlpin);
  linear(Site::down, a.dmlpin.data(), a.dproj.data(), saved(A.mlpin), F, C);
  switch (block_.mlp) {
    case MlpKind::gelu:
      zero(a.dfc1);
      ops::gelu_backward(a.dfc1.data(), a.dmlpin.data(), A.fc1.data(), N * F);
      linear(Site::up, a.dln.data(), a.dfc1.data(), saved(A.ln2), C, F);
      break;
    case MlpKind::swiglu:
      zero(a.dfc1);
      zero(a.dfc2);
      ops::swiglu_backward(a.dfc1.data(), a.dfc2.data(), a.dmlpin.data(), A.fc1.data(), A.fc2.data(), N * F);
      linear(Site::gate, a.dln.data(), a.dfc1.data(), saved(A.ln2), C, F);
      linear(Site::up, a.dln.data(), a.dfc2.data(), saved(A.ln2), C, F);
      break;
  }
  norm_backward(a.dres.data(), P.ln2_w, P.ln2_b, a.dln.data(), A.res1.data(), A.ln2_mean.data(), A.ln2_rstd.data(), N);

  // Attention sublayer: res1 = x + o(attention(q, k, v of norm1(x))).
  std::copy(a.dres.begin(), a.dres.end(), a.dproj.begin());
  if (hooks && hooks->has_after(layer, Sublayer::attention))
    hooks->after_backward(layer, Sublayer::attention, a.dproj.data(), N, C);
  zero(a.datty);
  linear(Site::o, a.datty.data(), a.dproj.data(), A.atty.data(), NH * hs, C);
  zero(a.dqkv);
  const auto qkv = qkv_view<const float>(A.qkv.data(), block_.fused_qkv, N, NH, NKV, hs);
  const auto dqkv = qkv_view(a.dqkv.data(), block_.fused_qkv, N, NH, NKV, hs);
  ops::AttentionShape s{B, Tt, NH, NKV, hs, Pp};
  s.q_ld = qkv.q_ld;
  s.kv_ld = qkv.kv_ld;
  if (Pp > 0) {
    zero(a.dpk);
    zero(a.dpv);
  }
  // dv, d(att), dq, dk (and the prefix's dpk, dpv): twice the forward's products.
  flops_ += 2.0 * attention_flops(B, NH, Tt, Pp + Tt, hs);
  ops::attention_backward(dqkv.q, dqkv.k, dqkv.v, Pp ? a.dpk.data() : nullptr, Pp ? a.dpv.data() : nullptr,
                          a.dscratch.data(), a.datty.data(), A.att.data(), qkv.q, qkv.k, qkv.v,
                          Pp ? A.pk.data() : nullptr, Pp ? A.pv.data() : nullptr, s);
  if (Pp > 0) hooks->prefix_backward(layer, a.dpk.data(), a.dpv.data(), NKV, hs);
  zero(a.dln);
  if (block_.positions == PositionKind::rope) {
    ops::rope_backward(dqkv.q, dqkv.q, B, Tt, NH, hs, dqkv.q_ld, cfg_.rope_theta, Pp);
    ops::rope_backward(dqkv.k, dqkv.k, B, Tt, NKV, hs, dqkv.kv_ld, cfg_.rope_theta, Pp);
  }
  if (block_.fused_qkv) {
    linear(Site::qkv, a.dln.data(), a.dqkv.data(), A.ln1.data(), C, cfg_.qkv_dim());
  } else {
    linear(Site::q, a.dln.data(), dqkv.q, A.ln1.data(), C, NH * hs);
    linear(Site::k, a.dln.data(), dqkv.k, A.ln1.data(), C, NKV * hs);
    linear(Site::v, a.dln.data(), dqkv.v, A.ln1.data(), C, NKV * hs);
  }
  norm_backward(a.dres.data(), P.ln1_w, P.ln1_b, a.dln.data(), x, A.ln1_mean.data(), A.ln1_rstd.data(), N);
}

// ---- forward ---------------------------------------------------------------------------

void Model::forward(const int32_t* tokens, int64_t B, int64_t T, Hooks* hooks, bool training) {
  const int64_t Pv = hooks ? hooks->num_virtual_tokens() : 0;
  const int64_t Pp = hooks ? hooks->prefix_length() : 0;
  const int64_t Tt = Pv + T;
  if (B <= 0 || T <= 0) throw InputError("forward: empty batch (B=" + std::to_string(B) + ", T=" + std::to_string(T) + ")");
  if (Pp + Tt > cfg_.max_positions)
    throw InputError("forward: sequence of " + std::to_string(Pp + Tt) +
                     " positions exceeds the model's context of " + std::to_string(cfg_.max_positions));
  for (int64_t i = 0; i < B * T; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      throw InputError("forward: token id " + std::to_string(tokens[i]) + " at position " +
                       std::to_string(i) + " is outside the vocabulary of " + std::to_string(cfg_.vocab_size));
  ensure_acts(B, Tt, Pp);
  Acts& a = *acts_;
  B_ = B; T_ = T; Tt_ = Tt; Pv_ = Pv; Pp_ = Pp;
  trained_forward_ = training;
  a.tokens.assign(tokens, tokens + B * T);

  const int64_t C = cfg_.hidden, F = cfg_.intermediate, NKV = cfg_.n_kv_head, hs = cfg_.head_dim, N = B * Tt;

  // Embeddings: virtual rows first (from the hook), then token rows; learned positions are
  // added to both, counting from the prefix length (as Hugging Face does with a past).
  if (Pv > 0) {
    fit(a.vt, Pv * C);
    hooks->virtual_tokens_forward(a.vt.data(), C);
  }
  embed(a.encoded.data(), tokens, B, T, Pv, a.vt.data(), Pp);
  if (hooks && hooks->observes(0)) hooks->observe(0, a.encoded.data(), B, Tt, C);

  const float* x = a.encoded.data();
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const auto& P = layers_[l];
    auto& A = a.layers[l];
    const int li = static_cast<int>(l);
    // Save the MLP's matmul inputs only when backward reads them (see Acts).
    auto wanted = [&](std::initializer_list<Site> sites) {
      if (!training) return false;
      for (Site st : sites)
        if ((P.weight(st) && P.weight(st)->trainable) || (hooks && hooks->has_delta(li, st))) return true;
      return false;
    };
    const bool keep_ln2 = wanted({Site::up, Site::gate});
    const bool keep_in = wanted({Site::down});
    fit(A.ln2, keep_ln2 ? N * C : 0);
    fit(A.mlpin, keep_in ? N * F : 0);
    if (Pp > 0) hooks->prefix_forward(li, A.pk.data(), A.pv.data(), NKV, hs);
    const BlockBufs bufs{A.ln1.data(), A.ln1_mean.data(), A.ln1_rstd.data(), A.qkv.data(),
                         A.att.data(), A.atty.data(), A.attproj.data(), A.res1.data(),
                         keep_ln2 ? A.ln2.data() : a.ln2_shared.data(), A.ln2_mean.data(), A.ln2_rstd.data(),
                         A.fc1.data(), A.fc2.data(), keep_in ? A.mlpin.data() : a.mlpin_shared.data(),
                         A.mlpproj.data()};
    KVSink kv;
    kv.pk = A.pk.data();
    kv.pv = A.pv.data();
    kv.P = Pp;
    block_forward(li, A.res2.data(), x, bufs, kv, B, Tt, hooks, training);
    x = A.res2.data();
    if (hooks && l + 1 < cfg_.n_layer && hooks->observes(li + 1)) hooks->observe(li + 1, x, B, Tt, C);
  }
  norm_forward(a.lnf.data(), a.lnf_mean.data(), a.lnf_rstd.data(), x, lnf_w_, lnf_b_, N);
  const int Lh = static_cast<int>(cfg_.n_layer);
  if (hooks && hooks->observes(Lh)) hooks->observe(Lh, a.lnf.data(), B, Tt, C);
}

const float* Model::final_hidden() const {
  TB_CHECK(B_ > 0, "final_hidden before forward");
  return acts_->lnf.data();
}

const float* Model::hidden_state(int layer) const {
  TB_CHECK(B_ > 0, "hidden_state before forward");
  if (layer < 0 || layer > cfg_.n_layer)
    throw InputError("hidden_state: layer " + std::to_string(layer) + " is outside 0.." +
                     std::to_string(cfg_.n_layer));
  if (layer == 0) return acts_->encoded.data();
  if (layer == cfg_.n_layer) return acts_->lnf.data();
  return acts_->layers[layer - 1].res2.data();
}

void Model::pool(float* out, int layer, Pool kind, const int32_t* lengths) const {
  const float* h = hidden_state(layer);
  const int64_t C = cfg_.hidden, Tr = Tt_ - Pv_;
  for (int64_t b = 0; b < B_; ++b) {
    if (lengths[b] < 1 || lengths[b] > Tr)
      throw InputError("pool: length " + std::to_string(lengths[b]) + " of sequence " +
                       std::to_string(b) + " is outside 1.." + std::to_string(Tr));
    const float* rows = h + (b * Tt_ + Pv_) * C;
    if (kind == Pool::mean)
      ops::mean_pool_forward(out + b * C, rows, lengths + b, 1, Tr, C);
    else
      ops::last_pool_forward(out + b * C, rows, lengths + b, 1, Tr, C);
  }
}

void Model::pool_backward(float* dhidden, Pool kind, const int32_t* lengths, const float* dpooled) const {
  const int64_t C = cfg_.hidden, Tr = Tt_ - Pv_;
  for (int64_t b = 0; b < B_; ++b) {
    float* rows = dhidden + (b * Tt_ + Pv_) * C;
    if (kind == Pool::mean)
      ops::mean_pool_backward(rows, dpooled + b * C, lengths + b, 1, Tr, C);
    else
      ops::last_pool_backward(rows, dpooled + b * C, lengths + b, 1, Tr, C);
  }
}

void Model::logits(float* out) const {
  lm_head_forward(out, final_hidden(), B_ * Tt_);
}

int64_t Model::lm_losses(const int32_t* targets, float* losses, int32_t ignore_index) {
  const int64_t N = B_ * Tt_, V = cfg_.vocab_size;
  fit(logits_buf_, N * V);
  logits(logits_buf_.data());
  // Virtual rows have no target; real rows take the caller's.
  ignore_index_ = ignore_index;
  loss_targets_.assign(static_cast<size_t>(N), ignore_index);
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t t = 0; t < T_; ++t) {
      const int32_t y = targets[b * T_ + t];
      if (y != ignore_index && (y < 0 || y >= V))
        throw InputError("lm_loss: target id " + std::to_string(y) + " outside the vocabulary");
      loss_targets_[b * Tt_ + Pv_ + t] = y;
    }
  std::vector<float> all(N);
  loss_count_ = ops::cross_entropy_forward(all.data(), logits_buf_.data(), loss_targets_.data(), N, V, ignore_index);
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t t = 0; t < T_; ++t) losses[b * T_ + t] = all[b * Tt_ + Pv_ + t];
  return loss_count_;
}

float Model::lm_loss(const int32_t* targets, int64_t* count, int32_t ignore_index) {
  std::vector<float> losses(B_ * T_);
  const int64_t n = lm_losses(targets, losses.data(), ignore_index);
  if (count) *count = n;
  double sum = 0.0;
  for (float l : losses) sum += l;
  return n ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
}

void Model::backward_lm(Hooks* hooks, float loss_scale) {
  const float scale = loss_count_ ? loss_scale / static_cast<float>(loss_count_) : 0.0f;
  std::vector<float> dl(B_ * T_, scale);
  backward_lm_rows(dl.data(), hooks);
}

void Model::backward_lm_rows(const float* dlosses, Hooks* hooks) {
  TB_CHECK(!loss_targets_.empty(), "backward_lm without lm_loss");
  const int64_t N = B_ * Tt_, V = cfg_.vocab_size, C = cfg_.hidden;
  fit(dlogits_buf_, N * V);
  zero(dlogits_buf_);
  std::vector<float> dl(N, 0.0f);
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t t = 0; t < T_; ++t) dl[b * Tt_ + Pv_ + t] = dlosses[b * T_ + t];
  ops::cross_entropy_backward(dlogits_buf_.data(), dl.data(), logits_buf_.data(), loss_targets_.data(),
                              N, V, ignore_index_);
  // A member buffer: the gradient of the final hidden state is (N,C), large enough at GPT-2
  // shapes that a fresh vector per step would cost an mmap and its page faults.
  fit(dfinal_buf_, N * C);
  zero(dfinal_buf_);
  std::vector<float>& dfinal = dfinal_buf_;
  lm_head_backward(dfinal.data(), dlogits_buf_.data(), final_hidden(), N);
  backward(dfinal.data(), hooks);
}

int Model::lowest_backward_layer(Hooks* hooks) const {
  const int L = static_cast<int>(cfg_.n_layer);
  int lowest = hooks ? hooks->lowest_trainable_layer(L) : L;
  if (wte_->trainable || (wpe_ && wpe_->trainable)) return -1;
  for (int l = 0; l < L && l < lowest; ++l) {
    for (const Param* p : layer_params(l))
      if (p->trainable) return std::min(lowest, l);
  }
  return lowest;
}

// ---- backward --------------------------------------------------------------------------

void Model::backward(const float* dfinal, Hooks* hooks) {
  TB_CHECK(trained_forward_, "backward needs a forward with training = true");
  Acts& a = *acts_;
  const int64_t C = cfg_.hidden, F = cfg_.intermediate, NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int64_t hs = cfg_.head_dim, B = B_, Tt = Tt_, Pp = Pp_, N = B * Tt;
  if (!a.backward_ready) {
    fit(a.dres, N * C); fit(a.dln, N * C); fit(a.dqkv, N * cfg_.qkv_dim());
    fit(a.datty, N * NH * hs); fit(a.dproj, N * C); fit(a.dfc1, N * F);
    fit(a.dfc2, block_.mlp == MlpKind::swiglu ? N * F : 0); fit(a.dmlpin, N * F);
    fit(a.dscratch, B * NH * Tt * (Pp + Tt));
    fit(a.dpk, NKV * Pp * hs); fit(a.dpv, NKV * Pp * hs);
    a.backward_ready = true;
  }
  const int stop = lowest_backward_layer(hooks);
  const float* x_last = cfg_.n_layer > 0 ? a.layers.back().res2.data() : a.encoded.data();
  zero(a.dres);
  norm_backward(a.dres.data(), lnf_w_, lnf_b_, dfinal, x_last, a.lnf_mean.data(), a.lnf_rstd.data(), N);

  for (int64_t l = cfg_.n_layer - 1; l >= std::max(stop, 0); --l)
    block_backward(static_cast<int>(l), l == 0 ? a.encoded.data() : a.layers[l - 1].res2.data(), hooks);

  if (stop >= 0) return;
  // Embeddings: token and position tables, and the virtual-token rows for the hook.
  Param* wpe = block_.positions == PositionKind::learned && wpe_->grad ? wpe_ : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    const float* drow = a.dres.data() + b * Tt * C;
    ops::embedding_backward(wte_->grad, wpe ? wpe->grad : nullptr, drow + Pv_ * C,
                            a.tokens.data() + b * T_, 1, T_, C, Pp + Pv_);
    if (wpe)
      for (int64_t p = 0; p < Pv_; ++p)
        for (int64_t c = 0; c < C; ++c) wpe->grad[(Pp + p) * C + c] += drow[p * C + c];
  }
  wte_->grad_fresh = false;
  if (wpe_) wpe_->grad_fresh = false;
  if (Pv_ > 0 && hooks) {
    std::vector<float> dvt(B * Pv_ * C);
    for (int64_t b = 0; b < B; ++b)
      std::copy(a.dres.begin() + b * Tt * C, a.dres.begin() + (b * Tt + Pv_) * C, dvt.begin() + b * Pv_ * C);
    hooks->virtual_tokens_backward(dvt.data(), B, C);
  }
}

const float* Model::embedding_grad() const { return acts_->dres.data(); }

// ---- cached inference ------------------------------------------------------------------

KVCache::KVCache(const ModelConfig& cfg, int64_t B_, int64_t capacity)
    : B(B_), S(capacity), NKV(cfg.n_kv_head), hs(cfg.head_dim), L(cfg.n_layer) {
  if (capacity <= 0 || capacity > cfg.max_positions)
    throw InputError("KV cache capacity " + std::to_string(capacity) + " must be in 1.." +
                     std::to_string(cfg.max_positions));
  k.assign(static_cast<size_t>(L * B * NKV * S * hs), 0.0f);
  v.assign(k.size(), 0.0f);
}

void Model::forward_cached(const int32_t* tokens, int64_t B, int64_t T, KVCache& cache,
                           float* logits_out, bool last_only, Hooks* hooks) {
  TB_CHECK(cache.B == B && cache.L == cfg_.n_layer, "KV cache made for another batch or model");
  const int64_t C = cfg_.hidden, F = cfg_.intermediate, NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int64_t hs = cfg_.head_dim, S = cache.S, V = cfg_.vocab_size;
  for (int64_t i = 0; i < B * T; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw InputError("forward_cached: token id " + std::to_string(tokens[i]) + " outside the vocabulary");
  // First call: the prefix (if any) becomes the first positions of every sequence's cache.
  if (cache.len == 0 && hooks && hooks->prefix_length() > 0) {
    const int64_t Pp = hooks->prefix_length();
    if (Pp > S) throw InputError("KV cache smaller than the prefix");
    std::vector<float> pk(NKV * Pp * hs), pv(NKV * Pp * hs);
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
      hooks->prefix_forward(static_cast<int>(l), pk.data(), pv.data(), NKV, hs);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < NKV; ++h) {
          std::copy_n(pk.data() + h * Pp * hs, Pp * hs, cache.k_at(l) + (b * NKV + h) * S * hs);
          std::copy_n(pv.data() + h * Pp * hs, Pp * hs, cache.v_at(l) + (b * NKV + h) * S * hs);
        }
    }
    cache.len = Pp;
  }
  const int64_t Pv = (!cache.virtual_done && hooks) ? hooks->num_virtual_tokens() : 0;
  cache.virtual_done = true;
  const int64_t Tt = Pv + T, N = B * Tt, pos0 = cache.len;
  if (pos0 + Tt > S)
    throw InputError("KV cache full: " + std::to_string(pos0 + Tt) + " positions exceed its capacity of " +
                     std::to_string(S));
  // One set of block buffers every layer reuses: decoding keeps nothing but the cache.
  thread_local std::vector<float> x, ln, qkv, att, atty, proj, res, f1, f2, f3, vt;
  fit(x, N * C); fit(ln, N * C); fit(qkv, N * cfg_.qkv_dim()); fit(att, B * NH * Tt * (pos0 + Tt));
  fit(atty, N * NH * hs); fit(proj, N * C); fit(res, N * C); fit(f1, N * F);
  fit(f2, block_.mlp == MlpKind::swiglu ? N * F : 0); fit(f3, N * F);
  if (Pv > 0) {
    fit(vt, Pv * C);
    hooks->virtual_tokens_forward(vt.data(), C);
  }
  embed(x.data(), tokens, B, T, Pv, vt.data(), pos0);
  if (hooks && hooks->observes(0)) hooks->observe(0, x.data(), B, Tt, C);
  std::vector<float> stat(N), stat2(N);
  const BlockBufs bufs{ln.data(), stat.data(), stat2.data(), qkv.data(), att.data(), atty.data(),
                       proj.data(), res.data(), ln.data(), stat.data(), stat2.data(), f1.data(),
                       f2.data(), f3.data(), proj.data()};
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const int li = static_cast<int>(l);
    KVSink kv;
    kv.pk = cache.k_at(l);
    kv.pv = cache.v_at(l);
    kv.P = pos0;
    kv.bstride = NKV * S * hs;
    kv.hstride = S * hs;
    kv.cache_k = cache.k_at(l);
    kv.cache_v = cache.v_at(l);
    kv.S = S;
    block_forward(li, x.data(), x.data(), bufs, kv, B, Tt, hooks, false);
    if (hooks && l + 1 < cfg_.n_layer && hooks->observes(li + 1)) hooks->observe(li + 1, x.data(), B, Tt, C);
  }
  cache.len = pos0 + Tt;
  norm_forward(ln.data(), stat.data(), stat2.data(), x.data(), lnf_w_, lnf_b_, N);
  const int Lh = static_cast<int>(cfg_.n_layer);
  if (hooks && hooks->observes(Lh)) hooks->observe(Lh, ln.data(), B, Tt, C);
  if (last_only) {
    std::vector<float> last(B * C);
    for (int64_t b = 0; b < B; ++b) std::copy_n(ln.data() + (b * Tt + Tt - 1) * C, C, last.data() + b * C);
    lm_head_forward(logits_out, last.data(), B);
  } else {
    for (int64_t b = 0; b < B; ++b)
      lm_head_forward(logits_out + b * T * V, ln.data() + (b * Tt + Pv) * C, T);
  }
}

}  // namespace tb
