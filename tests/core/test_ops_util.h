// Shared helpers of the op tests: seeded random tensors, float<->double copies, the error
// measure used to compare a fast path against the reference, and a central-difference
// gradient check.
//
// Error measure (fast vs reference): the infinity-norm relative error
//     err(a, r) = max_i |a_i - r_i| / max(max_i |r_i|, 1e-6)
// i.e. the worst element error relative to the tensor's largest magnitude (the floor only
// matters for an all-zero reference, where it asks for |a| <= 1e-6 · tol).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace tb::test {

using VecF = std::vector<float>;
using VecD = std::vector<double>;

inline VecF randn(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  VecF v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline VecD to_double(const VecF& v) { return VecD(v.begin(), v.end()); }
inline VecF to_float(const VecD& v) { return VecF(v.begin(), v.end()); }

inline double rel_err(const float* a, const double* ref, int64_t n) {
  double diff = 0.0, scale = 0.0;
  for (int64_t i = 0; i < n; i++) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return diff / std::max(scale, 1e-6);
}
inline double rel_err(const VecF& a, const VecD& ref) {
  EXPECT_EQ(a.size(), ref.size());
  return rel_err(a.data(), ref.data(), static_cast<int64_t>(std::min(a.size(), ref.size())));
}

// Σ r_i x_i: the random linear functional whose gradient a backward computes when given
// dout = r.
inline double dot(const VecD& r, const VecD& x) {
  double s = 0.0;
  for (size_t i = 0; i < r.size(); i++) s += r[i] * x[i];
  return s;
}

// Compares the analytical gradient `grad` of f with respect to `x` against central
// differences, on every element (or `max_samples` spread over the buffer when it is
// larger). f re-runs the forward on the current contents of x. Returns the worst error
// in the measure above; tests expect it below ~1e-6.
inline double fd_error(VecD& x, const VecD& grad, const std::function<double()>& f,
                       int64_t max_samples = 200, double eps = 1e-6) {
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t step = std::max<int64_t>(1, n / max_samples);
  double diff = 0.0, scale = 0.0;
  for (int64_t i = 0; i < n; i += step) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double fp = f();
    x[i] = x0 - eps;
    const double fm = f();
    x[i] = x0;
    const double num = (fp - fm) / (2.0 * eps);
    diff = std::max(diff, std::fabs(num - grad[i]));
    scale = std::max(scale, std::fabs(grad[i]));
  }
  return diff / std::max(scale, 1e-6);
}

}  // namespace tb::test
