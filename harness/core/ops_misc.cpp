// Fast paths of the memory-bound ops that need no oneDNN primitive: token + position
// embedding, residual add, softmax cross-entropy and sequence pooling. Plain OpenMP loops
// that the compiler vectorises; every parallel loop partitions its outputs, so results do
// not depend on the thread count (see ops_detail.h).
#include <cmath>
#include <string>

#include "harness/base/errors.h"
#include "harness/core/ops.h"
#include "harness/core/ops_detail.h"

namespace tb::ops {

using detail::exp_fast;
using detail::kColBlock;

// ---- embeddings -----------------------------------------------------------------------

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int64_t B, int64_t T, int64_t C, int64_t pos0) {
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * T; bt++) {
    const float* e = wte + static_cast<int64_t>(tokens[bt]) * C;
    float* o = out + bt * C;
    if (wpe) {
      const float* p = wpe + (pos0 + bt % T) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] = e[c] + p[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] = e[c];
    }
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int64_t B, int64_t T, int64_t C, int64_t pos0) {
  // Repeated tokens hit the same dwte row, so threads split the columns, not the tokens.
  if (dwte) {
    const int64_t nblocks = (C + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
      const int64_t c0 = blk * kColBlock, c1 = std::min(C, c0 + kColBlock);
      for (int64_t bt = 0; bt < B * T; bt++) {
        float* d = dwte + static_cast<int64_t>(tokens[bt]) * C;
        const float* g = dout + bt * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; c++) d[c] += g[c];
      }
    }
  }
  if (dwpe) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      float* d = dwpe + (pos0 + t) * C;
      for (int64_t b = 0; b < B; b++) {
        const float* g = dout + (b * T + t) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) d[c] += g[c];
      }
    }
  }
}

// ---- residual -------------------------------------------------------------------------

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float* da, float* db, const float* dout, int64_t n) {
  if (da) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) da[i] += dout[i];
  }
  if (db) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) db[i] += dout[i];
  }
}

// ---- loss -----------------------------------------------------------------------------

namespace {

// Validates every target before any parallel work (an exception may not leave an OpenMP
// region); returns the number of rows that are not ignored.
int64_t check_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index) {
  int64_t count = 0;
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == ignore_index) continue;
    if (targets[n] < 0 || targets[n] >= V)
      throw InputError("cross_entropy: target " + std::to_string(targets[n]) + " at row " +
                       std::to_string(n) + " is outside [0, " + std::to_string(V) +
                       ") and is not the ignore index " + std::to_string(ignore_index));
    count++;
  }
  return count;
}

struct RowStats {
  float max, sum;  // max of the row and Σ exp(x - max)
};

RowStats row_stats(const float* x, int64_t V) {
  const float mx = detail::row_max(x, V);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < V; i++) sum += exp_fast(x[i] - mx);
  return {mx, sum};
}

}  // namespace

int64_t cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                              int64_t V, int32_t ignore_index) {
  const int64_t count = check_targets(targets, N, V, ignore_index);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == ignore_index) {
      losses[n] = 0.0f;
      continue;
    }
    const float* x = logits + n * V;
    const RowStats st = row_stats(x, V);
    losses[n] = std::log(st.sum) + st.max - x[targets[n]];
  }
  return count;
}

void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits,
                            const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index) {
  check_targets(targets, N, V, ignore_index);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == ignore_index) continue;
    const float* x = logits + n * V;
    float* d = dlogits + n * V;
    const RowStats st = row_stats(x, V);
    const float w = dlosses[n] / st.sum;
#pragma omp simd
    for (int64_t i = 0; i < V; i++) d[i] += w * exp_fast(x[i] - st.max);
    d[targets[n]] -= dlosses[n];
  }
}

// ---- pooling --------------------------------------------------------------------------

namespace {

void check_lengths(const char* op, const int32_t* lengths, int64_t B, int64_t T) {
  for (int64_t b = 0; b < B; b++)
    if (lengths[b] < 1 || lengths[b] > T)
      throw InputError(std::string(op) + ": lengths[" + std::to_string(b) + "] = " +
                       std::to_string(lengths[b]) + " is outside [1, T=" + std::to_string(T) + "]");
}

}  // namespace

void mean_pool_forward(float* out, const float* inp, const int32_t* lengths, int64_t B, int64_t T,
                       int64_t C) {
  check_lengths("mean_pool_forward", lengths, B, T);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; b++) {
    float* o = out + b * C;
    for (int64_t c = 0; c < C; c++) o[c] = 0.0f;
    for (int64_t t = 0; t < lengths[b]; t++) {
      const float* x = inp + (b * T + t) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] += x[c];
    }
    const float inv = 1.0f / static_cast<float>(lengths[b]);
#pragma omp simd
    for (int64_t c = 0; c < C; c++) o[c] *= inv;
  }
}

void mean_pool_backward(float* dinp, const float* dout, const int32_t* lengths, int64_t B,
                        int64_t T, int64_t C) {
  check_lengths("mean_pool_backward", lengths, B, T);
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * T; bt++) {
    const int64_t b = bt / T, t = bt % T;
    if (t >= lengths[b]) continue;
    const float inv = 1.0f / static_cast<float>(lengths[b]);
    float* d = dinp + bt * C;
    const float* g = dout + b * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) d[c] += g[c] * inv;
  }
}

void last_pool_forward(float* out, const float* inp, const int32_t* lengths, int64_t B, int64_t T,
                       int64_t C) {
  check_lengths("last_pool_forward", lengths, B, T);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; b++) {
    const float* x = inp + (b * T + lengths[b] - 1) * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) out[b * C + c] = x[c];
  }
}

void last_pool_backward(float* dinp, const float* dout, const int32_t* lengths, int64_t B,
                        int64_t T, int64_t C) {
  check_lengths("last_pool_backward", lengths, B, T);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; b++) {
    float* d = dinp + (b * T + lengths[b] - 1) * C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) d[c] += dout[b * C + c];
  }
}

}  // namespace tb::ops
