// Every backward of the reference ops (ops_ref.h), run in double, against central finite
// differences of a random linear functional f = Σ r ⊙ forward(x): the backward given
// dout = r must return ∂f/∂x for every input and weight. The fast paths are then checked
// against these references in test_ops.cpp, so together they pin the fast gradients.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "harness/core/ops_ref.h"
#include "tests/core/test_ops_util.h"

namespace tb::test {
namespace {

namespace ref = tb::ops::ref;
constexpr double kFdTol = 1e-6;

VecD randd(int64_t n, uint64_t seed, float scale = 1.0f) {
  return to_double(randn(n, seed, scale));
}

TEST(OpsGrad, Embedding) {
  const int64_t B = 2, T = 3, C = 4, V = 5, maxT = 8, pos0 = 2;
  const std::vector<int32_t> tokens = {1, 3, 1, 4, 1, 0};  // repeats: gradients must add up
  VecD wte = randd(V * C, 1), wpe = randd(maxT * C, 2), r = randd(B * T * C, 3);
  VecD out(B * T * C);
  auto f = [&] {
    ref::embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, pos0);
    return dot(r, out);
  };
  VecD dwte(V * C, 0.0), dwpe(maxT * C, 0.0);
  ref::embedding_backward(dwte.data(), dwpe.data(), r.data(), tokens.data(), B, T, C, pos0);
  EXPECT_LT(fd_error(wte, dwte, f), kFdTol);
  EXPECT_LT(fd_error(wpe, dwpe, f), kFdTol);
}

TEST(OpsGrad, Linear) {
  const int64_t N = 3, IC = 5, OC = 4;
  VecD x = randd(N * IC, 1), w = randd(OC * IC, 2), b = randd(OC, 3), r = randd(N * OC, 4);
  VecD out(N * OC);
  auto f = [&] {
    ref::linear_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC);
    return dot(r, out);
  };
  VecD dx(N * IC, 0.0), dw(OC * IC, 0.0), db(OC, 0.0);
  ref::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, IC, OC);
  EXPECT_LT(fd_error(x, dx, f), kFdTol);
  EXPECT_LT(fd_error(w, dw, f), kFdTol);
  EXPECT_LT(fd_error(b, db, f), kFdTol);
}

TEST(OpsGrad, LayerNorm) {
  const int64_t N = 3, C = 7;
  VecD x = randd(N * C, 1, 2.0f), w = randd(C, 2), b = randd(C, 3), r = randd(N * C, 4);
  VecD out(N * C), mean(N), rstd(N);
  auto f = [&] {
    ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                           1e-5);
    return dot(r, out);
  };
  f();
  VecD dx(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  EXPECT_LT(fd_error(x, dx, f), kFdTol);
  EXPECT_LT(fd_error(w, dw, f), kFdTol);
  EXPECT_LT(fd_error(b, db, f), kFdTol);
}

TEST(OpsGrad, RmsNorm) {
  const int64_t N = 3, C = 7;
  VecD x = randd(N * C, 1, 2.0f), w = randd(C, 2), r = randd(N * C, 4);
  VecD out(N * C), rstd(N);
  auto f = [&] {
    ref::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6);
    return dot(r, out);
  };
  f();
  VecD dx(N * C, 0.0), dw(C, 0.0);
  ref::rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_LT(fd_error(x, dx, f), kFdTol);
  EXPECT_LT(fd_error(w, dw, f), kFdTol);
}

TEST(OpsGrad, Gelu) {
  const int64_t n = 41;
  VecD x(n), r = randd(n, 4), out(n);
  for (int64_t i = 0; i < n; i++) x[i] = -5.0 + 0.25 * i;  // both tails and the bend
  auto f = [&] {
    ref::gelu_forward(out.data(), x.data(), n);
    return dot(r, out);
  };
  VecD dx(n, 0.0);
  ref::gelu_backward(dx.data(), r.data(), x.data(), n);
  EXPECT_LT(fd_error(x, dx, f), kFdTol);
}

