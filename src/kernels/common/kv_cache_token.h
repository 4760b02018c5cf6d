// The per-value arithmetic of the FP8 cache writer, shared by the device kernel and the host
// twin so that both produce the same bytes by construction. A token's NoPE values are cut into
// chunks of kKVChunkValues (16: one 16-byte e4m3 store; a warp lane on the device handles one
// chunk, the host loops over them); a scale group is a whole number of chunks.
#pragma once

#include <cstdint>

#include "flashmla/kv_cache_format.h"
#include "kernels/common/fp8_convert.h"
#include "kernels/common/host_device.h"

namespace flashmla::kv_cache {

inline constexpr int kChunkValues = 16;

// Chunks of one token's NoPE values and chunks of one scale group, per format.
inline constexpr int kV32Chunks = kFp8V32NopeDim / kChunkValues;                 // 32
inline constexpr int kV32ChunksPerGroup = kFp8V32TileSize / kChunkValues;        // 8
inline constexpr int kModel1Chunks = kFp8Model1NopeDim / kChunkValues;           // 28
inline constexpr int kModel1ChunksPerGroup = kFp8Model1TileSize / kChunkValues;  // 4
static_assert(kFp8V32NopeDim % kFp8V32TileSize == 0 && kFp8V32TileSize % kChunkValues == 0);
static_assert(kFp8Model1NopeDim % kFp8Model1TileSize == 0 &&
              kFp8Model1TileSize % kChunkValues == 0);

// |value| of a bfloat16 as its bits. The amax of a group is the integer maximum of these: it
// equals the float maximum for all non-NaN values and, unlike fmaxf, does not depend on the
// order of the reduction when a NaN is present (a NaN is simply the largest).
FLASHMLA_HD_INLINE uint32_t bf16_magnitude_bits(uint16_t bits) {
  return bits & 0x7fffu;
}

FLASHMLA_HD_INLINE uint32_t chunk_amax_bits(const uint16_t* values) {
  uint32_t amax = 0;
  for (int i = 0; i < kChunkValues; ++i) {
    const uint32_t magnitude = bf16_magnitude_bits(values[i]);
    amax = magnitude > amax ? magnitude : amax;
  }
  return amax;
}

// The power-of-two scale of a group from its amax bits (kv_cache_tools.h rule).
FLASHMLA_HD_INLINE float group_scale(uint32_t amax_bits) {
  return fp8::quantization_scale(fp8::bf16_bits_to_float(uint16_t(amax_bits)));
}

// 1 / scale for a power-of-two scale from group_scale (2^-13 .. 2^127), exact: built from the
// exponent bits (2^-127, the reciprocal of the largest scale, is a float subnormal).
FLASHMLA_HD_INLINE float exact_reciprocal(float power_of_two_scale) {
  const uint32_t biased_exponent = fp8::float_bits(power_of_two_scale) >> 23;
  return biased_exponent >= 254u ? fp8::bits_float(0x00400000u)
                                 : fp8::bits_float((254u - biased_exponent) << 23);
}

// e4m3(value / scale), computed as value * (1 / scale): with an exact reciprocal this is the
// same correctly rounded float as the division (exact unless it is a float subnormal, which
// e4m3 rounds to 0 anyway), and the device needs no division subroutine. The build uses no
// flush-to-zero, so host and device agree.
FLASHMLA_HD_INLINE uint8_t quantize_value(uint16_t value_bits, float inverse_scale) {
  // A NaN input is stored as the e4m3 NaN of its sign here, not through the multiply: a GPU
  // returns the canonical NaN (sign 0) where the host keeps the operand's sign.
  if (bf16_magnitude_bits(value_bits) > 0x7f80u) {
    return uint8_t(((value_bits >> 8) & 0x80u) | 0x7fu);
  }
  return fp8::float_to_e4m3(fp8::bf16_bits_to_float(value_bits) * inverse_scale);
}

FLASHMLA_HD_INLINE void quantize_chunk(const uint16_t* values, float scale, uint8_t* out) {
  const float inverse_scale = exact_reciprocal(scale);
  for (int i = 0; i < kChunkValues; ++i) out[i] = quantize_value(values[i], inverse_scale);
}

// The 8-byte MODEL1 scale row of a token: 7 e8m0 exponents and a zero pad byte.
FLASHMLA_HD_INLINE uint64_t model1_scale_row(const float* scales) {
  uint64_t row = 0;
  for (int g = 0; g < kFp8Model1NumScales; ++g) {
    row |= uint64_t(fp8::scale_to_e8m0(scales[g])) << (8 * g);
  }
  return row;  // byte 7 (the pad) stays 0; little-endian byte order, as both host and GPU are
}

}  // namespace flashmla::kv_cache
