// Host-only conversions between float and the 16-bit storage types (bf16, fp16), on raw
// uint16_t bits so that tests and the CPU reference need no CUDA headers. Float -> 16-bit
// rounds to nearest even, keeps subnormals, overflows to inf and quiets NaNs: the same values
// as the device intrinsics __float2bfloat16_rn / __float2half_rn (NaN payloads may differ).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "flashmla/common.h"

namespace flashmla::reference {

inline float bf16_bits_to_float(uint16_t bits) {
  // bf16 is the upper half of a float: widening is exact.
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

inline uint16_t float_to_bf16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // NaN: keep the sign and the top payload bits, force the quiet bit so it stays NaN.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is correct and
  // turns the largest values into inf.
  const uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

inline float fp16_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) {  // inf or NaN: widen the payload
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t float_to_fp16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf stays inf, NaN becomes a quiet NaN
    return static_cast<uint16_t>(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (magnitude >= 0x477ff000u) {  // >= 65520 rounds past the largest half (65504)
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (magnitude < 0x38800000u) {               // below 2^-14: a half subnormal or zero
    if (magnitude < 0x33000000u) return sign;  // < 2^-25 (a tie at 2^-25 rounds to 0 too)
    // value = m * 2^(e - 150); in units of the half subnormal step 2^-24 that is m >> shift.
    const int exponent = static_cast<int>(magnitude >> 23);
    const uint32_t m = (magnitude & 0x7fffffu) | 0x800000u;
    const int shift = 126 - exponent;  // 14..24
    uint32_t result = m >> shift;
    const uint32_t remainder = m & ((1u << shift) - 1u);
    const uint32_t half_step = 1u << (shift - 1);
    if (remainder > half_step || (remainder == half_step && (result & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);  // 0x400 (smallest normal) is correct too
  }
  // Normal: drop 13 mantissa bits with round to nearest even, then rebias 127 -> 15. A carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t rounded = (magnitude + 0xfffu + ((magnitude >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | (rounded - (112u << 10)));
}

// Dispatch on the library's element type.
inline float half_bits_to_float(ScalarType type, uint16_t bits) {
  return type == ScalarType::kFloat16 ? fp16_bits_to_float(bits) : bf16_bits_to_float(bits);
}

inline uint16_t float_to_half_bits(ScalarType type, float value) {
  return type == ScalarType::kFloat16 ? float_to_fp16_bits(value) : float_to_bf16_bits(value);
}

// The value `value` takes once stored in `type` (what a kernel writing that dtype produces
// from an exact float result).
inline float round_to_dtype(ScalarType type, float value) {
  return half_bits_to_float(type, float_to_half_bits(type, value));
}

inline void floats_to_half_bits(ScalarType type, const float* in, uint16_t* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = float_to_half_bits(type, in[i]);
}

inline void half_bits_to_floats(ScalarType type, const uint16_t* in, float* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = half_bits_to_float(type, in[i]);
}

}  // namespace flashmla::reference
