// Fast path of rotary position embedding (Hugging Face rotate-half convention). The
// cos/sin table is computed in double (a float angle p·inv_freq is off by ~1e-4 rad at
// p ~ 2000) and cached per thread and (theta, hs), growing to the largest position seen,
// so a training step computes no trigonometry.
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/ops.h"

namespace tb::ops {

namespace {

struct RopeTable {
  int64_t npos = 0;
  std::vector<float> cos, sin;  // (npos, hs/2)
};

// Table covering positions [0, npos) for head size hs; valid until the next call.
const RopeTable& rope_table(float theta, int64_t hs, int64_t npos) {
  thread_local std::map<std::pair<float, int64_t>, RopeTable> tables;
  RopeTable& tab = tables[{theta, hs}];
  if (tab.npos < npos) {
    const int64_t half = hs / 2;
    tab.cos.resize(static_cast<size_t>(npos * half));
    tab.sin.resize(static_cast<size_t>(npos * half));
    for (int64_t p = tab.npos; p < npos; p++)
      for (int64_t i = 0; i < half; i++) {
        const double ang =
            static_cast<double>(p) * std::pow(static_cast<double>(theta), -2.0 * i / hs);
        tab.cos[p * half + i] = static_cast<float>(std::cos(ang));
        tab.sin[p * half + i] = static_cast<float>(std::sin(ang));
      }
    tab.npos = npos;
  }
  return tab;
}

// Applies the rotation by +angle (sign = 1) or -angle (sign = -1, the transpose) to every
// head vector of `inp`, writing or adding (accumulate) into `out`. out may equal inp.
template <bool accumulate>
void rotate(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t hs, int64_t ld,
            float theta, int64_t pos0, float sign) {
  TB_CHECK(hs % 2 == 0, "rope: head size " << hs << " is odd");
  const int64_t half = hs / 2;
  const RopeTable& tab = rope_table(theta, hs, pos0 + T);
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * T; bt++) {
    const int64_t p = pos0 + bt % T;
    const float* cs = tab.cos.data() + p * half;
    const float* sn = tab.sin.data() + p * half;
    for (int64_t h = 0; h < NH; h++) {
      const float* x = inp + bt * ld + h * hs;
      float* y = out + bt * ld + h * hs;
#pragma omp simd
      for (int64_t i = 0; i < half; i++) {
        const float x1 = x[i], x2 = x[i + half], s = sign * sn[i];
        const float y1 = x1 * cs[i] - x2 * s, y2 = x2 * cs[i] + x1 * s;
        if constexpr (accumulate) {
          y[i] += y1;
          y[i + half] += y2;
        } else {
          y[i] = y1;
          y[i + half] = y2;
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t hs,
                  int64_t ld, float theta, int64_t pos0) {
  rotate<false>(out, inp, B, T, NH, hs, ld, theta, pos0, 1.0f);
}

void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t hs,
                   int64_t ld, float theta, int64_t pos0) {
  if (dinp == dout)
    rotate<false>(dinp, dout, B, T, NH, hs, ld, theta, pos0, -1.0f);
  else
    rotate<true>(dinp, dout, B, T, NH, hs, ld, theta, pos0, -1.0f);
}

}  // namespace tb::ops
