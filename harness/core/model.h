// The transformer: GPT-2 and Llama families in one model. The block is written once
// (Model::block_forward, block_backward) and used by the training forward, scoring and
// cached decoding alike; what the families do differently inside it (LayerNorm or RMSNorm,
// GELU-tanh or SwiGLU, fused or separate q/k/v, learned positions or RoPE, biases) is a
// BlockConfig derived from the ModelConfig, and GQA follows from n_kv_head. Parameters
// carry their Hugging Face names, so checkpoints map one to one (GPT-2's Conv1D weights are
// stored transposed to (out, in) at load); methods find them through the site table below,
// never by name.
//
// One training forward saves every activation backward reads (llm.c style, one block per
// run); backward starts from the gradient of the final-norm output, so LM heads,
// classification heads, reward and value heads all sit on top of the same API. Methods
// reach inside only through Hooks (hooks.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/params.h"

namespace tb {

enum class Family { gpt2, llama };

struct ModelConfig {
  Family family = Family::llama;
  std::string model_type = "llama";  // gpt2 | llama | qwen2 | mistral
  int64_t vocab_size = 0;            // V
  int64_t hidden = 0;                // C
  int64_t n_layer = 0;               // L
  int64_t n_head = 0;                // NH
  int64_t n_kv_head = 0;             // NKV (== NH for GPT-2)
  int64_t head_dim = 0;              // hs
  int64_t intermediate = 0;          // F (GPT-2: n_inner, default 4C)
  int64_t max_positions = 0;         // maxT
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tied_embeddings = true;
  bool qkv_bias = false;             // GPT-2 always has biases; Qwen2 has q/k/v biases
  int32_t bos_token_id = -1;
  int32_t eos_token_id = -1;

