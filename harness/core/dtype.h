// Element types of stored tensors (the safetensors dtype set) and the exact conversions
// between fp32 and the two 16-bit float formats checkpoints use (IEEE half and bfloat16).
// Scalar conversions are header-only and branch-free so the bulk loops in dtype.cpp
// auto-vectorise; both directions round to nearest even, keep the sign, keep Inf and keep
// NaN a NaN, and handle half subnormals exactly.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tb {

static_assert(std::endian::native == std::endian::little,
              "stored tensors are little-endian; a big-endian host needs byte swaps");

// In the order of the reference safetensors implementation: writers sort tensors by this
// order (descending), so the enum order is part of the on-disk layout.
enum class DType : std::uint8_t { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

// Bytes per element.
std::size_t dtype_size(DType dt);
// The safetensors spelling: "F32", "BF16", ...
std::string_view dtype_name(DType dt);
// Inverse of dtype_name; nullopt for any other string (case-sensitive, as in the format).
std::optional<DType> dtype_from_name(std::string_view name);

// ---- scalar conversions -------------------------------------------------------------------

inline float bf16_to_f32(std::uint16_t h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// Round to nearest even on the 16 dropped bits. NaN is returned quiet with its sign and top
// payload bits, because adding the rounding bias to a NaN could carry it into Inf.
inline std::uint16_t f32_to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<std::uint16_t>(is_nan ? quiet_nan : rounded);
}

// Half -> float without branches (after Maratyszcza's FP16 library): normal and
// Inf/NaN inputs are rebased by one multiply by 2^-112; subnormals come out of a
// subtraction that is exact in fp32. Every half value is exactly representable in fp32,
// and all intermediate results are fp32 normals, so flush-to-zero modes do not matter.
inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
  const std::uint32_t sign = w & 0x80000000u;
  const std::uint32_t two_w = w + w;
  const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const std::uint32_t magnitude = two_w < (1u << 27) ? std::bit_cast<std::uint32_t>(denormalized)
                                                     : std::bit_cast<std::uint32_t>(normalized);
  return std::bit_cast<float>(sign | magnitude);
}

// Float -> half with the FPU's round-to-nearest-even doing the rounding (after Maratyszcza's
// FP16 library): the magnitude is scaled so that overflow saturates to Inf, then added to a
// power of two chosen so the addition rounds at exactly the half mantissa's last bit
// (or at 2^-24 for results in the subnormal range). NaN becomes the canonical quiet NaN
// with the input's sign. Relies on the default rounding mode, which tunebench never changes.
inline std::uint16_t f32_to_f16(float f) {
  const std::uint32_t w = std::bit_cast<std::uint32_t>(f);
  const float abs_f = std::bit_cast<float>(w & 0x7FFFFFFFu);
  float base = (abs_f * 0x1.0p+112f) * 0x1.0p-110f;
  const std::uint32_t shl1_w = w + w;
  const std::uint32_t sign = w & 0x80000000u;
  std::uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(base);
  const std::uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const std::uint32_t mantissa_bits = bits & 0x00000FFFu;
  const std::uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// ---- bulk conversions ---------------------------------------------------------------------
// `src`/`dst` of the 16-bit side are raw little-endian bytes with no alignment requirement,
// because tensor data inside a safetensors file may start at any byte offset.

void f16_to_f32(const std::byte* src, float* dst, std::size_t n);   // src: 2n bytes, dst: (n)
void bf16_to_f32(const std::byte* src, float* dst, std::size_t n);  // src: 2n bytes, dst: (n)
void f32_to_f16(const float* src, std::byte* dst, std::size_t n);   // src: (n), dst: 2n bytes
void f32_to_bf16(const float* src, std::byte* dst, std::size_t n);  // src: (n), dst: 2n bytes

// The hot-path conversion of mixed precision (weights after an optimizer step, matmul
// inputs): aligned uint16 output, vectorised and split over the OpenMP threads.
void convert_to_bf16(std::uint16_t* dst, const float* src, std::int64_t n);

}  // namespace tb
