// Fast path of causal grouped-query attention with an unmasked key/value prefix, built from
// oneDNN batched matmuls on strided views plus oneDNN softmax.
//
// Head layout: query head h = kv·G + g (G = NH/NKV), so every (B,NH,...) tensor is viewed as
// (B,NKV,G,...) and K/V as (B,NKV,1,...): oneDNN broadcasts the size-1 batch dim, which is
// GQA without copying K/V. q/k/v are read in place from their token-strided rows (a fused
// QKV buffer works as is). The P prefix positions are a second matmul per product into the
// first P columns of the (T, P+T) score rows. Gradients of K/V must SUM over the G query
// heads that share a kv head, which a broadcast matmul cannot do, so dk/dv/dpk/dpv are one
// accumulating (beta = 1) matmul per g (and per sequence for a prefix shared by the batch).
// Masked scores cost a full T×T product: at these head sizes the matmul is cheaper than
// skipping the upper triangle block by block.
#include <cmath>
#include <limits>
#include <vector>

#include "harness/core/common.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"

namespace tb::ops {

namespace {

using dnn::View;

// Everything derived from an AttentionShape that the views need.
struct Geometry {
  int64_t B, T, NH, NKV, G, hs, P, L;
  int64_t q_ld, kv_ld;
  int64_t ebs, PB;  // prefix batch stride, and prefix batch count (1 when shared)
  // Strides of the (B,NKV,G,T,L) score/probability buffers.
  int64_t sB, sKV, sG;
  int64_t o_ld;  // token stride of out/dout: NH*hs

  explicit Geometry(const AttentionShape& s)
      : B(s.B), T(s.T), NH(s.NH), NKV(s.NKV), G(s.NKV > 0 ? s.NH / s.NKV : 0), hs(s.hs),
        P(s.P), L(s.P + s.T), q_ld(s.q_ld ? s.q_ld : s.NH * s.hs),
        kv_ld(s.kv_ld ? s.kv_ld : s.NKV * s.hs), ebs(s.extra_bstride),
        PB(s.extra_bstride ? s.B : 1), sB(s.NH * s.T * (s.P + s.T)),
        sKV(G * s.T * (s.P + s.T)), sG(s.T * (s.P + s.T)), o_ld(s.NH * s.hs) {
    TB_CHECK(B > 0 && T > 0 && NKV > 0 && hs > 0 && P >= 0, "attention: bad shape B=" << B
             << " T=" << T << " NKV=" << NKV << " hs=" << hs << " P=" << P);
    TB_CHECK(NH % NKV == 0, "attention: NH=" << NH << " is not a multiple of NKV=" << NKV);
    TB_CHECK(q_ld >= NH * hs && kv_ld >= NKV * hs, "attention: token stride too small");
    TB_CHECK(ebs == 0 || ebs >= NKV * P * hs, "attention: extra_bstride " << ebs
             << " is neither 0 nor >= NKV*P*hs");
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
    const int64_t bs = ebs ? ebs : NKV * P * hs;
    return transposed ? View{{PB, NKV, 1, hs, P}, {bs, P * hs, P * hs, 1, hs}}
                      : View{{PB, NKV, 1, P, hs}, {bs, P * hs, P * hs, hs, 1}};
  }
  // Prefix gradient rows: (B,NKV,P,hs) per sequence, or (NKV,P,hs) for one shared block.
  View prefix_g() const { return {{B, NKV, P, hs}, {ebs, P * hs, hs, 1}}; }
  View prefix_g1() const { return {{NKV, P, hs}, {P * hs, hs, 1}}; }
};

dnn::MatmulAttr mm_attr(float alpha, float beta) {
  dnn::MatmulAttr a;
  a.alpha = alpha;
  a.beta = beta;
  return a;
}

// d (kv or prefix rows) += alpha · Σ_g sᵀ[g] · x[g]: the gradient of keys/values shared by
// the G heads of a group. `s` is a score-shaped buffer (probabilities or score gradients)
// whose first column to read is `col0`, `cols` wide; x is query-side rows with token
// stride x_ld. For a prefix shared by the batch (`shared`), the sum also runs over B.
void group_grad(float* d, const float* s, int64_t col0, int64_t cols, const float* x,
                int64_t x_ld, float alpha, bool shared, bool prefix, const Geometry& g) {
  const dnn::MatmulAttr acc = mm_attr(alpha, 1.0f);
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

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const float* pk, const float* pv, const AttentionShape& s) {
  const Geometry g(s);
  TB_CHECK(g.P == 0 || (pk && pv), "attention: P=" << g.P << " but no prefix keys/values");
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.hs));
  const float ninf = -std::numeric_limits<float>::infinity();