  // Parses a Hugging Face config.json; `source` (the file path) prefixes every error, and
  // a missing, mistyped or out-of-range field throws tb::ModelError naming the field.
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_hf_json() const;
  void validate(const std::string& source) const;
  int64_t qkv_dim() const { return (n_head + 2 * n_kv_head) * head_dim; }
};

// How a family's transformer block computes. Everything the families do differently inside
// the model is a field here, derived from the config by BlockConfig::from; the block itself
// (Model::block_forward, block_backward) is written once and reads these fields. The
// checkpoint's tensor names are the other family-specific part (the site table below).
enum class NormKind { layernorm, rmsnorm };  // LayerNorm with weight and bias | RMSNorm, weight only
enum class MlpKind { gelu, swiglu };         // down(GELU-tanh(up·x)) | down(SiLU(gate·x) ⊙ up·x)
enum class PositionKind { learned, rope };   // a table added to the embeddings | rotary q and k
struct BlockConfig {
  NormKind norm = NormKind::rmsnorm;
  MlpKind mlp = MlpKind::swiglu;
  PositionKind positions = PositionKind::rope;
  bool fused_qkv = false;   // one linear computes q, k and v (rows q | k | v); else three
  bool linear_bias = false; // every linear has a bias
  bool qkv_bias = false;    // the q, k and v linears have biases (implied by linear_bias)
  static BlockConfig from(const ModelConfig& cfg);
};

// Parameter-count arithmetic, used by the trainable-parameter tests and the records.
int64_t count_params(const ModelConfig& cfg);

// Matmul precision. bf16 = mixed precision: the matmuls of every linear layer and the LM
// head take bf16 operands (weights from bf16 copies refreshed when a weight changes, inputs
// rounded per call) and accumulate in fp32 into fp32 outputs; norms, softmax, attention,
// the loss, gradients, master weights and optimizer state stay fp32.
enum class Precision { f32, bf16 };
// "f32" | "bf16"; parse throws tb::InputError naming `what` on anything else.
Precision parse_precision(const std::string& text, const std::string& what);
const char* precision_name(Precision p);

// Sequence pooling for embeddings (features, retrieval, reward heads).
enum class Pool { mean, last };

// ---- the site table --------------------------------------------------------------------
// Where each linear site (hooks.h) of a family lives, so that methods address the model by
// site and layer and never by a checkpoint tensor name. The checkpoint's names are spelled
// only here (model.cpp) and in model_io.

// A site's place in the linear that computes it. The model calls the delta hook at
// `hook_site` with OC = total_rows; the site's own outputs are rows [row_offset,
// row_offset + rows) of that linear's (total_rows, in_features) weight. GPT-2 fuses q, k and
// v into one linear (hook site qkv, 3C rows: q [0,C), k [C,2C), v [2C,3C)); everywhere else
// a site is a whole linear of its own.
struct SiteSlice {
  Site hook_site = Site::q;
  int64_t row_offset = 0;
  int64_t rows = 0;
  int64_t total_rows = 0;
  int64_t in_features = 0;
};

// Whether `cfg`'s family has the site, as a linear or as a slice of one: GPT-2 has qkv, q,
// k, v, o, up, down; Llama has q, k, v, o, gate, up, down.
bool has_site(const ModelConfig& cfg, Site s);
// The slice of a site the family has; throws tb::InputError for one it lacks.
SiteSlice site_slice(const ModelConfig& cfg, Site s);
// The sites a user-facing name selects: a site name (q, k, v, o, gate, up, down) selects
// itself; "qkv", or the family's checkpoint name of its fused linear (GPT-2's c_attn),
// selects q, k and v. Throws tb::InputError, prefixed with `what`, on an unknown name or a
// site the family lacks.
std::vector<Site> sites_from_name(const ModelConfig& cfg, const std::string& name,
                                  const std::string& what);
// The checkpoint prefix of layer `layer`'s tensors, ending in '.'; methods name the tensors
// they add to a layer under it (an adapter's own weights saved beside the base's names).
std::string layer_prefix(const ModelConfig& cfg, int layer);
// The checkpoint name, without ".weight", of the linear that computes site `s` of layer
// `layer` (for GPT-2's q, k and v: the fused linear). Adapters of a site name their own
// tensors after it.
std::string site_module(const ModelConfig& cfg, int layer, Site s);

// One layer's site in a model: the weight (total_rows, in_features) and bias (or null) of
// the linear that computes it, and the site's slice of them.
struct SiteRef {
  Param* weight = nullptr;
  Param* bias = nullptr;
  SiteSlice slice;
};

struct KVCache;

class Model {
 public:
  explicit Model(const ModelConfig& cfg);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const BlockConfig& block_config() const { return block_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // Switches matmul precision (see Precision). bf16 allocates the bf16 weight copies
  // (2 bytes per matmul weight value); f32 frees them. Throws tb::InputError when the
  // machine's oneDNN cannot run bf16 matmuls.
  void set_precision(Precision p);
  Precision precision() const { return precision_; }

  // The site table (see SiteSlice): the parameters of one layer's site, the layer a base
  // parameter belongs to (-1 for the embeddings, the final norm and the LM head), every
  // parameter of one layer, and the tensors outside the layers.
  SiteRef site(int layer, Site s) const;
  int layer_of(const Param& p) const;
  std::vector<Param*> layer_params(int layer) const;
  Param& token_embedding() const { return *wte_; }          // (V,C)
  Param* position_embedding() const { return wpe_; }        // (maxT,C), null with RoPE
  Param& lm_head() const { return *lm_head_; }              // (V,C), the token embedding when tied
  std::vector<Param*> final_norm_params() const;            // weight, then bias if the norm has one

  // GPT-2-style init: N(0, std) matrices, residual projections scaled by 1/sqrt(2L), zero
  // biases, unit norms. Deterministic in `seed`.
  void init_random(uint64_t seed, float std = 0.02f);

  // Forward over right-padded sequences tokens (B,T). With hooks, P virtual tokens are
  // prepended (seq_len() = P + T) and prefix K/V are attended to. `training` keeps what
  // backward needs and passes `training` to hooks (dropout etc.).
  void forward(const int32_t* tokens /*(B,T)*/, int64_t B, int64_t T, Hooks* hooks = nullptr,
               bool training = false);
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return Tt_; }          // P_virtual + T
  int64_t virtual_tokens() const { return Pv_; }
  // Final-norm output (B, seq_len, C) of the last forward.
  const float* final_hidden() const;
  // Residual stream after layer l (Hugging Face hidden_states numbering): 0 = embeddings,
  // l = after block l-1, L = final-norm output. (B, seq_len, C).
  const float* hidden_state(int layer) const;
  // Pooled hidden state of `layer` over the real tokens; lengths (B) counts real tokens
  // (virtual tokens are excluded from the mean, and "last" is the last real token).
  void pool(float* out /*(B,C)*/, int layer, Pool kind, const int32_t* lengths /*(B)*/) const;
  // Backward of pool(): accumulates dpooled into dhidden (B, seq_len, C).
  void pool_backward(float* dhidden, Pool kind, const int32_t* lengths /*(B)*/,
                     const float* dpooled /*(B,C)*/) const;

