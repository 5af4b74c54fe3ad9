// Fast path of the linear layer on oneDNN matmul. The three products of a linear layer are
// one primitive each, cached by shape; the backward ones accumulate through beta = 1 (a
// sum post-op), and the transposes are strides, so no operand is ever copied.
#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int64_t IC, int64_t OC) {
  // out (N,OC) = inp (N,IC) · weightᵀ, weight stored (OC,IC).
  dnn::gemm(out, inp, weight, bias, N, OC, IC, /*trans_a=*/false, /*trans_b=*/true);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int64_t IC, int64_t OC) {
  dnn::MatmulAttr acc;
  acc.beta = 1.0f;
  // dinp (N,IC) += dout (N,OC) · weight (OC,IC)
  if (dinp) dnn::gemm(dinp, dout, weight, nullptr, N, IC, OC, false, false, acc);
  // dweight (OC,IC) += doutᵀ (OC,N) · inp (N,IC), dout read through transposed strides
  if (dweight) dnn::gemm(dweight, dout, inp, nullptr, OC, IC, N, /*trans_a=*/true, false, acc);
  if (dbias)
    detail::column_reduce_add(dbias, N, OC, [&](int64_t n, int64_t o) { return dout[n * OC + o]; });
}

}  // namespace tb::ops
