// Reference loops for every op of ops.h: the plainest correct code, one scalar at a time,
// templated on the scalar type so the tests can run them in double (finite differences)
// and compare the fast oneDNN/OpenMP paths against them. Same argument order, shapes and
// contracts as ops.h (forward writes, backward accumulates, null gradient = skipped).
// Nothing here is tuned; nothing outside tests and debugging should call it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/ops.h"

namespace tb::ops::ref {

// ---- embeddings -----------------------------------------------------------------------
template <class T>
void embedding_forward(T* out /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/, const T* wte /*(V,C)*/,
                       const T* wpe /*(maxT,C) or null*/, int64_t B, int64_t T_, int64_t C,
                       int64_t pos0 = 0) {
  for (int64_t bt = 0; bt < B * T_; bt++) {
    const int64_t t = bt % T_;
    for (int64_t c = 0; c < C; c++) {
      T x = wte[tokens[bt] * C + c];
      if (wpe) x += wpe[(pos0 + t) * C + c];
      out[bt * C + c] = x;
    }
  }
}

template <class T>
void embedding_backward(T* dwte /*(V,C) or null*/, T* dwpe /*(maxT,C) or null*/,
                        const T* dout /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/, int64_t B,
                        int64_t T_, int64_t C, int64_t pos0 = 0) {
  for (int64_t bt = 0; bt < B * T_; bt++) {
    const int64_t t = bt % T_;
    for (int64_t c = 0; c < C; c++) {
      if (dwte) dwte[tokens[bt] * C + c] += dout[bt * C + c];
      if (dwpe) dwpe[(pos0 + t) * C + c] += dout[bt * C + c];
    }
  }
}

// ---- linear ---------------------------------------------------------------------------
template <class T>
void linear_forward(T* out /*(N,OC)*/, const T* inp /*(N,IC)*/, const T* weight /*(OC,IC)*/,
                    const T* bias /*(OC) or null*/, int64_t N, int64_t IC, int64_t OC) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < OC; o++) {
      T acc = bias ? bias[o] : T(0);
      for (int64_t i = 0; i < IC; i++) acc += inp[n * IC + i] * weight[o * IC + i];
      out[n * OC + o] = acc;
    }
}

template <class T>
void linear_backward(T* dinp /*(N,IC) or null*/, T* dweight /*(OC,IC) or null*/,
                     T* dbias /*(OC) or null*/, const T* dout /*(N,OC)*/, const T* inp /*(N,IC)*/,
                     const T* weight /*(OC,IC)*/, int64_t N, int64_t IC, int64_t OC) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < OC; o++) {
      const T d = dout[n * OC + o];
      if (dbias) dbias[o] += d;
      for (int64_t i = 0; i < IC; i++) {
        if (dinp) dinp[n * IC + i] += d * weight[o * IC + i];
        if (dweight) dweight[o * IC + i] += d * inp[n * IC + i];
      }
    }
}