  // LM head over every position of the last forward: (B*seq_len, V).
  void logits(float* out) const;
  // Mean cross-entropy of the real positions against targets (B,T) (ignore_index skipped);
  // keeps dlogits for backward_lm(). Returns the mean loss and sets `count`.
  float lm_loss(const int32_t* targets /*(B,T)*/, int64_t* count = nullptr,
                int32_t ignore_index = -100);
  // Backward of the last lm_loss() (gradient scale 1/count × loss_scale).
  void backward_lm(Hooks* hooks = nullptr, float loss_scale = 1.0f);
  // Per-position cross-entropy of the real positions: losses (B,T), 0 where ignored. Keeps
  // what backward_lm_rows() needs. Returns the number of non-ignored positions.
  int64_t lm_losses(const int32_t* targets /*(B,T)*/, float* losses /*(B,T)*/,
                    int32_t ignore_index = -100);
  // Backward of the last lm_losses() with a gradient per position: dlosses (B,T).
  void backward_lm_rows(const float* dlosses /*(B,T)*/, Hooks* hooks = nullptr);
  // Backward from a gradient of the final-norm output; accumulates into trainable params'
  // grads and calls the hooks' backward counterparts.
  void backward(const float* dfinal /*(B,seq_len,C)*/, Hooks* hooks = nullptr);
  // The gradient of the embedding output (B, seq_len, C) after backward reached it.
  const float* embedding_grad() const;

  // Lowest block index backward runs through, given trainable flags and hooks.
  int lowest_backward_layer(Hooks* hooks) const;

  // Inference with a KV cache: appends tokens (B,T) to the cache and writes the logits of
  // every new position (B,T,V) (or, if last_only, of the last one: (B,V)).
  void forward_cached(const int32_t* tokens, int64_t B, int64_t T, KVCache& cache,
                      float* logits_out, bool last_only = false, Hooks* hooks = nullptr);

  // Matmul FLOPs this model has executed since construction, 2·M·N·K per product: every
  // linear layer's forward; in backward its input-gradient GEMM and, only where the weight
  // trains, its weight-gradient GEMM, for the layers backward actually ran through; the LM
  // head only when it ran (logits, losses, cached inference); attention's score (Q·Kᵀ) and
  // value (A·V) products and their gradients, including the masked half the batched kernel
  // computes. Hooks' own products (LoRA, prefix MLP) and heads outside the model are not
  // counted. Monotonic: callers read the difference around what they meter.
  double flop_count() const { return flops_; }
  // Adds products a caller ran on this model's weights outside forward/backward (an LM head
  // applied to selected rows only), so they are counted with the model's own.
  void count_flops(double flops) const { flops_ += flops; }
  // Closed-form count of one forward over B sequences of T tokens (no hooks, no cache),
  // without the LM head; what flop_count() grows by for such a forward.
  static double forward_flops(const ModelConfig& cfg, int64_t B, int64_t T);

