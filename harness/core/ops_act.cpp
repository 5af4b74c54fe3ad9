// Fast paths of the activations. GELU runs on oneDNN's eltwise primitive (its tanh is
// vectorised; libm's is not without -ffast-math). SwiGLU is a hand loop over a vectorised
// exp: one pass over gate/up instead of a oneDNN SiLU into scratch and a product pass.
#include <algorithm>

#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

using detail::exp_fast;

void gelu_forward(float* out, const float* inp, int64_t n) {
  dnn::eltwise_forward(dnn::Eltwise::gelu_tanh, out, inp, n);
}

void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  // oneDNN writes dx; it goes to an L2-sized scratch chunk that is then added into dinp
  // while still in cache. At most two chunk sizes reach the primitive cache per n.
  constexpr int64_t kChunk = int64_t{1} << 16;
  float* dx = detail::scratch(0, std::min(n, kChunk));
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = std::min(kChunk, n - i0);
    dnn::eltwise_backward(dnn::Eltwise::gelu_tanh, dx, dout + i0, inp + i0, m);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < m; i++) dinp[i0 + i] += dx[i];
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] * up[i] / (1.0f + exp_fast(-gate[i]));
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n) {
  if (dgate && dup) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
      const float sg = 1.0f / (1.0f + exp_fast(-gate[i]));
      dgate[i] += dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
      dup[i] += dout[i] * gate[i] * sg;
    }
  } else if (dgate) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
      const float sg = 1.0f / (1.0f + exp_fast(-gate[i]));
      dgate[i] += dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
    }
  } else if (dup) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dup[i] += dout[i] * gate[i] / (1.0f + exp_fast(-gate[i]));
  }
}

}  // namespace tb::ops