TEST(OpsGrad, SwiGlu) {
  const int64_t n = 40;
  VecD g = randd(n, 1, 3.0f), u = randd(n, 2), r = randd(n, 4), out(n);
  auto f = [&] {
    ref::swiglu_forward(out.data(), g.data(), u.data(), n);
    return dot(r, out);
  };
  VecD dg(n, 0.0), du(n, 0.0);
  ref::swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
  EXPECT_LT(fd_error(g, dg, f), kFdTol);
  EXPECT_LT(fd_error(u, du, f), kFdTol);
}

TEST(OpsGrad, Rope) {
  // Strided rows (ld > NH*hs, as in a fused QKV buffer) and a non-zero start position.
  const int64_t B = 2, T = 3, NH = 2, hs = 6, ld = NH * hs + 5, pos0 = 7;
  const double theta = 10000.0;
  VecD x = randd(B * T * ld, 1), r = randd(B * T * ld, 2), out(B * T * ld, 0.0);
  auto f = [&] {
    ref::rope_forward(out.data(), x.data(), B, T, NH, hs, ld, theta, pos0);
    return dot(r, out);
  };
  VecD dx(B * T * ld, 0.0);
  ref::rope_backward(dx.data(), r.data(), B, T, NH, hs, ld, theta, pos0);
  EXPECT_LT(fd_error(x, dx, f), kFdTol);
  // In place, the backward overwrites with the same gradient (padding columns untouched).
  VecD inplace = r;
  ref::rope_backward(inplace.data(), inplace.data(), B, T, NH, hs, ld, theta, pos0);
  for (int64_t i = 0; i < B * T * ld; i++)
    EXPECT_DOUBLE_EQ(inplace[i], i % ld < NH * hs ? dx[i] : r[i]) << i;
}

// Attention: q, k, v live in one fused (B,T,q_ld + 2·kv_ld) buffer, or in three dense
// buffers, so the strided and the dense layouts are both exercised.
struct AttnCase {
  int64_t B, T, NH, NKV, hs, P;
  bool per_sequence_prefix;  // extra_bstride = NKV·S·hs instead of 0
  bool fused;
  int64_t S = 0;  // rows per kv head of a prefix block (a KV cache's capacity); 0 means P
};

class OpsGradAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(OpsGradAttention, MatchesFiniteDifferences) {
  const AttnCase c = GetParam();
  ops::AttentionShape s{c.B, c.T, c.NH, c.NKV, c.hs, c.P};
  const int64_t qw = c.NH * c.hs, kw = c.NKV * c.hs;
  // Fused: one row per token [q | k | v]; dense: three buffers, offsets in the same vector.
  const int64_t row = c.fused ? qw + 2 * kw : 0;
  if (c.fused) s.q_ld = s.kv_ld = row;
  const int64_t n_qkv = c.B * c.T * (qw + 2 * kw);
  const int64_t q_off = 0, k_off = c.fused ? qw : c.B * c.T * qw,
                v_off = c.fused ? qw + kw : c.B * c.T * (qw + kw);
  const int64_t S = c.S ? c.S : c.P;
  s.extra_hstride = S * c.hs;
  if (c.per_sequence_prefix) s.extra_bstride = c.NKV * S * c.hs;
  const int64_t n_prefix = (c.per_sequence_prefix ? c.B : 1) * c.NKV * S * c.hs;
  const int64_t L = c.P + c.T;