  // Activation bytes of the last forward (the analytic memory breakdown reads this).
  int64_t activation_bytes() const;
  // Frees every saved activation and scratch buffer (the next forward allocates again);
  // outputs of the last forward (final_hidden, logits) are gone afterwards.
  void release_activations();

 private:
  struct LayerParams;
  struct Acts;
  struct BlockBufs;
  struct KVSink;
  void declare_params();
  void bind_params();
  void ensure_acts(int64_t B, int64_t Tt, int64_t Pp);
  void norm_forward(float* out, float* mean, float* rstd, const float* x, const Param* w,
                    const Param* b, int64_t N) const;
  void norm_backward(float* dx, const Param* w, const Param* b, const float* dout,
                     const float* x, const float* mean, const float* rstd, int64_t N) const;
  void linear_forward(int layer, Site site, float* y, const float* x, const Param* w,
                      const Param* b, int64_t N, int64_t IC, int64_t OC, Hooks* hooks,
                      bool training) const;
  void linear_backward(int layer, Site site, float* dx, const float* dy, const float* x,
                       const Param* w, const Param* b, int64_t N, int64_t IC, int64_t OC,
                       Hooks* hooks) const;

  // Writes the input rows (B, Pv+T, C): the Pv virtual rows then the token embeddings, plus
  // learned positions counted from `pos0` when the family has them.
  void embed(float* out, const int32_t* tokens, int64_t B, int64_t T, int64_t Pv, const float* vt,
             int64_t pos0) const;
  // One transformer block on N = B*Tt rows: out = x + attn(norm1(x)), then + mlp(norm2(·)),
  // with every hook of `layer` (delta, after-sublayer). out may equal x. Attention reads
  // kv's P earlier positions and appends this call's keys and values to kv's cache.
  void block_forward(int layer, float* out, const float* x, const BlockBufs& A, const KVSink& kv,
                     int64_t B, int64_t Tt, Hooks* hooks, bool training) const;
  // Backward of a training block_forward: replaces acts_->dres (the gradient of the block's
  // output) by the gradient of its input x, accumulating weight and hook gradients.
  void block_backward(int layer, const float* x, Hooks* hooks);

  void lm_head_forward(float* out, const float* x, int64_t N) const;
  void lm_head_backward(float* dx, const float* dlogits, const float* x, int64_t N) const;

  ModelConfig cfg_;
  BlockConfig block_;
  ParamStore params_;
  Precision precision_ = Precision::f32;
  std::vector<LayerParams> layers_;
  Param* wte_ = nullptr;
  Param* wpe_ = nullptr;
  Param* lnf_w_ = nullptr;
  Param* lnf_b_ = nullptr;
  Param* lm_head_ = nullptr;  // == wte_ when tied
  std::unordered_map<const Param*, int> layer_of_;

  std::unique_ptr<Acts> acts_;
  int64_t B_ = 0, T_ = 0, Tt_ = 0, Pv_ = 0, Pp_ = 0;
  bool trained_forward_ = false;
  std::vector<int32_t> loss_targets_;
  std::vector<float> logits_buf_, dlogits_buf_, dfinal_buf_;
  int64_t loss_count_ = 0;
  int32_t ignore_index_ = -100;
  mutable double flops_ = 0.0;
};

// Per-layer key/value cache for incremental decoding: layout (B, NKV, S, hs) per layer.
struct KVCache {
  KVCache(const ModelConfig& cfg, int64_t B, int64_t capacity);
  int64_t B, S, len = 0;
  int64_t NKV, hs, L;
  std::vector<float> k, v;  // (L, B, NKV, S, hs)
  bool virtual_done = false;
  float* k_at(int64_t layer) { return k.data() + layer * B * NKV * S * hs; }
  float* v_at(int64_t layer) { return v.data() + layer * B * NKV * S * hs; }
  int64_t bytes() const { return static_cast<int64_t>((k.size() + v.size()) * sizeof(float)); }
};

}  // namespace tb