// ---- normalisation --------------------------------------------------------------------
template <class T>
void layernorm_forward(T* out /*(N,C)*/, T* mean /*(N)*/, T* rstd /*(N)*/, const T* inp /*(N,C)*/,
                       const T* weight /*(C)*/, const T* bias /*(C)*/, int64_t N, int64_t C,
                       double eps) {
  for (int64_t n = 0; n < N; n++) {
    const T* x = inp + n * C;
    T m = 0;
    for (int64_t c = 0; c < C; c++) m += x[c];
    m /= T(C);
    T var = 0;
    for (int64_t c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
    var /= T(C);
    const T r = T(1) / std::sqrt(var + T(eps));
    for (int64_t c = 0; c < C; c++) out[n * C + c] = (x[c] - m) * r * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

template <class T>
void layernorm_backward(T* dinp /*(N,C) or null*/, T* dweight /*(C) or null*/,
                        T* dbias /*(C) or null*/, const T* dout /*(N,C)*/, const T* inp /*(N,C)*/,
                        const T* weight /*(C)*/, const T* mean /*(N)*/, const T* rstd /*(N)*/,
                        int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; n++) {
    const T* x = inp + n * C;
    const T* dy = dout + n * C;
    // dinp = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight.
    T g_mean = 0, gx_mean = 0;
    for (int64_t c = 0; c < C; c++) {
      const T xhat = (x[c] - mean[n]) * rstd[n];
      g_mean += dy[c] * weight[c];
      gx_mean += dy[c] * weight[c] * xhat;
    }
    g_mean /= T(C);
    gx_mean /= T(C);
    for (int64_t c = 0; c < C; c++) {
      const T xhat = (x[c] - mean[n]) * rstd[n];
      if (dbias) dbias[c] += dy[c];
      if (dweight) dweight[c] += dy[c] * xhat;
      if (dinp) dinp[n * C + c] += rstd[n] * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
    }
  }
}

template <class T>
void rmsnorm_forward(T* out /*(N,C)*/, T* rstd /*(N)*/, const T* inp /*(N,C)*/,
                     const T* weight /*(C)*/, int64_t N, int64_t C, double eps) {
  for (int64_t n = 0; n < N; n++) {
    const T* x = inp + n * C;
    T ms = 0;
    for (int64_t c = 0; c < C; c++) ms += x[c] * x[c];
    const T r = T(1) / std::sqrt(ms / T(C) + T(eps));
    for (int64_t c = 0; c < C; c++) out[n * C + c] = x[c] * r * weight[c];
    rstd[n] = r;
  }
}

template <class T>
void rmsnorm_backward(T* dinp /*(N,C) or null*/, T* dweight /*(C) or null*/,
                      const T* dout /*(N,C)*/, const T* inp /*(N,C)*/, const T* weight /*(C)*/,
                      const T* rstd /*(N)*/, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; n++) {
    const T* x = inp + n * C;
    const T* dy = dout + n * C;
    const T r = rstd[n];
    // d/dx_i of x_j r w_j: r w_i δij - x_j w_j r³ x_i / C.
    T dot = 0;
    for (int64_t c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c];
    for (int64_t c = 0; c < C; c++) {
      if (dweight) dweight[c] += dy[c] * x[c] * r;
      if (dinp) dinp[n * C + c] += r * dy[c] * weight[c] - r * r * r * x[c] * dot / T(C);
    }
  }
}

// ---- activations ----------------------------------------------------------------------
template <class T>
T gelu_tanh(T x) {
  const T s = T(0.79788456080286535587989211986876);  // sqrt(2/pi)
  return T(0.5) * x * (T(1) + std::tanh(s * (x + T(0.044715) * x * x * x)));
}

template <class T>
void gelu_forward(T* out /*(n)*/, const T* inp /*(n)*/, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = gelu_tanh(inp[i]);
}

template <class T>
void gelu_backward(T* dinp /*(n)*/, const T* dout /*(n)*/, const T* inp /*(n)*/, int64_t n) {
  const T s = T(0.79788456080286535587989211986876);
  for (int64_t i = 0; i < n; i++) {
    const T x = inp[i];
    const T th = std::tanh(s * (x + T(0.044715) * x * x * x));
    const T d = T(0.5) * (T(1) + th) +
                T(0.5) * x * (T(1) - th * th) * s * (T(1) + T(3) * T(0.044715) * x * x);
    dinp[i] += dout[i] * d;
  }
}

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
void swiglu_forward(T* out /*(n)*/, const T* gate /*(n)*/, const T* up /*(n)*/, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <class T>
void swiglu_backward(T* dgate /*(n) or null*/, T* dup /*(n) or null*/, const T* dout /*(n)*/,
                     const T* gate /*(n)*/, const T* up /*(n)*/, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const T sg = sigmoid(gate[i]);
    if (dgate) dgate[i] += dout[i] * up[i] * sg * (T(1) + gate[i] * (T(1) - sg));
    if (dup) dup[i] += dout[i] * gate[i] * sg;
  }
}

// ---- rotary position embedding --------------------------------------------------------
// Angles are computed in double whatever T is: a float angle p·inv_freq loses ~1e-4 rad at
// p ~ 2000, which would dominate every comparison.
template <class T>
void rope_forward(T* out, const T* inp, int64_t B, int64_t T_, int64_t NH, int64_t hs, int64_t ld,
                  double theta, int64_t pos0 = 0) {
  const int64_t half = hs / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T_; t++)
      for (int64_t h = 0; h < NH; h++) {
        const int64_t off = (b * T_ + t) * ld + h * hs;
        for (int64_t i = 0; i < half; i++) {
          const double ang = double(pos0 + t) * std::pow(theta, -2.0 * double(i) / double(hs));
          const T c = T(std::cos(ang)), s = T(std::sin(ang));
          const T x1 = inp[off + i], x2 = inp[off + i + half];
          out[off + i] = x1 * c - x2 * s;
          out[off + i + half] = x2 * c + x1 * s;
        }
      }
}

