// Fast path of causal grouped-query attention with an unmasked key/value prefix, built from
// oneDNN batched matmuls on strided views. The softmax and its backward are hand loops over
// the visible part of each score row only (the prefix and keys 0..t): oneDNN's softmax would
// also sweep the masked half; measured, the hand loop is as fast or faster and writes exact
// zeros where masked.
//
// Head layout: query head h = kv·G + g (G = NH/NKV), so every (B,NH,...) tensor is viewed as
// (B,NKV,G,...) and K/V as (B,NKV,1,...): oneDNN broadcasts the size-1 batch dim, which is
// GQA without copying K/V. q/k/v are read in place from their token-strided rows (a fused
// QKV buffer works as is). The P prefix positions are a second matmul per product into the
// first P columns of the (T, P+T) score rows. Gradients of K/V must SUM over the G query
// heads that share a kv head, which a broadcast matmul cannot do, so dk/dv/dpk/dpv are one
// accumulating (beta = 1) matmul per g (and per sequence for a prefix shared by the batch).
// The masked upper triangle is computed and discarded (twice the useful FLOPs of the score
// products): skipping it would take many small block matmuls instead of one batched one.
#include <cmath>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

namespace {

using dnn::View;

// Everything derived from an AttentionShape that the views need.
struct Geometry {
  int64_t B, T, NH, NKV, G, hs, P, L;
  int64_t q_ld, kv_ld;
  int64_t ebs, PB;  // prefix batch stride, and prefix batch count (1 when shared)
  int64_t hstride;  // prefix kv-head stride (P*hs, or S*hs for a KV cache of capacity S)
  // Strides of the (B,NKV,G,T,L) score/probability buffers.
  int64_t sB, sKV, sG;
  int64_t o_ld;  // token stride of out/dout: NH*hs

  explicit Geometry(const AttentionShape& s)
      : B(s.B),
        T(s.T),
        NH(s.NH),
        NKV(s.NKV),
        G(s.NKV > 0 ? s.NH / s.NKV : 0),
        hs(s.hs),
        P(s.P),
        L(s.P + s.T),
        q_ld(s.q_ld ? s.q_ld : s.NH * s.hs),
        kv_ld(s.kv_ld ? s.kv_ld : s.NKV * s.hs),
        ebs(s.extra_bstride),
        PB(s.extra_bstride ? s.B : 1),
        hstride(s.extra_hstride ? s.extra_hstride : s.P * s.hs),
        sB(s.NH * s.T * (s.P + s.T)),
        sKV(G * s.T * (s.P + s.T)),
        sG(s.T * (s.P + s.T)),
        o_ld(s.NH * s.hs) {
    TB_CHECK(B > 0 && T > 0 && NH > 0 && NKV > 0 && hs > 0 && P >= 0,
             "attention: bad shape B=" << B << " T=" << T << " NH=" << NH << " NKV=" << NKV
                                       << " hs=" << hs << " P=" << P);
    TB_CHECK(NH % NKV == 0, "attention: NH=" << NH << " is not a multiple of NKV=" << NKV);
    TB_CHECK(q_ld >= NH * hs && kv_ld >= NKV * hs, "attention: token stride too small");
    TB_CHECK(hstride >= P * hs, "attention: extra_hstride " << hstride << " < P*hs");
    TB_CHECK(ebs == 0 || ebs >= NKV * hstride,
             "attention: extra_bstride " << ebs << " is neither 0 nor >= NKV*hstride");
  }

  // (B,NKV,G,T,cols) block of a score buffer; its columns start at the view's pointer.
  View scores(int64_t cols) const { return {{B, NKV, G, T, cols}, {sB, sKV, sG, L, 1}}; }
  // Transposed (B,NKV,cols,T) block of one g of a score buffer (pointer offset g·sG + col0).
  View scores_t(int64_t cols) const { return {{B, NKV, cols, T}, {sB, sKV, 1, L}}; }
  // Same for a prefix shared by the batch: one sequence (pointer offset b·sB + g·sG).
  View scores_t1(int64_t cols) const { return {{NKV, cols, T}, {sKV, 1, L}}; }

  // Query-side rows (q, dq: ld = q_ld; out, dout: ld = o_ld) as (B,NKV,G,T,hs).
  View qrows(int64_t ld) const { return {{B, NKV, G, T, hs}, {T * ld, G * hs, hs, ld, 1}}; }
  // One g of them as (B,NKV,T,hs) (pointer offset g·hs), or of one sequence as (NKV,T,hs).
  View qrows_g(int64_t ld) const { return {{B, NKV, T, hs}, {T * ld, G * hs, ld, 1}}; }
  View qrows_g1(int64_t ld) const { return {{NKV, T, hs}, {G * hs, ld, 1}}; }

