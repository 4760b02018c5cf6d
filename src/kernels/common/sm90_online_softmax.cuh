// Online softmax over one 64x64 S tile held in wgmma accumulator layout.
//
// Accumulator layout of a 64xN fp32 wgmma tile for thread t of the warpgroup (warp w = t / 32,
// lane l): register 4j + 2i + c holds row 16w + l/4 + 8i, column 8j + 2(l%4) + c. So each
// thread owns two rows (i = 0, 1) and each row is spread over the 4 lanes of a quad.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace flashmla::sm90 {

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

template <class Element>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack_pair<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x with the MUFU.EX2 instruction alone, flushing results below 2^-126 to zero (harmless for
// softmax weights). Without --use_fast_math, exp2f() wraps every call in a denormal fix-up of
// three more instructions.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Running statistics of the two rows a thread owns, in log2 units of the scaled logits.
struct RowStats {
  float max[2];  // running max (-inf until a valid token is seen)
  float sum[2];  // this thread's share of the running sum (reduced over the quad at the end)
};

// Which tokens of a tile each row may attend, for online_softmax. A mask's for_lane(col0) is
// the same mask seen from a thread whose columns are col0 + 8 j + c: valid(i, 8 j + c) then
// tests constant positions (for the bit mask one AND a column instead of a 64-bit shift).
// Dense decoding: a token limit per row (sequence end, causal mask).
struct RowLimitMask {
  int tile_token0;   // first token of the tile
  int row_limit[2];  // tokens t < row_limit[i] are attended by owned row i
  bool any_masked;   // some token of the tile is at or past a limit
  __device__ __forceinline__ RowLimitMask(int token0, const int (&limit)[2])
      : tile_token0(token0),
        row_limit{limit[0], limit[1]},
        any_masked(token0 + 64 > min(limit[0], limit[1])) {}
  // `col` is the column of the tile (0..63).
  __device__ __forceinline__ bool valid(int i, int col) const {
    return !any_masked || tile_token0 + col < row_limit[i];
  }
  __device__ __forceinline__ RowLimitMask for_lane(int col0) const {
    RowLimitMask m = *this;
    m.tile_token0 += col0;
    return m;
  }
};

// Sparse decoding: one validity bit per token of the tile, the same for every row.
struct TokenBitMask {
  uint64_t bits;
  __device__ __forceinline__ bool valid(int, int col) const { return (bits >> col) & 1; }
  __device__ __forceinline__ TokenBitMask for_lane(int col0) const { return {bits >> col0}; }
};

// Sparse prefill: one validity byte per token of the tile (0 = skipped), the same for every row.
struct TokenByteMask {
  const uint8_t* bytes;  // [64] in shared memory
  __device__ __forceinline__ bool valid(int, int col) const { return bytes[col] != 0; }
  __device__ __forceinline__ TokenByteMask for_lane(int col0) const { return {bytes + col0}; }
};

// Every token of the tile attended (the steady state of a long sequence): no select a column.
struct AllValidMask {
  __device__ __forceinline__ bool valid(int, int) const { return true; }
  __device__ __forceinline__ AllValidMask for_lane(int) const { return *this; }
};

// Masks S (invalid tokens become -inf), updates the running max/sum and turns S into
// probabilities packed as 16-bit pairs: p_packed[2j + i] = row i, cols 8j + 2(l%4) + {0,1},
// which is also the register A fragment of the following P V wgmma. Returns per row the factor
// by which the output accumulated so far must be rescaled.
template <class Element, class Mask>
__device__ __forceinline__ void online_softmax(float (&s)[32], uint32_t (&p_packed)[16],
                                               RowStats& stats, float (&rescale)[2],
                                               float scale_log2, const Mask& mask, int lane) {
  const Mask lane_mask = mask.for_lane(2 * (lane % 4));  // this thread's columns from 0
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    // One chain a row: the two rows' chains already interleave; four partial chains measured
    // equal or 1% slower on every kernel (docs/perf-notes.md).
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float& x = s[4 * j + 2 * i + c];
        // Select rather than add: masked columns may hold NaN read from unused cache rows.
        x = lane_mask.valid(i, 8 * j + c) ? x : -INFINITY;
        tile_max = fmaxf(tile_max, x);
      }
    }
    // Scaling after the max (scale_log2 > 0 keeps the order) lets the exponent below be one
    // fused multiply-add per element.
    tile_max = quad_max(tile_max) * scale_log2;
    const float new_max = fmaxf(stats.max[i], tile_max);
    // A row that has seen no valid token keeps max -inf; subtract 0 then so exp2 gives 0.
    const float subtract = new_max == -INFINITY ? 0.f : new_max;
    rescale[i] = fast_exp2(stats.max[i] - subtract);
    stats.max[i] = new_max;
    float tile_sum = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float& x = s[4 * j + 2 * i + c];
        x = fast_exp2(fmaf(x, scale_log2, -subtract));
        tile_sum += x;
      }
    }
    stats.sum[i] = stats.sum[i] * rescale[i] + tile_sum;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      p_packed[2 * j + i] = pack_pair<Element>(s[4 * j + 2 * i], s[4 * j + 2 * i + 1]);
    }
  }
}

// online_softmax with `mask`, or with none where `all_valid`: one copy of the loop without the
// per-column selects for the tiles where nothing is masked. `all_valid` may differ between the
// quads of a warp (rows of different query positions under a causal mask); the quad-mates that
// exchange values by shuffle share their rows and so their branch, and from sm_70 on shfl.sync
// does not need the warp's threads at the same instruction.
template <class Element, class Mask>
__device__ __forceinline__ void online_softmax_unless_all_valid(
    bool all_valid, float (&s)[32], uint32_t (&p_packed)[16], RowStats& stats, float (&rescale)[2],
    float scale_log2, const Mask& mask, int lane) {
  if (all_valid) {
    online_softmax<Element>(s, p_packed, stats, rescale, scale_log2, AllValidMask{}, lane);
  } else {
    online_softmax<Element>(s, p_packed, stats, rescale, scale_log2, mask, lane);
  }
}

// Multiplies the two rows of a 64xN accumulator a thread owns by their factors.
template <int N>
__device__ __forceinline__ void rescale_rows(float (&acc)[N], const float (&factor)[2]) {
#pragma unroll
  for (int j = 0; j < N / 4; ++j) {
    acc[4 * j + 0] *= factor[0];
    acc[4 * j + 1] *= factor[0];
    acc[4 * j + 2] *= factor[1];
    acc[4 * j + 3] *= factor[1];
  }
}

}  // namespace flashmla::sm90
