// Fast paths of the activations: hand loops over a vectorised exp (ops_detail.h). Measured
// at N·4C = 512·3072 on one core: GELU forward ties oneDNN's eltwise primitive and the
// backward is 1.7x faster, since it accumulates in one pass where oneDNN writes a scratch
// that must then be added; SwiGLU is one pass over gate/up instead of a SiLU primitive
// into scratch plus a product pass.
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

using detail::exp_fast;

namespace {

constexpr float kGeluS = 0.79788456080286535588f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

// 0.5·(1 + tanh(u)) = sigmoid(2u) with u = sqrt(2/pi)·(x + 0.044715x³): one exp and one
// division per element, the same cost as SiLU.
inline float gelu_sigmoid(float x) {
  return 1.0f / (1.0f + exp_fast(-2.0f * kGeluS * (x + kGeluC * x * x * x)));
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = inp[i] * gelu_sigmoid(inp[i]);
}

void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  // d/dx [x·σ(2u)] = σ + x·2σ(1-σ)·du/dx, du/dx = sqrt(2/pi)·(1 + 3·0.044715x²).
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i], sg = gelu_sigmoid(x);
    const float d = sg + 2.0f * x * sg * (1.0f - sg) * kGeluS * (1.0f + 3.0f * kGeluC * x * x);
    dinp[i] += dout[i] * d;
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
