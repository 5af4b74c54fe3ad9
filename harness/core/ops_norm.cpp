// Fast paths of the normalisations. LayerNorm runs on oneDNN's layer_normalization
// primitive; its backward writes, so the gradients land in per-thread scratch and are added.
// RMSNorm is a hand loop: oneDNN 2.6 has no RMSNorm primitive, and the op is memory-bound,
// so two vectorised passes per row are all it needs.
#include <cmath>

#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int64_t N, int64_t C, float eps) {
  dnn::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int64_t N, int64_t C) {
  if (!dinp && !dweight && !dbias) return;
  float* dx = detail::scratch(0, N * C);
  float* dw = detail::scratch(1, C);
  float* db = detail::scratch(2, C);
  // eps = 0: oneDNN rebuilds rstd as 1/sqrt(var + eps) from var = 1/rstd² - eps, so the
  // saved rstd (which already includes the forward's eps) comes back unchanged.
  dnn::layernorm_backward(dx, dw, db, dout, inp, mean, rstd, weight, N, C, /*eps=*/0.0f);
  if (dinp) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < N * C; i++) dinp[i] += dx[i];
  }
  for (int64_t c = 0; c < C; c++) {
    if (dweight) dweight[c] += dw[c];
    if (dbias) dbias[c] += db[c];
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int64_t C, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    float* y = out + n * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; c++) y[c] = x[c] * r * weight[c];
    rstd[n] = r;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int64_t C) {
  if (dinp) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* dy = dout + n * C;
      float* dx = dinp + n * C;
      const float r = rstd[n];
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c];
      const float k = r * r * r * dot / static_cast<float>(C);
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dx[c] += r * dy[c] * weight[c] - k * x[c];
    }
  }
  if (dweight)
    detail::column_reduce_add(dweight, N, C, [&](int64_t n, int64_t c) {
      return dout[n * C + c] * inp[n * C + c] * rstd[n];
    });
}

}  // namespace tb::ops