  // Key/value rows broadcast over G: (B,NKV,1,T,hs), or transposed (B,NKV,1,hs,T).
  View kv(bool transposed) const {
    return transposed ? View{{B, NKV, 1, hs, T}, {T * kv_ld, hs, hs, 1, kv_ld}}
                      : View{{B, NKV, 1, T, hs}, {T * kv_ld, hs, hs, kv_ld, 1}};
  }
  // Key/value gradient rows (B,NKV,T,hs).
  View kv_g() const { return {{B, NKV, T, hs}, {T * kv_ld, hs, kv_ld, 1}}; }
  // Prefix rows broadcast over G (and over B when shared): (PB,NKV,1,P,hs) or transposed.
  View prefix(bool transposed) const {
    const int64_t bs = ebs ? ebs : NKV * hstride;
    return transposed ? View{{PB, NKV, 1, hs, P}, {bs, hstride, hstride, 1, hs}}
                      : View{{PB, NKV, 1, P, hs}, {bs, hstride, hstride, hs, 1}};
  }
  // Prefix gradient rows: (B,NKV,P,hs) per sequence, or (NKV,P,hs) for one shared block.
  View prefix_g() const { return {{B, NKV, P, hs}, {ebs, hstride, hs, 1}}; }
  View prefix_g1() const { return {{NKV, P, hs}, {hstride, hs, 1}}; }
};

dnn::MatmulAttr mm_attr(float alpha, float beta) {
  dnn::MatmulAttr a;
  a.alpha = alpha;
  a.beta = beta;
  return a;
}

// d (kv or prefix rows) += Σ_g sᵀ[g] · x[g]: the gradient of keys/values shared by the G
// heads of a group. `s` is a score-shaped buffer (probabilities or score gradients) whose
// first column to read is `col0`, `cols` wide; x is query-side rows with token stride
// x_ld. For a prefix shared by the batch (`shared`), the sum also runs over B.
void group_grad(float* d, const float* s, int64_t col0, int64_t cols, const float* x, int64_t x_ld,
                bool shared, bool prefix, const Geometry& g) {
  const dnn::MatmulAttr acc = mm_attr(1.0f, 1.0f);
  if (!shared) {
    const View dv = prefix ? g.prefix_g() : g.kv_g();
    for (int64_t gi = 0; gi < g.G; gi++)
      dnn::matmul(d, dv, s + gi * g.sG + col0, g.scores_t(cols), x + gi * g.hs, g.qrows_g(x_ld),
                  nullptr, acc);
    return;
  }
  for (int64_t b = 0; b < g.B; b++)
    for (int64_t gi = 0; gi < g.G; gi++)
      dnn::matmul(d, g.prefix_g1(), s + b * g.sB + gi * g.sG + col0, g.scores_t1(cols),
                  x + b * g.T * x_ld + gi * g.hs, g.qrows_g1(x_ld), nullptr, acc);
}

// In place over each (P+T)-wide score row: softmax of its visible part (the prefix and
// keys 0..t), zeros after it.
void causal_softmax_forward(float* att, const Geometry& g) {
  const int64_t rows = g.B * g.NH * g.T;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    float* a = att + r * g.L;
    const int64_t vis = g.P + r % g.T + 1;
    const float mx = detail::row_max(a, vis);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < vis; j++) {
      a[j] = detail::exp_fast(a[j] - mx);
      sum += a[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < vis; j++) a[j] *= inv;
    for (int64_t j = vis; j < g.L; j++) a[j] = 0.0f;
  }
}

// In place: ds (in: d(att), out: d(logits)) = att ⊙ (ds − Σ att·ds) on the visible part,
// zeros after it.
void causal_softmax_backward(float* ds, const float* att, const Geometry& g) {
  const int64_t rows = g.B * g.NH * g.T;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    float* d = ds + r * g.L;
    const float* a = att + r * g.L;
    const int64_t vis = g.P + r % g.T + 1;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < vis; j++) dot += a[j] * d[j];
#pragma omp simd
    for (int64_t j = 0; j < vis; j++) d[j] = a[j] * (d[j] - dot);
    for (int64_t j = vis; j < g.L; j++) d[j] = 0.0f;
  }
}

