// The oneDNN layer: the only part of tunebench that includes oneDNN headers. Everything
// above it sees plain float pointers, shapes and strides. One engine and one stream are
// created on first use; every primitive is built once per (op, shapes, strides, attributes)
// and kept in a cache, so a training step after warm-up creates no primitive.
//
// Conventions: every function WRITES its outputs (no accumulation) unless it takes a
// `beta`; matmul accumulates `C = alpha*A·B + beta*C` through a sum post-op, which is how
// weight gradients accumulate without an extra buffer. Tensors are row-major; strides are
// in elements.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tb::dnn {

enum class Eltwise { none, gelu_tanh, silu, relu };

// Element type of matmul operands. bf16 operands are converted copies held by the
// caller; accumulation and C are always f32.
enum class DType { f32, bf16 };

// A strided view for matmul: logical dims (batch..., rows, cols) and strides in elements.
// Batch dims of A and B may be 1 where the other has more (broadcast), as in oneDNN.
struct View {
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  DType dtype = DType::f32;

  static View dense(std::vector<int64_t> dims, DType dt = DType::f32);  // row-major
  // 2-D (rows, cols) view of a row-major (rows, cols) buffer, or of its transpose when
  // `transposed` is true: the buffer is (cols, rows) and is read with swapped strides.
  static View matrix(int64_t rows, int64_t cols, bool transposed, DType dt = DType::f32);
};

struct MatmulAttr {
  float alpha = 1.0f;               // scale applied to (A·B + bias)
  float beta = 0.0f;                // 0: C is overwritten; 1: C += ...
  Eltwise post = Eltwise::none;     // applied after bias (and before the sum with beta*C)
};

// C = post(alpha * (A·B + bias)) + beta*C.  bias is (N) broadcast over rows, or null.
void matmul(float* c, const View& cv, const void* a, const View& av, const void* b,
            const View& bv, const float* bias, const MatmulAttr& attr = {});

// Common 2-D case. A is (M,K) (or stored (K,M) if trans_a), B is (K,N) (or stored (N,K)
// if trans_b), C is (M,N) with leading dimension N.
void gemm(float* c /*(M,N)*/, const float* a, const float* b, const float* bias, int64_t M,
          int64_t N, int64_t K, bool trans_a, bool trans_b, const MatmulAttr& attr = {});

// LayerNorm over the last dim C of (N,C) rows. Training forward saves mean and rstd (N).
void layernorm_forward(float* y /*(N,C)*/, float* mean /*(N) or null*/, float* rstd /*(N) or null*/,
                       const float* x /*(N,C)*/, const float* gamma /*(C)*/, const float* beta /*(C)*/,
                       int64_t N, int64_t C, float eps);
// Writes dx (N,C) and, when non-null, dgamma/dbeta (C) (written, not accumulated).
void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* mean, const float* rstd, const float* gamma, int64_t N,
                        int64_t C, float eps);

// Softmax over the last dim of (N,C) rows.
void softmax_forward(float* y /*(N,C)*/, const float* x /*(N,C)*/, int64_t N, int64_t C);
// dx = y * (dy - sum(dy*y)) from the forward output y.
void softmax_backward(float* dx, const float* dy, const float* y, int64_t N, int64_t C);

// Element-wise activation over n values (gelu_tanh, silu, relu).
void eltwise_forward(Eltwise kind, float* y, const float* x, int64_t n);
// dx = dy * f'(x), from the forward input x.
void eltwise_backward(Eltwise kind, float* dx, const float* dy, const float* x, int64_t n);

// f32 -> bf16 (round to nearest even) through a oneDNN reorder. `dst` holds n uint16.
void to_bf16(void* dst, const float* src, int64_t n);

// What the library dispatched to, for results records and profiles.
struct Info {
  std::string version;   // e.g. "2.6.3"
  std::string isa;       // e.g. "avx512_core_bf16"
  bool bf16_supported;   // the CPU has native bf16 dot products (AVX512-BF16 or AMX)
};
Info info();

// Primitive-cache statistics: lets tests and the profiler assert that a warmed-up step
// creates no primitive.
struct CacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t size = 0;
};
CacheStats cache_stats();
void clear_cache();

}  // namespace tb::dnn
