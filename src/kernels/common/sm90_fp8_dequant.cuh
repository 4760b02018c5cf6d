// Device-side dequantization of float8_e4m3 values to bfloat16, computing exactly
// bfloat16(float(e4m3) * scale) (fp8_convert.h's definition, used by the CPU reference).
//
// Fast path, for power-of-two scales in [2^-117, 2^7] (every scale the quantizer of
// kv_cache_tools.h writes): integer ops place the e4m3 sign/exponent/mantissa bits into a
// bfloat16 (the value times 2^-120, exactly), and one bf16x2 multiply by scale * 2^120 (exact
// too) gives the product, which has at most 4 significant bits and so is exact in bfloat16.
// 2 instructions per value instead of the 4-5 of the hardware fp8 -> f16 -> f32 -> bf16 path.
// Any other scale takes the float32 path: slower, equally exact.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

namespace flashmla::sm90 {

// Whether `scale` takes the fast path.
__device__ __forceinline__ bool is_fast_dequant_scale(float scale) {
  const uint32_t bits = __float_as_uint(scale);
  const uint32_t exponent = bits >> 23;  // also rejects negative scales (sign bit set)
  return (bits & 0x7fffffu) == 0 && exponent >= 127 - 117 && exponent <= 127 + 7;
}

// bf16x2 holding scale * 2^120 in both halves (fast-path scales only).
__device__ __forceinline__ uint32_t fast_dequant_multiplier(float scale) {
  const uint32_t bf16 = (__float_as_uint(scale) + (120u << 23)) >> 16;  // exact: a power of two
  return bf16 | (bf16 << 16);
}

// Two e4m3 bytes of `word` (selected by `selector`, a __byte_perm selector that puts the
// low value's byte at bits 8..15 and the high value's at bits 24..31) -> bf16x2 of value*2^-120.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2_scaled(uint32_t word, uint32_t selector) {
  const uint32_t spread = __byte_perm(word, 0u, selector);
  return (spread & 0x80008000u) | ((spread >> 4) & 0x07f007f0u);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  const __nv_bfloat162 product = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a),
                                         *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const uint32_t*>(&product);
}

// Sixteen e4m3 values (16 bytes, first value in the lowest byte) times a fast-path scale given
// as its fast_dequant_multiplier -> sixteen bf16 values in two 16-byte vectors (0..7, 8..15).
__device__ __forceinline__ void dequant_e4m3x16_fast(const uint4& in, uint32_t multiplier,
                                                     uint4& lo, uint4& hi) {
  const uint32_t words[4] = {in.x, in.y, in.z, in.w};
  uint32_t out[8];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    out[2 * w] = bf16x2_mul(e4m3x2_to_bf16x2_scaled(words[w], 0x1404u), multiplier);
    out[2 * w + 1] = bf16x2_mul(e4m3x2_to_bf16x2_scaled(words[w], 0x3424u), multiplier);
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

// Eight e4m3 values (8 bytes) -> eight bf16 values in one 16-byte vector; fast path as above.
__device__ __forceinline__ uint4 dequant_e4m3x8_fast(const uint2& in, uint32_t multiplier) {
  return make_uint4(bf16x2_mul(e4m3x2_to_bf16x2_scaled(in.x, 0x1404u), multiplier),
                    bf16x2_mul(e4m3x2_to_bf16x2_scaled(in.x, 0x3424u), multiplier),
                    bf16x2_mul(e4m3x2_to_bf16x2_scaled(in.y, 0x1404u), multiplier),
                    bf16x2_mul(e4m3x2_to_bf16x2_scaled(in.y, 0x3424u), multiplier));
}

// The same for any scale, in float32: slower, equally exact.
__device__ __forceinline__ void dequant_e4m3x16_exact(const uint4& in, float scale, uint4& lo,
                                                      uint4& hi) {
  const uint32_t words[4] = {in.x, in.y, in.z, in.w};
  uint32_t out[8];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    float values[4];
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      // float bits of value * 2^-120 (exact, subnormals included); * 2^120 is exact again.
      const uint32_t byte = (words[w] >> (8 * b)) & 0xffu;
      const float scaled_down = __uint_as_float(((byte & 0x80u) << 24) | ((byte & 0x7fu) << 20));
      values[b] = (scaled_down * 0x1p120f) * scale;
    }
    const __nv_bfloat162 low = __floats2bfloat162_rn(values[0], values[1]);
    const __nv_bfloat162 high = __floats2bfloat162_rn(values[2], values[3]);
    out[2 * w] = *reinterpret_cast<const uint32_t*>(&low);
    out[2 * w + 1] = *reinterpret_cast<const uint32_t*>(&high);
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

// Eight e4m3 values, any scale.
__device__ __forceinline__ uint4 dequant_e4m3x8_exact(const uint2& in, float scale) {
  uint4 lo, hi;
  dequant_e4m3x16_exact(make_uint4(in.x, in.y, 0u, 0u), scale, lo, hi);
  return lo;
}

}  // namespace flashmla::sm90
