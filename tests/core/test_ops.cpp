// Fast paths of ops.h (oneDNN / OpenMP) against the reference loops of ops_ref.h run in
// double on the same inputs, over sweeps of shapes (T = 1, odd C, C not a multiple of 16,
// GQA ratios 1/2/4, prefix P = 0 and P > 0 shared or per sequence, fused/strided QKV).
// Every backward starts from non-zero gradients, so `+=` is what is checked, and null
// gradients are checked to be skipped. Also: bad targets/lengths raise tb::InputError,
// results are bit-identical between runs, and a warmed-up step creates no primitive.
// Error measure and tolerance: rel_err (test_ops_util.h) ≤ 1e-5.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"
#include "harness/core/ops_ref.h"
#include "tests/core/test_ops_util.h"

namespace tb::test {
namespace {

namespace ref = tb::ops::ref;
constexpr double kTol = 1e-5;

// A tensor held twice: float for the fast path, double for the reference, same values.
struct Pair {
  VecF f;
  VecD d;
  Pair() = default;
  Pair(int64_t n, uint64_t seed, float scale = 1.0f) : f(randn(n, seed, scale)), d(to_double(f)) {}
  explicit Pair(const VecF& v) : f(v), d(to_double(v)) {}
  float* fp() { return f.data(); }
  double* dp() { return d.data(); }
  double err() const { return rel_err(f, d); }
};

// A gradient that was asked for matches the reference; one that was not is untouched.
void expect_grad(bool wanted, const Pair& g, const VecF& before) {
  if (wanted)
    EXPECT_LT(g.err(), kTol);
  else
    EXPECT_EQ(g.f, before);
}

// ---- vectorised helpers ----------------------------------------------------------------------

TEST(OpsDetail, ExpFastIsAccurate) {
  // Every op using exp_fast inherits its error; 1e-6 relative keeps them far inside kTol.
  double worst = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    const float xf = static_cast<float>(x);
    const double e = std::exp(static_cast<double>(xf));
    worst = std::max(worst, std::fabs(ops::detail::exp_fast(xf) - e) / e);
  }
  EXPECT_LT(worst, 1e-6);
  EXPECT_EQ(ops::detail::exp_fast(0.0f), 1.0f);
  EXPECT_LT(ops::detail::exp_fast(-1000.0f), 1e-37f);  // clamped, not NaN or negative
  EXPECT_GE(ops::detail::exp_fast(-1000.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(ops::detail::exp_fast(1000.0f)));
}

TEST(OpsDetail, RowMaxFindsTheMaximum) {
  VecF x = randn(1000, 3);
  for (int64_t n : {1, 15, 16, 17, 1000}) {
    float want = x[0];
    for (int64_t i = 0; i < n; i++) want = std::max(want, x[i]);
    EXPECT_EQ(ops::detail::row_max(x.data(), n), want) << n;
  }
  x[999] = 100.0f;
  EXPECT_EQ(ops::detail::row_max(x.data(), 1000), 100.0f);
}

// ---- linear -------------------------------------------------------------------------------

using LinearCase = std::tuple<int64_t, int64_t, int64_t, bool>;  // N, IC, OC, bias
class OpsLinear : public ::testing::TestWithParam<LinearCase> {};

TEST_P(OpsLinear, MatchesReference) {
  const auto [N, IC, OC, has_bias] = GetParam();
  Pair x(N * IC, 1), w(OC * IC, 2, 0.3f), b(OC, 3), out(N * OC, 4), dout(N * OC, 5);
  Pair dx(N * IC, 6), dw(OC * IC, 7), db(OC, 8);  // non-zero: backward must add
  ops::linear_forward(out.fp(), x.fp(), w.fp(), has_bias ? b.fp() : nullptr, N, IC, OC);
  ref::linear_forward(out.dp(), x.dp(), w.dp(), has_bias ? b.dp() : nullptr, N, IC, OC);
  EXPECT_LT(out.err(), kTol);
  ops::linear_backward(dx.fp(), dw.fp(), db.fp(), dout.fp(), x.fp(), w.fp(), N, IC, OC);
  ref::linear_backward(dx.dp(), dw.dp(), db.dp(), dout.dp(), x.dp(), w.dp(), N, IC, OC);
  EXPECT_LT(dx.err(), kTol);
  EXPECT_LT(dw.err(), kTol);
  EXPECT_LT(db.err(), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsLinear,
                         ::testing::Combine(::testing::Values(1, 7, 64),
                                            ::testing::Values(1, 7, 33, 100),
                                            ::testing::Values(1, 16, 33, 100), ::testing::Bool()));

TEST(OpsLinearNull, SkipsNullGradients) {
  const int64_t N = 9, IC = 13, OC = 5;
  Pair x(N * IC, 1), w(OC * IC, 2), dout(N * OC, 5);
  for (int mask = 0; mask < 8; mask++) {
    Pair dx(N * IC, 6), dw(OC * IC, 7), db(OC, 8);
    const VecF dx0 = dx.f, dw0 = dw.f, db0 = db.f;
    ops::linear_backward(mask & 1 ? dx.fp() : nullptr, mask & 2 ? dw.fp() : nullptr,
                         mask & 4 ? db.fp() : nullptr, dout.fp(), x.fp(), w.fp(), N, IC, OC);
    ref::linear_backward(dx.dp(), dw.dp(), db.dp(), dout.dp(), x.dp(), w.dp(), N, IC, OC);
    expect_grad(mask & 1, dx, dx0);
    expect_grad(mask & 2, dw, dw0);
    expect_grad(mask & 4, db, db0);
  }
}

// ---- normalisation ------------------------------------------------------------------------

using NormCase = std::tuple<int64_t, int64_t>;  // N, C
class OpsNorm : public ::testing::TestWithParam<NormCase> {};

// Inputs with a non-zero mean and spread, as residual streams have.
Pair norm_input(int64_t N, int64_t C) {
  VecF x = randn(N * C, 1, 2.0f);
  for (auto& v : x) v += 0.7f;
  return Pair(x);
}

TEST_P(OpsNorm, LayerNormMatchesReference) {
  const auto [N, C] = GetParam();
  Pair x = norm_input(N, C), w(C, 2), b(C, 3), out(N * C, 4), mean(N, 5), rstd(N, 6);
  Pair dout(N * C, 7), dx(N * C, 8), dw(C, 9), db(C, 10);
  ops::layernorm_forward(out.fp(), mean.fp(), rstd.fp(), x.fp(), w.fp(), b.fp(), N, C, 1e-5f);
  ref::layernorm_forward(out.dp(), mean.dp(), rstd.dp(), x.dp(), w.dp(), b.dp(), N, C, 1e-5);
  EXPECT_LT(out.err(), kTol);
  EXPECT_LT(mean.err(), kTol);
  EXPECT_LT(rstd.err(), kTol);
  // Both backwards read the fast path's statistics, so only the backward is compared.
  mean.d = to_double(mean.f);
  rstd.d = to_double(rstd.f);
  ops::layernorm_backward(dx.fp(), dw.fp(), db.fp(), dout.fp(), x.fp(), w.fp(), mean.fp(),
                          rstd.fp(), N, C);
  ref::layernorm_backward(dx.dp(), dw.dp(), db.dp(), dout.dp(), x.dp(), w.dp(), mean.dp(),
                          rstd.dp(), N, C);
  EXPECT_LT(dx.err(), kTol);
  EXPECT_LT(dw.err(), kTol);
  EXPECT_LT(db.err(), kTol);
}

TEST_P(OpsNorm, RmsNormMatchesReference) {
  const auto [N, C] = GetParam();
  Pair x = norm_input(N, C), w(C, 2), out(N * C, 4), rstd(N, 6);
  Pair dout(N * C, 7), dx(N * C, 8), dw(C, 9);
  ops::rmsnorm_forward(out.fp(), rstd.fp(), x.fp(), w.fp(), N, C, 1e-6f);
  ref::rmsnorm_forward(out.dp(), rstd.dp(), x.dp(), w.dp(), N, C, 1e-6);
  EXPECT_LT(out.err(), kTol);
  EXPECT_LT(rstd.err(), kTol);
  rstd.d = to_double(rstd.f);
  ops::rmsnorm_backward(dx.fp(), dw.fp(), dout.fp(), x.fp(), w.fp(), rstd.fp(), N, C);
  ref::rmsnorm_backward(dx.dp(), dw.dp(), dout.dp(), x.dp(), w.dp(), rstd.dp(), N, C);
  EXPECT_LT(dx.err(), kTol);
  EXPECT_LT(dw.err(), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsNorm,
                         ::testing::Combine(::testing::Values(1, 5, 64),
                                            ::testing::Values(1, 7, 33, 100, 768)));

TEST(OpsNormNull, SkipsNullGradients) {
  const int64_t N = 6, C = 33;
  Pair x = norm_input(N, C), w(C, 2), b(C, 3), out(N * C, 4), mean(N, 5), rstd(N, 6);
  Pair dout(N * C, 7);
  ops::layernorm_forward(out.fp(), mean.fp(), rstd.fp(), x.fp(), w.fp(), b.fp(), N, C, 1e-5f);
  mean.d = to_double(mean.f);
  rstd.d = to_double(rstd.f);
  for (int mask = 0; mask < 8; mask++) {
    Pair dx(N * C, 8), dw(C, 9), db(C, 10);
    const VecF dx0 = dx.f, dw0 = dw.f, db0 = db.f;
    ops::layernorm_backward(mask & 1 ? dx.fp() : nullptr, mask & 2 ? dw.fp() : nullptr,
                            mask & 4 ? db.fp() : nullptr, dout.fp(), x.fp(), w.fp(), mean.fp(),
                            rstd.fp(), N, C);
    ref::layernorm_backward(dx.dp(), dw.dp(), db.dp(), dout.dp(), x.dp(), w.dp(), mean.dp(),
                            rstd.dp(), N, C);
    expect_grad(mask & 1, dx, dx0);
    expect_grad(mask & 2, dw, dw0);
    expect_grad(mask & 4, db, db0);
  }
  ops::rmsnorm_forward(out.fp(), rstd.fp(), x.fp(), w.fp(), N, C, 1e-6f);
  rstd.d = to_double(rstd.f);
  for (int mask = 0; mask < 4; mask++) {
    Pair dx(N * C, 8), dw(C, 9);
    const VecF dx0 = dx.f, dw0 = dw.f;
    ops::rmsnorm_backward(mask & 1 ? dx.fp() : nullptr, mask & 2 ? dw.fp() : nullptr, dout.fp(),
                          x.fp(), w.fp(), rstd.fp(), N, C);
    ref::rmsnorm_backward(dx.dp(), dw.dp(), dout.dp(), x.dp(), w.dp(), rstd.dp(), N, C);
    expect_grad(mask & 1, dx, dx0);
    expect_grad(mask & 2, dw, dw0);
  }
}

// ---- element-wise ---------------------------------------------------------------------------

// 70000 crosses GELU's backward chunk (2^16) with a ragged tail.
class OpsElementwise : public ::testing::TestWithParam<int64_t> {};

TEST_P(OpsElementwise, GeluMatchesReference) {
  const int64_t n = GetParam();
  Pair x(n, 1, 3.0f), out(n, 2), dout(n, 3), dx(n, 4);
  ops::gelu_forward(out.fp(), x.fp(), n);
  ref::gelu_forward(out.dp(), x.dp(), n);
  EXPECT_LT(out.err(), kTol);
  ops::gelu_backward(dx.fp(), dout.fp(), x.fp(), n);
  ref::gelu_backward(dx.dp(), dout.dp(), x.dp(), n);
  EXPECT_LT(dx.err(), kTol);
}

TEST_P(OpsElementwise, SwiGluMatchesReference) {
  const int64_t n = GetParam();
  Pair g(n, 1, 4.0f), u(n, 2), out(n, 3), dout(n, 4);
  ops::swiglu_forward(out.fp(), g.fp(), u.fp(), n);
  ref::swiglu_forward(out.dp(), g.dp(), u.dp(), n);
  EXPECT_LT(out.err(), kTol);
  for (int mask = 1; mask < 4; mask++) {
    Pair dg(n, 5), du(n, 6);
    const VecF dg0 = dg.f, du0 = du.f;
    ops::swiglu_backward(mask & 1 ? dg.fp() : nullptr, mask & 2 ? du.fp() : nullptr, dout.fp(),
                         g.fp(), u.fp(), n);
    ref::swiglu_backward(dg.dp(), du.dp(), dout.dp(), g.dp(), u.dp(), n);
    expect_grad(mask & 1, dg, dg0);
    expect_grad(mask & 2, du, du0);
  }
}

TEST_P(OpsElementwise, ResidualMatchesReference) {
  const int64_t n = GetParam();
  Pair a(n, 1), b(n, 2), out(n, 3), dout(n, 4), da(n, 5), db(n, 6);
  ops::residual_forward(out.fp(), a.fp(), b.fp(), n);
  ref::residual_forward(out.dp(), a.dp(), b.dp(), n);
  EXPECT_LT(out.err(), kTol);
  ops::residual_backward(da.fp(), nullptr, dout.fp(), n);
  ops::residual_backward(nullptr, db.fp(), dout.fp(), n);
  ref::residual_backward(da.dp(), db.dp(), dout.dp(), n);
  EXPECT_LT(da.err(), kTol);
  EXPECT_LT(db.err(), kTol);
}

INSTANTIATE_TEST_SUITE_P(Sizes, OpsElementwise, ::testing::Values(1, 7, 33, 100, 70000));

// ---- rotary embedding -----------------------------------------------------------------------

struct RopeCase {
  int64_t B, T, NH, hs, pad, pos0;
  float theta;
};
class OpsRope : public ::testing::TestWithParam<RopeCase> {};

TEST_P(OpsRope, MatchesReference) {
  const RopeCase c = GetParam();
  const int64_t ld = c.NH * c.hs + c.pad, n = c.B * c.T * ld;
  Pair x(n, 1), out(n, 2), dout(n, 3), dx(n, 4);
  ops::rope_forward(out.fp(), x.fp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  ref::rope_forward(out.dp(), x.dp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  EXPECT_LT(out.err(), kTol);
  ops::rope_backward(dx.fp(), dout.fp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  ref::rope_backward(dx.dp(), dout.dp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  EXPECT_LT(dx.err(), kTol);
  // In place: forward rotates x itself; backward overwrites dout with Rᵀ dout.
  ops::rope_forward(x.fp(), x.fp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  ref::rope_forward(x.dp(), x.dp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  EXPECT_LT(x.err(), kTol);
  ops::rope_backward(dout.fp(), dout.fp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  ref::rope_backward(dout.dp(), dout.dp(), c.B, c.T, c.NH, c.hs, ld, c.theta, c.pos0);
  EXPECT_LT(dout.err(), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsRope,
                         ::testing::Values(RopeCase{1, 1, 1, 2, 0, 0, 10000.0f},
                                           RopeCase{2, 7, 3, 16, 0, 0, 10000.0f},
                                           RopeCase{2, 5, 4, 64, 24, 3, 500000.0f},
                                           RopeCase{1, 33, 2, 10, 7, 2000, 10000.0f}));

// ---- attention ------------------------------------------------------------------------------

enum class QkvLayout { dense, fused, padded };
void PrintTo(QkvLayout l, std::ostream* os) {
  *os << (l == QkvLayout::dense ? "dense" : l == QkvLayout::fused ? "fused" : "padded");
}
// Where the P extra key/value rows live: one (NKV,P,hs) block shared by the batch (prefix
// tuning), one block per sequence, or per sequence inside a KV cache of capacity S > P
// (block (NKV,S,hs), extra_hstride = S*hs).
enum class PrefixMode { shared, per_sequence, cache };
void PrintTo(PrefixMode m, std::ostream* os) {
  *os << (m == PrefixMode::shared ? "shared" : m == PrefixMode::per_sequence ? "per_seq" : "cache");
}
// T, GQA ratio NH/NKV, P, prefix mode, layout
using AttnCase = std::tuple<int64_t, int64_t, int64_t, PrefixMode, QkvLayout>;

// Inputs of one attention call in both precisions, laid out as the case asks.
struct AttnData {
  ops::AttentionShape s{};
  Pair qkv, pk, pv;
  int64_t q_off = 0, k_off = 0, v_off = 0;

  AttnData(int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t hs, int64_t P,
           PrefixMode mode, QkvLayout layout) {
    s = {B, T, NH, NKV, hs, P};
    const int64_t qw = NH * hs, kw = NKV * hs;
    int64_t n = 0;
    switch (layout) {
      case QkvLayout::dense:
        k_off = B * T * qw;
        v_off = k_off + B * T * kw;
        n = v_off + B * T * kw;
        break;
      case QkvLayout::fused:  // [q | k | v] per token, as a fused QKV linear writes it
        s.q_ld = s.kv_ld = qw + 2 * kw;
        k_off = qw;
        v_off = qw + kw;
        n = B * T * s.q_ld;
        break;
      case QkvLayout::padded:  // separate buffers with row padding, q_ld != kv_ld
        s.q_ld = qw + 3;
        s.kv_ld = kw + 5;
        k_off = B * T * s.q_ld;
        v_off = k_off + B * T * s.kv_ld;
        n = v_off + B * T * s.kv_ld;
        break;
    }
    const int64_t S = mode == PrefixMode::cache ? P + 3 : P;  // rows per kv head
    if (mode == PrefixMode::cache) s.extra_hstride = S * hs;
    if (mode != PrefixMode::shared) s.extra_bstride = NKV * S * hs;
    const int64_t np = (mode == PrefixMode::shared ? 1 : B) * NKV * S * hs;
    qkv = Pair(n, 21);
    pk = Pair(std::max<int64_t>(np, 1), 22);
    pv = Pair(std::max<int64_t>(np, 1), 23);
  }
  int64_t out_size() const { return s.B * s.T * s.NH * s.hs; }
  int64_t att_size() const { return s.B * s.NH * s.T * (s.P + s.T); }
};

void run_forward(AttnData& a, Pair& out, Pair& att) {
  const bool p = a.s.P > 0;
  ops::attention_forward(out.fp(), att.fp(), a.qkv.fp() + a.q_off, a.qkv.fp() + a.k_off,
                         a.qkv.fp() + a.v_off, p ? a.pk.fp() : nullptr, p ? a.pv.fp() : nullptr,
                         a.s);
  ref::attention_forward(out.dp(), att.dp(), a.qkv.dp() + a.q_off, a.qkv.dp() + a.k_off,
                         a.qkv.dp() + a.v_off, p ? a.pk.dp() : nullptr, p ? a.pv.dp() : nullptr,
                         a.s);
}

// Runs both backwards with the gradients selected by `mask` (1 dq, 2 dk, 4 dv, 8 dpk, 16
// dpv) and checks the selected ones against the reference, the others untouched.
void check_backward(AttnData& a, Pair& dout, Pair& att, int mask) {
  const bool p = a.s.P > 0;
  Pair dqkv(static_cast<int64_t>(a.qkv.f.size()), 31), dpk(static_cast<int64_t>(a.pk.f.size()), 32),
      dpv(static_cast<int64_t>(a.pv.f.size()), 33);
  const VecF dqkv0 = dqkv.f, dpk0 = dpk.f, dpv0 = dpv.f;
  VecF scratch(a.att_size());
  VecD scratch_d(a.att_size());
  // Both backwards read the fast path's probabilities.
  att.d = to_double(att.f);
  auto sel = [&](int bit, float* x) { return mask & bit ? x : nullptr; };
  auto seld = [&](int bit, double* x) { return mask & bit ? x : nullptr; };
  ops::attention_backward(sel(1, dqkv.fp() + a.q_off), sel(2, dqkv.fp() + a.k_off),
                          sel(4, dqkv.fp() + a.v_off), p ? sel(8, dpk.fp()) : nullptr,
                          p ? sel(16, dpv.fp()) : nullptr, scratch.data(), dout.fp(), att.fp(),
                          a.qkv.fp() + a.q_off, a.qkv.fp() + a.k_off, a.qkv.fp() + a.v_off,
                          p ? a.pk.fp() : nullptr, p ? a.pv.fp() : nullptr, a.s);
  ref::attention_backward(seld(1, dqkv.dp() + a.q_off), seld(2, dqkv.dp() + a.k_off),
                          seld(4, dqkv.dp() + a.v_off), p ? seld(8, dpk.dp()) : nullptr,
                          p ? seld(16, dpv.dp()) : nullptr, scratch_d.data(), dout.dp(), att.dp(),
                          a.qkv.dp() + a.q_off, a.qkv.dp() + a.k_off, a.qkv.dp() + a.v_off,
                          p ? a.pk.dp() : nullptr, p ? a.pv.dp() : nullptr, a.s);
  EXPECT_LT(dqkv.err(), kTol) << "mask " << mask;
  if (!(mask & 7)) {
    EXPECT_EQ(dqkv.f, dqkv0);
  }
  expect_grad(p && (mask & 8), dpk, dpk0);
  expect_grad(p && (mask & 16), dpv, dpv0);
}

class OpsAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(OpsAttention, MatchesReference) {
  const auto [T, ratio, P, mode, layout] = GetParam();
  const int64_t B = 2, NH = 4, hs = 16;
  AttnData a(B, T, NH, NH / ratio, hs, P, mode, layout);
  Pair out(a.out_size(), 41), att(a.att_size(), 42), dout(a.out_size(), 43);
  run_forward(a, out, att);
  EXPECT_LT(out.err(), kTol);
  EXPECT_LT(att.err(), kTol);
  for (int64_t bh = 0; bh < B * NH; bh++)  // masked probabilities are exactly zero
    for (int64_t t = 0; t < T; t++)
      for (int64_t j = P + t + 1; j < P + T; j++)
        ASSERT_EQ(att.f[(bh * T + t) * (P + T) + j], 0.0f);
  check_backward(a, dout, att, 31);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsAttention,
                         ::testing::Combine(::testing::Values(1, 7, 33), ::testing::Values(1, 2, 4),
                                            ::testing::Values(0, 5),
                                            ::testing::Values(PrefixMode::shared,
                                                              PrefixMode::per_sequence,
                                                              PrefixMode::cache),
                                            ::testing::Values(QkvLayout::dense, QkvLayout::fused,
                                                              QkvLayout::padded)));

TEST(OpsAttentionNull, SkipsNullGradients) {
  for (PrefixMode mode : {PrefixMode::shared, PrefixMode::per_sequence, PrefixMode::cache}) {
    AttnData a(3, 6, 4, 2, 8, 3, mode, QkvLayout::fused);
    Pair out(a.out_size(), 41), att(a.att_size(), 42), dout(a.out_size(), 43);
    run_forward(a, out, att);
    for (int mask : {0, 1, 2, 4, 8, 16, 6, 24, 9}) check_backward(a, dout, att, mask);
  }
}

TEST(OpsAttentionLarge, HeadSize64) {
  AttnData a(1, 64, 8, 2, 64, 4, PrefixMode::shared, QkvLayout::fused);
  Pair out(a.out_size(), 41), att(a.att_size(), 42), dout(a.out_size(), 43);
  run_forward(a, out, att);
  EXPECT_LT(out.err(), kTol);
  EXPECT_LT(att.err(), kTol);
  check_backward(a, dout, att, 31);
}

// ---- embedding ------------------------------------------------------------------------------

using EmbedCase = std::tuple<int64_t, int64_t, int64_t, bool>;  // B, T, C, with wpe
class OpsEmbedding : public ::testing::TestWithParam<EmbedCase> {};

TEST_P(OpsEmbedding, MatchesReference) {
  const auto [B, T, C, with_wpe] = GetParam();
  const int64_t V = 11, maxT = T + 4, pos0 = 3;
  std::vector<int32_t> tokens(B * T);
  for (int64_t i = 0; i < B * T; i++) tokens[i] = static_cast<int32_t>((i * 7 + 3) % V);  // repeats
  Pair wte(V * C, 1), wpe(maxT * C, 2), out(B * T * C, 3), dout(B * T * C, 4);
  Pair dwte(V * C, 5), dwpe(maxT * C, 6);
  const VecF dwpe0 = dwpe.f;
  ops::embedding_forward(out.fp(), tokens.data(), wte.fp(), with_wpe ? wpe.fp() : nullptr, B, T, C,
                         pos0);
  ref::embedding_forward(out.dp(), tokens.data(), wte.dp(), with_wpe ? wpe.dp() : nullptr, B, T, C,
                         pos0);
  EXPECT_LT(out.err(), kTol);
  ops::embedding_backward(dwte.fp(), with_wpe ? dwpe.fp() : nullptr, dout.fp(), tokens.data(), B, T,
                          C, pos0);
  ref::embedding_backward(dwte.dp(), with_wpe ? dwpe.dp() : nullptr, dout.dp(), tokens.data(), B, T,
                          C, pos0);
  EXPECT_LT(dwte.err(), kTol);
  expect_grad(with_wpe, dwpe, dwpe0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsEmbedding,
                         ::testing::Combine(::testing::Values(1, 3), ::testing::Values(1, 9),
                                            ::testing::Values(1, 33, 100), ::testing::Bool()));

// ---- cross-entropy --------------------------------------------------------------------------

using XentCase = std::tuple<int64_t, int64_t>;  // N, V
class OpsCrossEntropy : public ::testing::TestWithParam<XentCase> {};

TEST_P(OpsCrossEntropy, MatchesReference) {
  const auto [N, V] = GetParam();
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; i++)
    targets[i] = i % 3 == 1 ? -100 : static_cast<int32_t>((i * 5) % V);
  Pair logits(N * V, 1, 4.0f), losses(N, 2), dlosses(N, 3), dlogits(N * V, 4);
  const int64_t count = ops::cross_entropy_forward(losses.fp(), logits.fp(), targets.data(), N, V);
  EXPECT_EQ(count, ref::cross_entropy_forward(losses.dp(), logits.dp(), targets.data(), N, V));
  EXPECT_LT(losses.err(), kTol);
  ops::cross_entropy_backward(dlogits.fp(), dlosses.fp(), logits.fp(), targets.data(), N, V);
  ref::cross_entropy_backward(dlogits.dp(), dlosses.dp(), logits.dp(), targets.data(), N, V);
  EXPECT_LT(dlogits.err(), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsCrossEntropy,
                         ::testing::Combine(::testing::Values(1, 7, 64),
                                            ::testing::Values(1, 7, 33, 1000)));

TEST(OpsCrossEntropyInput, TargetOutOfRangeThrows) {
  const int64_t N = 3, V = 5;
  VecF logits = randn(N * V, 1), losses(N), dlogits(N * V, 0.0f), dl(N, 1.0f);
  for (int32_t bad : {5, -1, 1000}) {
    const std::vector<int32_t> targets = {0, bad, 2};
    EXPECT_THROW(ops::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V),
                 InputError);
    EXPECT_THROW(
        ops::cross_entropy_backward(dlogits.data(), dl.data(), logits.data(), targets.data(), N, V),
        InputError);
  }
  try {
    const std::vector<int32_t> targets = {0, 7, 2};
    ops::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
}

TEST(OpsCrossEntropyInput, AllIgnoredRows) {
  const int64_t N = 4, V = 6;
  const std::vector<int32_t> targets(N, 7);  // 7 is the ignore index here, and >= V
  VecF logits = randn(N * V, 1), losses(N, 9.0f), dl(N, 1.0f);
  VecF dlogits = randn(N * V, 2);
  const VecF dlogits0 = dlogits;
  EXPECT_EQ(ops::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V, 7), 0);
  for (float l : losses) EXPECT_EQ(l, 0.0f);
  ops::cross_entropy_backward(dlogits.data(), dl.data(), logits.data(), targets.data(), N, V, 7);
  EXPECT_EQ(dlogits, dlogits0);
}

// ---- pooling --------------------------------------------------------------------------------

using PoolCase = std::tuple<int64_t, int64_t, int64_t>;  // B, T, C
class OpsPool : public ::testing::TestWithParam<PoolCase> {};

TEST_P(OpsPool, MatchesReference) {
  const auto [B, T, C] = GetParam();
  std::vector<int32_t> lengths(B);
  for (int64_t b = 0; b < B; b++) lengths[b] = static_cast<int32_t>(1 + (b * 5) % T);
  Pair x(B * T * C, 1), dout(B * C, 2);
  for (bool last : {false, true}) {
    Pair out(B * C, 3), dx(B * T * C, 4);
    if (last) {
      ops::last_pool_forward(out.fp(), x.fp(), lengths.data(), B, T, C);
      ref::last_pool_forward(out.dp(), x.dp(), lengths.data(), B, T, C);
      ops::last_pool_backward(dx.fp(), dout.fp(), lengths.data(), B, T, C);
      ref::last_pool_backward(dx.dp(), dout.dp(), lengths.data(), B, T, C);
    } else {
      ops::mean_pool_forward(out.fp(), x.fp(), lengths.data(), B, T, C);
      ref::mean_pool_forward(out.dp(), x.dp(), lengths.data(), B, T, C);
      ops::mean_pool_backward(dx.fp(), dout.fp(), lengths.data(), B, T, C);
      ref::mean_pool_backward(dx.dp(), dout.dp(), lengths.data(), B, T, C);
    }
    EXPECT_LT(out.err(), kTol) << (last ? "last" : "mean");
    EXPECT_LT(dx.err(), kTol) << (last ? "last" : "mean");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsPool,
                         ::testing::Combine(::testing::Values(1, 4), ::testing::Values(1, 9),
                                            ::testing::Values(1, 33, 100)));

TEST(OpsPoolInput, BadLengthsThrow) {
  const int64_t B = 2, T = 4, C = 3;
  VecF x(B * T * C, 1.0f), out(B * C), dout(B * C, 1.0f), dx(B * T * C, 0.0f);
  for (int32_t bad : {0, 5, -2}) {
    const std::vector<int32_t> lengths = {2, bad};
    EXPECT_THROW(ops::mean_pool_forward(out.data(), x.data(), lengths.data(), B, T, C), InputError);
    EXPECT_THROW(ops::mean_pool_backward(dx.data(), dout.data(), lengths.data(), B, T, C),
                 InputError);
    EXPECT_THROW(ops::last_pool_forward(out.data(), x.data(), lengths.data(), B, T, C), InputError);
    EXPECT_THROW(ops::last_pool_backward(dx.data(), dout.data(), lengths.data(), B, T, C),
                 InputError);
  }
}

// ---- determinism and the primitive cache ----------------------------------------------------

// One training-like step through the oneDNN-backed ops; returns every output and gradient.
VecF step(const AttnData& a0) {
  const int64_t N = 24, C = 40, OC = 72;
  AttnData a = a0;
  Pair x(N * C, 1), w(OC * C, 2), b(OC, 3), y(N * OC, 4), dy(N * OC, 5);
  Pair dx(N * C, 6), dw(OC * C, 7), db(OC, 8), mean(N, 9), rstd(N, 10), ln(N * C, 11);
  VecF out(a.out_size()), att(a.att_size()), dout = randn(a.out_size(), 12), scratch(a.att_size());
  VecF dqkv(a.qkv.f.size(), 0.0f), dpk(a.pk.f.size(), 0.0f), dpv(a.pv.f.size(), 0.0f);
  ops::layernorm_forward(ln.fp(), mean.fp(), rstd.fp(), x.fp(), w.fp(), b.fp(), N, C, 1e-5f);
  ops::linear_forward(y.fp(), ln.fp(), w.fp(), b.fp(), N, C, OC);
  ops::gelu_forward(y.fp(), y.fp(), N * OC);
  ops::linear_backward(dx.fp(), dw.fp(), db.fp(), dy.fp(), ln.fp(), w.fp(), N, C, OC);
  ops::layernorm_backward(dx.fp(), dw.fp(), db.fp(), dx.fp(), x.fp(), w.fp(), mean.fp(), rstd.fp(),
                          N, C);
  ops::gelu_backward(dy.fp(), dy.fp(), y.fp(), N * OC);
  ops::attention_forward(out.data(), att.data(), a.qkv.fp() + a.q_off, a.qkv.fp() + a.k_off,
                         a.qkv.fp() + a.v_off, a.pk.fp(), a.pv.fp(), a.s);
  ops::attention_backward(dqkv.data() + a.q_off, dqkv.data() + a.k_off, dqkv.data() + a.v_off,
                          dpk.data(), dpv.data(), scratch.data(), dout.data(), att.data(),
                          a.qkv.fp() + a.q_off, a.qkv.fp() + a.k_off, a.qkv.fp() + a.v_off,
                          a.pk.fp(), a.pv.fp(), a.s);
  VecF all;
  for (const VecF* v : {&y.f, &dx.f, &dw.f, &db.f, &dy.f, &out, &att, &dqkv, &dpk, &dpv})
    all.insert(all.end(), v->begin(), v->end());
  return all;
}

TEST(OpsDeterminism, BitIdenticalAcrossRuns) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  const AttnData a(2, 9, 4, 2, 16, 3, PrefixMode::shared, QkvLayout::fused);
  const VecF first = step(a), second = step(a);
  omp_set_num_threads(saved);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
}

TEST(OpsPrimitiveCache, WarmStepCreatesNoPrimitive) {
  const AttnData a(2, 11, 6, 3, 8, 2, PrefixMode::cache, QkvLayout::padded);
  step(a);
  const dnn::CacheStats warm = dnn::cache_stats();
  step(a);
  const dnn::CacheStats again = dnn::cache_stats();
  EXPECT_EQ(again.misses, warm.misses);
  EXPECT_GT(again.hits, warm.hits);
}

TEST(OpsPrimitiveCache, DecodeStepsCreateNoPrimitive) {
  // A KV cache grows P by one per generated token; T = 1 steps must not build primitives.
  const dnn::CacheStats before = dnn::cache_stats();
  for (int64_t P = 1; P <= 6; P++) {
    AttnData a(2, 1, 4, 2, 8, P, PrefixMode::cache, QkvLayout::fused);
    Pair out(a.out_size(), 41), att(a.att_size(), 42);
    run_forward(a, out, att);
    EXPECT_LT(out.err(), kTol) << "P " << P;
  }
  EXPECT_EQ(dnn::cache_stats().misses, before.misses);
}

}  // namespace
}  // namespace tb::test
