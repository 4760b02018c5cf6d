// Bit-exact conversions of the FP8 KV-cache formats, the same code on host and device, so the
// cache tools, the CPU reference and the kernels agree bit for bit by construction:
//   float8_e4m3fn (bias 7, no inf, 0x7f/0xff NaN, max 448), float8_e8m0 (scale 2^(e-127)),
//   and the quantizer's scale rule. Plain integer/float arithmetic: no intrinsics.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/common/host_device.h"

namespace flashmla::fp8 {

FLASHMLA_HD_INLINE uint32_t float_bits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, 4);
  return bits;
}

FLASHMLA_HD_INLINE float bits_float(uint32_t bits) {
  float value;
  memcpy(&value, &bits, 4);
  return value;
}

inline constexpr float kE4m3Max = 448.f;
// Lower clamp of the scale (amax / 448) before rounding it up to a power of two.
inline constexpr float kMinScale = 1e-4f;

// float8_e4m3fn -> float, exact.
FLASHMLA_HD_INLINE float e4m3_to_float(uint8_t byte) {
  const uint32_t sign = uint32_t(byte & 0x80u) << 24;
  const uint32_t exponent = (byte >> 3) & 0xfu;
  const uint32_t mantissa = byte & 0x7u;
  if (exponent == 0xfu && mantissa == 0x7u) return bits_float(sign | 0x7fc00000u);  // NaN
  if (exponent == 0) {
    // Subnormal: mantissa * 2^-9, exact in float.
    const float magnitude = float(mantissa) * 0x1p-9f;
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

// float -> float8_e4m3fn, round to nearest even, saturating to +-448; NaN -> NaN.
FLASHMLA_HD_INLINE uint8_t float_to_e4m3(float value) {
  const uint32_t bits = float_bits(value);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return uint8_t(sign | 0x7fu);
  if (magnitude >= 0x43e00000u) return uint8_t(sign | 0x7eu);  // >= 448 (and inf)
  if (magnitude < 0x3c800000u) {
    // Below 2^-6, the smallest normal: multiples of 2^-9. Scaling by 2^9 is exact.
    const float scaled = bits_float(magnitude) * 512.f;  // in [0, 8)
    uint32_t result = uint32_t(scaled);
    const float remainder = scaled - float(result);
    if (remainder > 0.5f || (remainder == 0.5f && (result & 1u))) ++result;
    return uint8_t(sign | result);  // 8 is the smallest normal (exponent 1), as it should be
  }
  // Normal: keep 3 mantissa bits, round to nearest even on the 20 dropped ones; a carry into
  // the exponent is correct (and stays <= 448 since the magnitude is below 448 here).
  const uint32_t rounded = (magnitude + 0x7ffffu + ((magnitude >> 20) & 1u)) >> 20;
  return uint8_t(sign | (rounded - (120u << 3)));
}

// float8_e8m0 -> float: 2^(e - 127); 0xff is NaN.
FLASHMLA_HD_INLINE float e8m0_to_float(uint8_t byte) {
  if (byte == 0xffu) return bits_float(0x7fc00000u);
  if (byte == 0) return 0x1p-127f;  // a float subnormal
  return bits_float(uint32_t(byte) << 23);
}

// The quantizer's scale of a group whose largest magnitude is `amax`: the smallest power of
// two >= max(amax / 448, 1e-4), computed exactly on the float bits (no log2 rounding).
FLASHMLA_HD_INLINE float quantization_scale(float amax) {
  float wanted = amax / kE4m3Max;
  if (!(wanted >= kMinScale)) wanted = kMinScale;  // also maps NaN to the clamp
  const uint32_t bits = float_bits(wanted);
  if (bits >= 0x7f000000u) return bits_float(0x7f000000u);  // 2^127: the largest power of two
  const uint32_t exponent_bits = bits & 0x7f800000u;
  const bool exact = (bits & 0x007fffffu) == 0;
  return bits_float(exact ? exponent_bits : exponent_bits + 0x00800000u);
}

// The e8m0 byte of a power-of-two scale from quantization_scale (normal floats only).
FLASHMLA_HD_INLINE uint8_t scale_to_e8m0(float scale) {
  return uint8_t(float_bits(scale) >> 23);
}

// float -> bfloat16 bits, round to nearest even (NaN stays NaN).
FLASHMLA_HD_INLINE uint16_t float_to_bf16_bits(float value) {
  const uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

FLASHMLA_HD_INLINE float bf16_bits_to_float(uint16_t bits) {
  return bits_float(uint32_t(bits) << 16);
}

// The dequantized NoPE value: bfloat16(float(e4m3) * scale).
FLASHMLA_HD_INLINE uint16_t dequantize_e4m3(uint8_t byte, float scale) {
  return float_to_bf16_bits(e4m3_to_float(byte) * scale);
}

}  // namespace flashmla::fp8