  // Scores: att[..., P:] = scale · Q Kᵀ, att[..., :P] = scale · Q PKᵀ.
  dnn::matmul(att + g.P, g.scores(g.T), q, g.qrows(g.q_ld), k, g.kv(true), nullptr,
              mm_attr(scale, 0.0f));
  if (g.P)
    dnn::matmul(att, g.scores(g.P), q, g.qrows(g.q_ld), pk, g.prefix(true), nullptr,
                mm_attr(scale, 0.0f));
  // Causal mask: query t sees the prefix and keys 0..t.
  const int64_t rows = g.B * g.NH * g.T;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    float* a = att + r * g.L;
    for (int64_t j = g.P + r % g.T + 1; j < g.L; j++) a[j] = ninf;
  }
  dnn::softmax_forward(att, att, rows, g.L);

  // out = att[..., P:] · V + att[..., :P] · PV.
  const View ov = g.qrows(g.o_ld);
  dnn::matmul(out, ov, att + g.P, g.scores(g.T), v, g.kv(false), nullptr, mm_attr(1.0f, 0.0f));
  if (g.P)
    dnn::matmul(out, ov, att, g.scores(g.P), pv, g.prefix(false), nullptr, mm_attr(1.0f, 1.0f));
}

void attention_backward(float* dq, float* dk, float* dv, float* dpk, float* dpv, float* scratch,
                        const float* dout, const float* att, const float* q, const float* k,
                        const float* v, const float* pk, const float* pv,
                        const AttentionShape& s) {
  const Geometry g(s);
  TB_CHECK(g.P == 0 || (pk && pv), "attention: P=" << g.P << " but no prefix keys/values");
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.hs));
  const bool shared = g.P && g.ebs == 0;
  const View ov = g.qrows(g.o_ld);

  // Values: dv += attᵀ · dout (summed over the G heads of each group).
  if (dv) group_grad(dv, att, g.P, g.T, dout, g.o_ld, 1.0f, false, false, g);
  if (dpv && g.P) group_grad(dpv, att, 0, g.P, dout, g.o_ld, 1.0f, shared, true, g);

  if (!dq && !dk && !(dpk && g.P)) return;
  // d(att) = dout · Vᵀ, then through the softmax in place: d(scores) = att ⊙ (datt − Σ att·datt).
  // Masked entries hold finite garbage that the zero probabilities cancel.
  dnn::matmul(scratch + g.P, g.scores(g.T), dout, ov, v, g.kv(true), nullptr, mm_attr(1.0f, 0.0f));
  if (g.P)
    dnn::matmul(scratch, g.scores(g.P), dout, ov, pv, g.prefix(true), nullptr,
                mm_attr(1.0f, 0.0f));
  dnn::softmax_backward(scratch, scratch, att, g.B * g.NH * g.T, g.L);

  // Queries: dq += scale · dscores · [PK; K].
  if (dq) {
    const View qv = g.qrows(g.q_ld);
    dnn::matmul(dq, qv, scratch + g.P, g.scores(g.T), k, g.kv(false), nullptr,
                mm_attr(scale, 1.0f));
    if (g.P)
      dnn::matmul(dq, qv, scratch, g.scores(g.P), pk, g.prefix(false), nullptr,
                  mm_attr(scale, 1.0f));
  }
  // Keys: dk += scale · dscoresᵀ · q (summed over the heads of each group).
  if (dk) group_grad(dk, scratch, g.P, g.T, q, g.q_ld, scale, false, false, g);
  if (dpk && g.P) group_grad(dpk, scratch, 0, g.P, q, g.q_ld, scale, shared, true, g);
}

}  // namespace tb::ops
