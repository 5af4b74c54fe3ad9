// The transformer's ops: each a forward/backward pair on plain float buffers, in the
// manner of llm.c. Arguments come in a fixed order: outputs, saved statistics, inputs and
// weights, dimensions. Every pointer names its shape in a comment.
//
// Contracts shared by all ops:
//  - forward WRITES its outputs and saves exactly what backward reads;
//  - backward ACCUMULATES (+=) into every gradient it is given; a null gradient pointer
//    means "not wanted" (frozen weight, or an input that needs no gradient) and its
//    computation is skipped entirely (no weight-gradient GEMM for frozen weights);
//  - the fast path runs on oneDNN (harness/core/dnnl); ops_ref.h holds a plain reference
//    loop for every op, templated on the scalar type so tests can run it in double.
//
// Linear weights are stored (OC, IC) as in torch.nn.Linear; the checkpoint loader
// transposes GPT-2's Conv1D (IC, OC) tensors once at load time.
#pragma once

#include <cstdint>

namespace tb::ops {

// ---- embeddings -----------------------------------------------------------------------
// out[b,t,:] = wte[tokens[b,t],:] + (wpe ? wpe[pos0 + t,:] : 0)
void embedding_forward(float* out /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/,
                       const float* wte /*(V,C)*/, const float* wpe /*(maxT,C) or null*/,
                       int64_t B, int64_t T, int64_t C, int64_t pos0 = 0);
void embedding_backward(float* dwte /*(V,C) or null*/, float* dwpe /*(maxT,C) or null*/,
                        const float* dout /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/,
                        int64_t B, int64_t T, int64_t C, int64_t pos0 = 0);

// ---- linear ---------------------------------------------------------------------------
// out = inp · weightᵀ + bias
void linear_forward(float* out /*(N,OC)*/, const float* inp /*(N,IC)*/,
                    const float* weight /*(OC,IC)*/, const float* bias /*(OC) or null*/,
                    int64_t N, int64_t IC, int64_t OC);
// dweight_overwrite: write dweight instead of accumulating (the caller knows it holds zeros;
// saves reading it back, which costs a third of the matmul when N is small).
void linear_backward(float* dinp /*(N,IC) or null*/, float* dweight /*(OC,IC) or null*/,
                     float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                     const float* inp /*(N,IC)*/, const float* weight /*(OC,IC)*/, int64_t N,
                     int64_t IC, int64_t OC, bool dweight_overwrite = false);
// Mixed precision (bf16 matmul operands, fp32 accumulation and outputs): the same
// contracts with the weight given as its bf16 copy. Float operands (inp, dout) are
// rounded to bf16 into per-thread scratch buffers that are reused from call to call.
void linear_forward_bf16(float* out /*(N,OC)*/, const float* inp /*(N,IC)*/,
                         const std::uint16_t* weight /*(OC,IC) bf16*/,
                         const float* bias /*(OC) or null*/, int64_t N, int64_t IC, int64_t OC);
void linear_backward_bf16(float* dinp /*(N,IC) or null*/, float* dweight /*(OC,IC) or null*/,
                          float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                          const float* inp /*(N,IC)*/, const std::uint16_t* weight /*(OC,IC) bf16*/,
                          int64_t N, int64_t IC, int64_t OC, bool dweight_overwrite = false);

// ---- normalisation --------------------------------------------------------------------
void layernorm_forward(float* out /*(N,C)*/, float* mean /*(N)*/, float* rstd /*(N)*/,
                       const float* inp /*(N,C)*/, const float* weight /*(C)*/,
                       const float* bias /*(C)*/, int64_t N, int64_t C, float eps);
void layernorm_backward(float* dinp /*(N,C) or null*/, float* dweight /*(C) or null*/,
                        float* dbias /*(C) or null*/, const float* dout /*(N,C)*/,
                        const float* inp /*(N,C)*/, const float* weight /*(C)*/,
                        const float* mean /*(N)*/, const float* rstd /*(N)*/, int64_t N,
                        int64_t C);

// out = inp * rsqrt(mean(inp²) + eps) * weight  (statistics in fp32, as Hugging Face)
void rmsnorm_forward(float* out /*(N,C)*/, float* rstd /*(N)*/, const float* inp /*(N,C)*/,
                     const float* weight /*(C)*/, int64_t N, int64_t C, float eps);
void rmsnorm_backward(float* dinp /*(N,C) or null*/, float* dweight /*(C) or null*/,
                      const float* dout /*(N,C)*/, const float* inp /*(N,C)*/,
                      const float* weight /*(C)*/, const float* rstd /*(N)*/, int64_t N,
                      int64_t C);

// ---- activations ----------------------------------------------------------------------
// GELU, tanh approximation (GPT-2's "gelu_new").
void gelu_forward(float* out /*(n)*/, const float* inp /*(n)*/, int64_t n);
void gelu_backward(float* dinp /*(n)*/, const float* dout /*(n)*/, const float* inp /*(n)*/,
                   int64_t n);

// out = silu(gate) * up
void swiglu_forward(float* out /*(n)*/, const float* gate /*(n)*/, const float* up /*(n)*/,
                    int64_t n);
void swiglu_backward(float* dgate /*(n) or null*/, float* dup /*(n) or null*/,
                     const float* dout /*(n)*/, const float* gate /*(n)*/,
                     const float* up /*(n)*/, int64_t n);

// ---- rotary position embedding (Hugging Face rotate-half convention) ------------------
// For head vector x of size hs, half = hs/2, inv_freq[i] = theta^(-2i/hs), angle = p·inv_freq[i]
// with p = pos0 + t: out[i] = x[i]cos - x[i+half]sin, out[i+half] = x[i+half]cos + x[i]sin.
// `ld` is the element stride between consecutive tokens (>= NH*hs), so RoPE can run on a
// slice of a fused QKV buffer. In place (out == inp) is allowed.
void rope_forward(float* out /*(B,T,NH,hs) stride ld*/, const float* inp /*same*/, int64_t B,
                  int64_t T, int64_t NH, int64_t hs, int64_t ld, float theta, int64_t pos0 = 0);
// dinp += Rᵀ dout. In place (dinp == dout) is allowed and then overwrites.
void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t hs,
                   int64_t ld, float theta, int64_t pos0 = 0);

