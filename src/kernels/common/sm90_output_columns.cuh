// Output columns of a 64-row wgmma accumulator written straight from registers (sparse
// prefill). The decode epilogue (sm90_decode_epilogue.cuh) does the same exchange inline:
// routed through these helpers, the dense decode kernel came out with a different schedule
// throughout its SASS, a change to a tuned kernel that nothing measured.
//
// Lane l of a quad holds columns 8j + 2(l % 4), +1 of each 8-column block j; lanes l and l ^ 1
// swap one pair per two blocks so that an even lane holds four columns of block j and an odd
// one four of block j + 1: 16-byte (fp32) or 8-byte (16-bit) stores, half the store
// instructions of a pair a lane, each quad writing whole 32-byte sectors.
#pragma once

namespace flashmla::sm90 {

// This lane's first column within every pair of blocks, relative to the tile's first column
// (odd: lane & 1).
__device__ __forceinline__ int swapped_pair_col0(int lane, bool odd) {
  return odd ? 8 + 2 * (lane % 4 - 1) : 2 * (lane % 4);
}

// The four values this lane writes for blocks j, j + 1 (j even) of owned row i (0: lane / 4,
// 1: lane / 4 + 8), scaled by `scale`. Every lane of the warp must call it (shuffles).
template <int N>
__device__ __forceinline__ float4 swapped_pair_values(const float (&acc)[N], int i, int j,
                                                      float scale, bool odd) {
  const float a0 = acc[4 * j + 2 * i] * scale, a1 = acc[4 * j + 2 * i + 1] * scale;
  const float b0 = acc[4 * j + 4 + 2 * i] * scale, b1 = acc[4 * j + 4 + 2 * i + 1] * scale;
  // Even lanes keep block j and send block j + 1; odd lanes the other way round.
  const float r0 = __shfl_xor_sync(0xffffffffu, odd ? a0 : b0, 1);
  const float r1 = __shfl_xor_sync(0xffffffffu, odd ? a1 : b1, 1);
  return odd ? make_float4(r0, r1, b0, b1) : make_float4(a0, a1, r0, r1);
}

}  // namespace flashmla::sm90
