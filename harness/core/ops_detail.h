// Internal helpers shared by the fast op implementations (ops_*.cpp): a vectorisable exp
// and max, and a deterministic column reduction. Not part of the op API.
//
// Determinism: every parallel loop here partitions the OUTPUT, and each output element is
// reduced in a fixed order, so results are bit-identical across runs and thread counts.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace tb::ops::detail {

// exp(x) to ~2 ulp (Cephes expf polynomial after Cody–Waite range reduction), written so
// GCC vectorises it without -ffast-math (libm's expf is scalar there). Inputs are clamped
// to [-87.3, 88]: below, the result is ~1e-38 instead of a denormal or 0.
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.3f), 88.0f);
  // Round x·log2(e) to the nearest integer with the 1.5·2^23 trick (vectorises, unlike nearbyint).
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k);
  return p * std::bit_cast<float>(static_cast<uint32_t>(ki + 127) << 23);
}

// max of x[0..n), n >= 1. The ternary (not std::max) is what GCC vectorises as a simd
// max-reduction without -ffast-math.
inline float row_max(const float* x, int64_t n) {
  float mx = x[0];
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

// Columns per task of a column-blocked reduction: a multiple of the widest vector, and
// wide enough that rows are read in contiguous runs.
constexpr int64_t kColBlock = 64;

// acc[c] += Σ_n f(n, c) over rows n = 0..N-1 for every column c < C, parallel over blocks of
// columns, rows summed in order. f(n, c) must be cheap and vectorisable over c.
template <class F>
void column_reduce_add(float* acc, int64_t N, int64_t C, F f) {
  const int64_t nblocks = (C + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; blk++) {
    const int64_t c0 = blk * kColBlock, c1 = std::min(C, c0 + kColBlock);
    float part[kColBlock] = {};
    for (int64_t n = 0; n < N; n++)
#pragma omp simd
      for (int64_t c = c0; c < c1; c++) part[c - c0] += f(n, c);
    for (int64_t c = c0; c < c1; c++) acc[c] += part[c - c0];
  }
}

}  // namespace tb::ops::detail