// One decode step (T = 1) as plain loops: each of the B·NH query rows reads its P cached
// (or prefix) keys/values and the new one. A KV cache grows P by one per token, so the
// matmul path would build new primitives for every generated token; this path builds none.
void decode_forward(float* out, float* att, const float* q, const float* k, const float* v,
                    const float* pk, const float* pv, float scale, const Geometry& g) {
  const int64_t pbs = g.ebs;  // 0 when the prefix is shared by the batch
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < g.B * g.NH; bh++) {
    const int64_t b = bh / g.NH, h = bh % g.NH, kh = h / g.G;
    const float* qr = q + b * g.q_ld + h * g.hs;
    float* a = att + bh * g.L;
    auto key = [&](int64_t j) {
      return j < g.P ? pk + b * pbs + kh * g.hstride + j * g.hs : k + b * g.kv_ld + kh * g.hs;
    };
    auto value = [&](int64_t j) {
      return j < g.P ? pv + b * pbs + kh * g.hstride + j * g.hs : v + b * g.kv_ld + kh * g.hs;
    };
    for (int64_t j = 0; j < g.L; j++) {
      const float* kr = key(j);
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < g.hs; d++) dot += qr[d] * kr[d];
      a[j] = dot * scale;
    }
    const float mx = detail::row_max(a, g.L);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < g.L; j++) {
      a[j] = detail::exp_fast(a[j] - mx);
      sum += a[j];
    }
    const float inv = 1.0f / sum;
    float* o = out + b * g.o_ld + h * g.hs;
    for (int64_t d = 0; d < g.hs; d++) o[d] = 0.0f;
    for (int64_t j = 0; j < g.L; j++) {
      a[j] *= inv;
      const float* vr = value(j);
#pragma omp simd
      for (int64_t d = 0; d < g.hs; d++) o[d] += a[j] * vr[d];
    }
  }
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const float* pk, const float* pv, const AttentionShape& s) {
  const Geometry g(s);
  TB_CHECK(g.P == 0 || (pk && pv), "attention: P=" << g.P << " but no prefix keys/values");
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.hs));
  if (g.T == 1) {
    decode_forward(out, att, q, k, v, pk, pv, scale, g);
    return;
  }

  // Scores: att[..., P:] = scale · Q Kᵀ, att[..., :P] = scale · Q PKᵀ.
  dnn::matmul(att + g.P, g.scores(g.T), q, g.qrows(g.q_ld), k, g.kv(true), nullptr,
              mm_attr(scale, 0.0f));
  if (g.P)
    dnn::matmul(att, g.scores(g.P), q, g.qrows(g.q_ld), pk, g.prefix(true), nullptr,
                mm_attr(scale, 0.0f));
  causal_softmax_forward(att, g);

  // out = att[..., P:] · V + att[..., :P] · PV.
  const View ov = g.qrows(g.o_ld);
  dnn::matmul(out, ov, att + g.P, g.scores(g.T), v, g.kv(false), nullptr, mm_attr(1.0f, 0.0f));
  if (g.P)
    dnn::matmul(out, ov, att, g.scores(g.P), pv, g.prefix(false), nullptr, mm_attr(1.0f, 1.0f));
}

void attention_backward(float* dq, float* dk, float* dv, float* dpk, float* dpv, float* scratch,
                        const float* dout, const float* att, const float* q, const float* k,
                        const float* v, const float* pk, const float* pv, const AttentionShape& s) {
  const Geometry g(s);
  TB_CHECK(g.P == 0 || (pk && pv), "attention: P=" << g.P << " but no prefix keys/values");
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.hs));
  const bool shared = g.P && g.ebs == 0;
  const View ov = g.qrows(g.o_ld);

  // Values: dv += attᵀ · dout (summed over the G heads of each group).
  if (dv) group_grad(dv, att, g.P, g.T, dout, g.o_ld, false, false, g);
  if (dpv && g.P) group_grad(dpv, att, 0, g.P, dout, g.o_ld, shared, true, g);

  if (!dq && !dk && !(dpk && g.P)) return;
  // d(att) = dout · Vᵀ, then through the softmax in place: for raw scores S = Q·Kᵀ,
  // dS = scale · att ⊙ (datt − Σ att·datt). The softmax backward is linear in datt, so
  // `scale` rides on the first product (alpha without beta) and the accumulating products
  // below are plain beta = 1 matmuls (alpha with beta falls off oneDNN's gemm path).
  // The full products also fill masked entries; the softmax backward zeroes them.
  dnn::matmul(scratch + g.P, g.scores(g.T), dout, ov, v, g.kv(true), nullptr, mm_attr(scale, 0.0f));
  if (g.P)
    dnn::matmul(scratch, g.scores(g.P), dout, ov, pv, g.prefix(true), nullptr,
                mm_attr(scale, 0.0f));
  causal_softmax_backward(scratch, att, g);

  // Queries: dq += dS · [PK; K].
  if (dq) {
    const View qv = g.qrows(g.q_ld);
    dnn::matmul(dq, qv, scratch + g.P, g.scores(g.T), k, g.kv(false), nullptr, mm_attr(1.0f, 1.0f));
    if (g.P)
      dnn::matmul(dq, qv, scratch, g.scores(g.P), pk, g.prefix(false), nullptr,
                  mm_attr(1.0f, 1.0f));
  }
  // Keys: dk += dSᵀ · q (summed over the heads of each group).
  if (dk) group_grad(dk, scratch, g.P, g.T, q, g.q_ld, false, false, g);
  if (dpk && g.P) group_grad(dpk, scratch, 0, g.P, q, g.q_ld, shared, true, g);
}

}  // namespace tb::ops