template <class T>
void rope_backward(T* dinp, const T* dout, int64_t B, int64_t T_, int64_t NH, int64_t hs,
                   int64_t ld, double theta, int64_t pos0 = 0) {
  const int64_t half = hs / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T_; t++)
      for (int64_t h = 0; h < NH; h++) {
        const int64_t off = (b * T_ + t) * ld + h * hs;
        for (int64_t i = 0; i < half; i++) {
          const double ang = double(pos0 + t) * std::pow(theta, -2.0 * double(i) / double(hs));
          const T c = T(std::cos(ang)), s = T(std::sin(ang));
          const T d1 = dout[off + i], d2 = dout[off + i + half];
          // Rᵀ: the rotation by -angle. Read both before writing: dinp may alias dout.
          const T g1 = d1 * c + d2 * s, g2 = d2 * c - d1 * s;
          if (dinp == dout) {
            dinp[off + i] = g1;
            dinp[off + i + half] = g2;
          } else {
            dinp[off + i] += g1;
            dinp[off + i + half] += g2;
          }
        }
      }
}

// ---- attention ------------------------------------------------------------------------
namespace detail {
// Pointers to the key/value row `j` (0..P+T-1, prefix first) of kv head `kh` in sequence b.
template <class T>
const T* kv_row(const T* x, const T* px, int64_t b, int64_t kh, int64_t j,
                const AttentionShape& s) {
  const int64_t kv_ld = s.kv_ld ? s.kv_ld : s.NKV * s.hs;
  const int64_t hstride = s.extra_hstride ? s.extra_hstride : s.P * s.hs;
  if (j < s.P) return px + b * s.extra_bstride + kh * hstride + j * s.hs;
  return x + (b * s.T + (j - s.P)) * kv_ld + kh * s.hs;
}
template <class T>
T* kv_row_mut(T* x, T* px, int64_t b, int64_t kh, int64_t j, const AttentionShape& s) {
  return const_cast<T*>(kv_row<T>(x, px, b, kh, j, s));
}
}  // namespace detail

template <class T>
void attention_forward(T* out, T* att, const T* q, const T* k, const T* v, const T* pk, const T* pv,
                       const AttentionShape& s) {
  const int64_t L = s.P + s.T, G = s.NH / s.NKV;
  const int64_t q_ld = s.q_ld ? s.q_ld : s.NH * s.hs;
  const T scale = T(1) / std::sqrt(T(s.hs));
  for (int64_t b = 0; b < s.B; b++)
    for (int64_t h = 0; h < s.NH; h++)
      for (int64_t t = 0; t < s.T; t++) {
        const T* qr = q + (b * s.T + t) * q_ld + h * s.hs;
        T* a = att + ((b * s.NH + h) * s.T + t) * L;
        const int64_t visible = s.P + t + 1;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < visible; j++) {
          const T* kr = detail::kv_row(k, pk, b, h / G, j, s);
          T dot = 0;
          for (int64_t d = 0; d < s.hs; d++) dot += qr[d] * kr[d];
          a[j] = dot * scale;
          mx = std::max(mx, a[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j < visible; j++) {
          a[j] = std::exp(a[j] - mx);
          sum += a[j];
        }
        for (int64_t j = 0; j < L; j++) a[j] = j < visible ? a[j] / sum : T(0);
        T* o = out + (b * s.T + t) * s.NH * s.hs + h * s.hs;
        for (int64_t d = 0; d < s.hs; d++) o[d] = 0;
        for (int64_t j = 0; j < visible; j++) {
          const T* vr = detail::kv_row(v, pv, b, h / G, j, s);
          for (int64_t d = 0; d < s.hs; d++) o[d] += a[j] * vr[d];
        }
      }
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, T* dpk, T* dpv, T* scratch, const T* dout,
                        const T* att, const T* q, const T* k, const T* v, const T* pk, const T* pv,
                        const AttentionShape& s) {
  const int64_t L = s.P + s.T, G = s.NH / s.NKV;
  const int64_t q_ld = s.q_ld ? s.q_ld : s.NH * s.hs;
  const T scale = T(1) / std::sqrt(T(s.hs));
  for (int64_t b = 0; b < s.B; b++)
    for (int64_t h = 0; h < s.NH; h++)
      for (int64_t t = 0; t < s.T; t++) {
        const int64_t row = (b * s.NH + h) * s.T + t, kh = h / G;
        const T* a = att + row * L;
        T* da = scratch + row * L;
        const T* dor = dout + (b * s.T + t) * s.NH * s.hs + h * s.hs;
        const T* qr = q + (b * s.T + t) * q_ld + h * s.hs;
        const int64_t visible = s.P + t + 1;
        T adot = 0;
        for (int64_t j = 0; j < visible; j++) {
          const T* vr = detail::kv_row(v, pv, b, kh, j, s);
          T dot = 0;
          for (int64_t d = 0; d < s.hs; d++) dot += dor[d] * vr[d];
          da[j] = dot;
          adot += a[j] * dot;
          T* dvr = j < s.P ? (dpv ? detail::kv_row_mut(dv, dpv, b, kh, j, s) : nullptr)
                           : (dv ? detail::kv_row_mut(dv, dpv, b, kh, j, s) : nullptr);
          if (dvr)
            for (int64_t d = 0; d < s.hs; d++) dvr[d] += a[j] * dor[d];
        }
        for (int64_t j = 0; j < visible; j++) {
          const T ds = a[j] * (da[j] - adot) * scale;
          const T* kr = detail::kv_row(k, pk, b, kh, j, s);
          if (dq)
            for (int64_t d = 0; d < s.hs; d++)
              dq[(b * s.T + t) * q_ld + h * s.hs + d] += ds * kr[d];
          T* dkr = j < s.P ? (dpk ? detail::kv_row_mut(dk, dpk, b, kh, j, s) : nullptr)
                           : (dk ? detail::kv_row_mut(dk, dpk, b, kh, j, s) : nullptr);
          if (dkr)
            for (int64_t d = 0; d < s.hs; d++) dkr[d] += ds * qr[d];
        }
      }
}

// ---- residual -------------------------------------------------------------------------
template <class T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

template <class T>
void residual_backward(T* da, T* db, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (da) da[i] += dout[i];
    if (db) db[i] += dout[i];
  }
}

