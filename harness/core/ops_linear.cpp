// Fast path of the linear layer on oneDNN matmul. The three products of a linear layer are
// one primitive each, cached by shape; the backward ones accumulate through beta = 1 (a
// sum post-op), and the transposes are strides, so no operand is ever copied.
#include <vector>

#include "harness/core/dnnl/dnn.h"
#include "harness/core/dtype.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int64_t IC, int64_t OC) {
  // out (N,OC) = inp (N,IC) · weightᵀ, weight stored (OC,IC).
  dnn::gemm(out, inp, weight, bias, N, OC, IC, /*trans_a=*/false, /*trans_b=*/true);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int64_t IC, int64_t OC, bool dweight_overwrite) {
  dnn::MatmulAttr acc;
  acc.beta = 1.0f;
  dnn::MatmulAttr wacc;
  wacc.beta = dweight_overwrite ? 0.0f : 1.0f;
  // dinp (N,IC) += dout (N,OC) · weight (OC,IC)
  if (dinp) dnn::gemm(dinp, dout, weight, nullptr, N, IC, OC, false, false, acc);
  // dweight (OC,IC) += doutᵀ (OC,N) · inp (N,IC), dout read through transposed strides
  if (dweight) dnn::gemm(dweight, dout, inp, nullptr, OC, IC, N, /*trans_a=*/true, false, wacc);
  if (dbias)
    detail::column_reduce_add(dbias, N, OC, [&](int64_t n, int64_t o) { return dout[n * OC + o]; });
}

// ---- mixed precision ----------------------------------------------------------------------

namespace {

// Per-thread scratch for the bf16 copies of float operands; grows to the largest operand
// seen and is then reused, so a warmed-up training step allocates nothing here.
const std::uint16_t* to_bf16_scratch(std::vector<std::uint16_t>& buf, const float* src, int64_t n) {
  if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
  convert_to_bf16(buf.data(), src, n);
  return buf.data();
}

thread_local std::vector<std::uint16_t> scratch_a, scratch_b;

}  // namespace

void linear_forward_bf16(float* out, const float* inp, const std::uint16_t* weight, const float* bias,
                         int64_t N, int64_t IC, int64_t OC) {
  using dnn::DType;
  using dnn::View;
  const std::uint16_t* x = to_bf16_scratch(scratch_a, inp, N * IC);
  dnn::matmul(out, View::matrix(N, OC, false), x, View::matrix(N, IC, false, DType::bf16), weight,
              View::matrix(IC, OC, /*transposed=*/true, DType::bf16), bias);
}

void linear_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const std::uint16_t* weight, int64_t N, int64_t IC,
                          int64_t OC, bool dweight_overwrite) {
  using dnn::DType;
  using dnn::View;
  dnn::MatmulAttr acc;
  acc.beta = 1.0f;
  dnn::MatmulAttr wacc;
  wacc.beta = dweight_overwrite ? 0.0f : 1.0f;
  if (dinp || dweight) {
    const std::uint16_t* dy = to_bf16_scratch(scratch_a, dout, N * OC);
    // dinp (N,IC) += dout (N,OC) · weight (OC,IC)
    if (dinp)
      dnn::matmul(dinp, View::matrix(N, IC, false), dy, View::matrix(N, OC, false, DType::bf16),
                  weight, View::matrix(OC, IC, false, DType::bf16), nullptr, acc);
    // dweight (OC,IC) += doutᵀ (OC,N) · inp (N,IC)
    if (dweight) {
      const std::uint16_t* x = to_bf16_scratch(scratch_b, inp, N * IC);
      dnn::matmul(dweight, View::matrix(OC, IC, false), dy, View::matrix(OC, N, true, DType::bf16), x,
                  View::matrix(N, IC, false, DType::bf16), nullptr, wacc);
    }
  }
  if (dbias)
    detail::column_reduce_add(dbias, N, OC, [&](int64_t n, int64_t o) { return dout[n * OC + o]; });
}

}  // namespace tb::ops