// ---- attention ------------------------------------------------------------------------
// Causal multi-head attention with grouped-query heads (NH query heads share NKV key/value
// heads; NH % NKV == 0, query head h reads kv head h / (NH/NKV)) and an optional block of
// P extra key/value positions placed before the sequence and visible to every query
// (unmasked): a prefix-tuning prefix, or the KV cache of earlier tokens at inference.
// q/k/v rows are token-strided (q_ld, kv_ld elements between tokens) so they may point
// into a fused QKV buffer. Scale is 1/sqrt(hs).
struct AttentionShape {
  int64_t B, T, NH, NKV, hs;
  int64_t P = 0;          // extra (unmasked) key/value positions
  int64_t q_ld = 0;       // token stride of q; 0 means NH*hs
  int64_t kv_ld = 0;      // token stride of k and v; 0 means NKV*hs
  int64_t extra_bstride = 0;  // batch stride of pk/pv: 0 = shared by the batch (prefix),
                              // NKV*P*hs = one block per sequence (KV cache)
  int64_t extra_hstride = 0;  // stride between kv heads inside a block; 0 means P*hs. A KV
                              // cache of capacity S > P uses S*hs (block (NKV,S,hs), first
                              // P positions filled).
};
// out (B,T,NH*hs) dense; att (B,NH,T,P+T) saves the attention probabilities (0 where masked).
// pk/pv: (NKV,P,hs) per batch block (see extra_bstride), null when P == 0.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const float* pk, const float* pv, const AttentionShape& s);
// Accumulates into dq (same layout as q), dk, dv (layout of k, v), dpk, dpv (layout of
// pk/pv); any may be null. `scratch` is (B,NH,T,P+T) floats of workspace.
void attention_backward(float* dq, float* dk, float* dv, float* dpk, float* dpv, float* scratch,
                        const float* dout /*(B,T,NH*hs)*/, const float* att, const float* q,
                        const float* k, const float* v, const float* pk, const float* pv,
                        const AttentionShape& s);

// ---- residual -------------------------------------------------------------------------
void residual_forward(float* out /*(n)*/, const float* a /*(n)*/, const float* b /*(n)*/,
                      int64_t n);
void residual_backward(float* da /*(n) or null*/, float* db /*(n) or null*/,
                       const float* dout /*(n)*/, int64_t n);

// ---- loss -----------------------------------------------------------------------------
// losses[i] = -log softmax(logits[i])[targets[i]], or 0 where targets[i] == ignore_index.
// Returns the number of non-ignored rows. Out-of-range targets throw tb::InputError.
int64_t cross_entropy_forward(float* losses /*(N)*/, const float* logits /*(N,V)*/,
                              const int32_t* targets /*(N)*/, int64_t N, int64_t V,
                              int32_t ignore_index = -100);
// dlogits[i] += dlosses[i] * (softmax(logits[i]) - onehot(targets[i])); ignored rows get 0.
void cross_entropy_backward(float* dlogits /*(N,V)*/, const float* dlosses /*(N)*/,
                            const float* logits /*(N,V)*/, const int32_t* targets /*(N)*/,
                            int64_t N, int64_t V, int32_t ignore_index = -100);

// ---- pooling over right-padded sequences ----------------------------------------------
// lengths[b] in [1, T]: the number of real tokens of sequence b; others throw tb::InputError.
void mean_pool_forward(float* out /*(B,C)*/, const float* inp /*(B,T,C)*/,
                       const int32_t* lengths /*(B)*/, int64_t B, int64_t T, int64_t C);
void mean_pool_backward(float* dinp /*(B,T,C)*/, const float* dout /*(B,C)*/,
                        const int32_t* lengths /*(B)*/, int64_t B, int64_t T, int64_t C);
void last_pool_forward(float* out /*(B,C)*/, const float* inp /*(B,T,C)*/,
                       const int32_t* lengths /*(B)*/, int64_t B, int64_t T, int64_t C);
void last_pool_backward(float* dinp /*(B,T,C)*/, const float* dout /*(B,C)*/,
                        const int32_t* lengths /*(B)*/, int64_t B, int64_t T, int64_t C);

}  // namespace tb::ops
