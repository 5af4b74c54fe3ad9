// The one contract between the transformer core and the methods.
// The model calls these at fixed points of forward and backward; every hook is identity by
// default, so a model run with a default `Hooks` is the plain pretrained model. A method
// adds behaviour by overriding hooks, never by adding parameters to the core.
//
// Backward counterparts accumulate into the method's own gradients and return (by
// accumulating into the given buffer) the gradient of their input. The model calls a
// backward hook only when training and only for layers at or above the lowest layer that
// has something trainable (see lowest_trainable_layer()).
#pragma once

#include <cstdint>

namespace tb {

// Linear sites a delta hook can attach to. GPT-2 runs one fused qkv linear (c_attn); Llama
// runs q, k, v separately. `o` is the attention output projection (GPT-2 attn.c_proj,
// Llama o_proj), `up` the first MLP linear (GPT-2 c_fc, Llama up_proj), `gate` Llama's
// gate_proj, `down` the MLP output (GPT-2 mlp.c_proj, Llama down_proj).
enum class Site { qkv, q, k, v, o, gate, up, down };
constexpr int kNumSites = 8;
const char* site_name(Site s);

enum class Sublayer { attention, mlp };

class Hooks {
 public:
  virtual ~Hooks() = default;

  // Lowest block index whose backward must run for this method's gradients: -1 when the
  // gradient must reach the input embeddings (soft prompt), L (number of layers) when the
  // method trains nothing inside the body. The model combines it with the base weights'
  // trainable flags and skips backward below the result.
  virtual int lowest_trainable_layer(int num_layers) const { return num_layers; }

  // 1. Input embeddings: P virtual tokens prepended to every sequence.
  virtual int64_t num_virtual_tokens() const { return 0; }
  // Writes the P virtual-token rows (P,C); the model broadcasts them over the batch.
  virtual void virtual_tokens_forward(float* out /*(P,C)*/, int64_t C) {}
  // dout holds the gradient of the prepended rows for every sequence.
  virtual void virtual_tokens_backward(const float* dout /*(B,P,C)*/, int64_t B, int64_t C) {}

  // 2. Per-layer key/value prefix: P positions every query attends to, unmasked.
  virtual int64_t prefix_length() const { return 0; }
  // Writes the layer's prefix keys and values, (NKV,P,hs) each, shared by the batch.
  virtual void prefix_forward(int layer, float* pk, float* pv, int64_t NKV, int64_t hs) {}
  virtual void prefix_backward(int layer, const float* dpk, const float* dpv, int64_t NKV,
                               int64_t hs) {}

  // 3. Per-linear delta: y += f(x) at a named site.
  virtual bool has_delta(int layer, Site site) const { return false; }
  virtual void delta_forward(int layer, Site site, float* y /*(N,OC)*/,
                             const float* x /*(N,IC)*/, int64_t N, int64_t IC, int64_t OC,
                             bool training) {}
  // Accumulates the method's parameter gradients and dx += ∂f/∂x ᵀ dy (dx may be null
  // when nothing below needs it).
  virtual void delta_backward(int layer, Site site, float* dx /*(N,IC) or null*/,
                              const float* dy /*(N,OC)*/, const float* x /*(N,IC)*/, int64_t N,
                              int64_t IC, int64_t OC) {}

  // 4. After a sublayer: h = h + g(h) on the sublayer's output, before the residual add.
  virtual bool has_after(int layer, Sublayer s) const { return false; }
  // In place on h; the hook saves what its backward needs when `training`.
  virtual void after_forward(int layer, Sublayer s, float* h /*(N,C)*/, int64_t N, int64_t C,
                             bool training) {}
  // In place on dh: dh_in = dh_out + J_gᵀ dh_out.
  virtual void after_backward(int layer, Sublayer s, float* dh /*(N,C)*/, int64_t N,
                              int64_t C) {}

  // 5. Hidden-state observer, numbered as Hugging Face's hidden_states: 0 is the embedding
  // output, l (1 <= l < L) the output of block l-1, and L the final-norm output. T counts
  // virtual tokens too. The full forward and cached decoding both call it; in cached
  // decoding h holds the rows of that call only (the positions it appends to the cache).
  virtual bool observes(int layer) const { return false; }
  virtual void observe(int layer, const float* h /*(B,T,C)*/, int64_t B, int64_t T, int64_t C) {}
};

}  // namespace tb