// ---- loss -----------------------------------------------------------------------------
template <class T>
int64_t cross_entropy_forward(T* losses /*(N)*/, const T* logits /*(N,V)*/,
                              const int32_t* targets /*(N)*/, int64_t N, int64_t V,
                              int32_t ignore_index = -100) {
  int64_t count = 0;
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == ignore_index) {
      losses[n] = 0;
      continue;
    }
    if (targets[n] < 0 || targets[n] >= V)
      throw InputError("cross_entropy: target " + std::to_string(targets[n]) + " at row " +
                       std::to_string(n) + " is outside [0, " + std::to_string(V) + ")");
    const T* x = logits + n * V;
    const T mx = *std::max_element(x, x + V);
    T sum = 0;
    for (int64_t i = 0; i < V; i++) sum += std::exp(x[i] - mx);
    losses[n] = std::log(sum) + mx - x[targets[n]];
    count++;
  }
  return count;
}

template <class T>
void cross_entropy_backward(T* dlogits /*(N,V)*/, const T* dlosses /*(N)*/,
                            const T* logits /*(N,V)*/, const int32_t* targets /*(N)*/, int64_t N,
                            int64_t V, int32_t ignore_index = -100) {
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == ignore_index) continue;
    const T* x = logits + n * V;
    const T mx = *std::max_element(x, x + V);
    T sum = 0;
    for (int64_t i = 0; i < V; i++) sum += std::exp(x[i] - mx);
    for (int64_t i = 0; i < V; i++)
      dlogits[n * V + i] += dlosses[n] * (std::exp(x[i] - mx) / sum - T(i == targets[n]));
  }
}

// ---- pooling --------------------------------------------------------------------------
template <class T>
void mean_pool_forward(T* out /*(B,C)*/, const T* inp /*(B,T,C)*/, const int32_t* lengths,
                       int64_t B, int64_t T_, int64_t C) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) {
      T acc = 0;
      for (int64_t t = 0; t < lengths[b]; t++) acc += inp[(b * T_ + t) * C + c];
      out[b * C + c] = acc / T(lengths[b]);
    }
}

template <class T>
void mean_pool_backward(T* dinp /*(B,T,C)*/, const T* dout /*(B,C)*/, const int32_t* lengths,
                        int64_t B, int64_t T_, int64_t C) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < lengths[b]; t++)
      for (int64_t c = 0; c < C; c++) dinp[(b * T_ + t) * C + c] += dout[b * C + c] / T(lengths[b]);
}

template <class T>
void last_pool_forward(T* out /*(B,C)*/, const T* inp /*(B,T,C)*/, const int32_t* lengths,
                       int64_t B, int64_t T_, int64_t C) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) out[b * C + c] = inp[(b * T_ + lengths[b] - 1) * C + c];
}

template <class T>
void last_pool_backward(T* dinp /*(B,T,C)*/, const T* dout /*(B,C)*/, const int32_t* lengths,
                        int64_t B, int64_t T_, int64_t C) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) dinp[(b * T_ + lengths[b] - 1) * C + c] += dout[b * C + c];
}

}  // namespace tb::ops::ref