  VecD qkv = randd(n_qkv, 11), pk = randd(n_prefix, 12), pv = randd(n_prefix, 13);
  VecD r = randd(c.B * c.T * qw, 14), out(c.B * c.T * qw), att(c.B * c.NH * c.T * L);
  auto f = [&] {
    ref::attention_forward(out.data(), att.data(), qkv.data() + q_off, qkv.data() + k_off,
                           qkv.data() + v_off, c.P ? pk.data() : nullptr, c.P ? pv.data() : nullptr,
                           s);
    return dot(r, out);
  };
  f();
  // Masked probabilities are exactly 0 and every row sums to 1.
  for (int64_t bh = 0; bh < c.B * c.NH; bh++)
    for (int64_t t = 0; t < c.T; t++) {
      double sum = 0.0;
      for (int64_t j = 0; j < L; j++) {
        const double a = att[(bh * c.T + t) * L + j];
        if (j > c.P + t) {
          EXPECT_EQ(a, 0.0);
        }
        sum += a;
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
  VecD dqkv(n_qkv, 0.0), dpk(n_prefix, 0.0), dpv(n_prefix, 0.0), scratch(att.size());
  ref::attention_backward(dqkv.data() + q_off, dqkv.data() + k_off, dqkv.data() + v_off,
                          c.P ? dpk.data() : nullptr, c.P ? dpv.data() : nullptr, scratch.data(),
                          r.data(), att.data(), qkv.data() + q_off, qkv.data() + k_off,
                          qkv.data() + v_off, c.P ? pk.data() : nullptr, c.P ? pv.data() : nullptr,
                          s);
  EXPECT_LT(fd_error(qkv, dqkv, f, 1000), kFdTol);
  if (c.P) {
    EXPECT_LT(fd_error(pk, dpk, f, 1000), kFdTol);
    EXPECT_LT(fd_error(pv, dpv, f, 1000), kFdTol);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, OpsGradAttention,
    ::testing::Values(AttnCase{2, 4, 2, 2, 3, 0, false, false},   // MHA, no prefix
                      AttnCase{2, 4, 4, 2, 4, 0, false, true},    // GQA 2, fused QKV
                      AttnCase{1, 3, 4, 1, 2, 2, false, true},    // GQA 4 (MQA), shared prefix
                      AttnCase{2, 3, 4, 2, 3, 2, false, false},   // shared prefix over B
                      AttnCase{2, 3, 2, 1, 4, 3, true, true},     // per-sequence block
                      AttnCase{2, 3, 4, 2, 2, 2, true, true, 5},  // KV cache of capacity 5
                      AttnCase{3, 1, 2, 2, 2, 2, true, false}));  // T = 1 decode step

TEST(OpsGrad, Residual) {
  const int64_t n = 9;
  VecD a = randd(n, 1), b = randd(n, 2), r = randd(n, 3), out(n);
  auto f = [&] {
    ref::residual_forward(out.data(), a.data(), b.data(), n);
    return dot(r, out);
  };
  VecD da(n, 0.0), db(n, 0.0);
  ref::residual_backward(da.data(), db.data(), r.data(), n);
  EXPECT_LT(fd_error(a, da, f), kFdTol);
  EXPECT_LT(fd_error(b, db, f), kFdTol);
}

TEST(OpsGrad, CrossEntropyWithIgnoreIndex) {
  const int64_t N = 5, V = 7;
  const std::vector<int32_t> targets = {3, -100, 0, 6, -100};
  VecD logits = randd(N * V, 1, 3.0f), r = randd(N, 2), losses(N);
  auto f = [&] {
    EXPECT_EQ(ref::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V), 3);
    return dot(r, losses);
  };
  f();
  EXPECT_EQ(losses[1], 0.0);
  EXPECT_EQ(losses[4], 0.0);
  VecD dlogits(N * V, 0.0);
  ref::cross_entropy_backward(dlogits.data(), r.data(), logits.data(), targets.data(), N, V);
  for (int64_t i = 0; i < V; i++) EXPECT_EQ(dlogits[1 * V + i], 0.0);  // ignored row
  EXPECT_LT(fd_error(logits, dlogits, f), kFdTol);
}

TEST(OpsGrad, Pooling) {
  const int64_t B = 3, T = 4, C = 2;
  const std::vector<int32_t> lengths = {4, 1, 2};
  VecD x = randd(B * T * C, 1), r = randd(B * C, 2), out(B * C);
  for (bool last : {false, true}) {
    auto f = [&] {
      if (last)
        ref::last_pool_forward(out.data(), x.data(), lengths.data(), B, T, C);
      else
        ref::mean_pool_forward(out.data(), x.data(), lengths.data(), B, T, C);
      return dot(r, out);
    };
    VecD dx(B * T * C, 0.0);
    if (last)
      ref::last_pool_backward(dx.data(), r.data(), lengths.data(), B, T, C);
    else
      ref::mean_pool_backward(dx.data(), r.data(), lengths.data(), B, T, C);
    EXPECT_LT(fd_error(x, dx, f), kFdTol) << (last ? "last" : "mean");
    // Padding positions get no gradient.
    EXPECT_EQ(dx[(1 * T + 1) * C], 0.0);
    EXPECT_EQ(dx[(2 * T + 3) * C + 1], 0.0);
  }
}

}  // namespace
}  // namespace tb::test
