// Output columns of a 64-row wgmma accumulator written straight from registers (sparse
// prefill), 16 bytes a lane.
//
// Lane l of a quad holds columns 8j + 2(l % 4), +1 of each 8-column block j (row l / 4, and
// l / 4 + 8). For four blocks jj..jj+3 the quad's sixteen words (bf16 pairs) are transposed so
// that lane q holds all eight columns of block jj + q: a lane-pair exchange (each lane gets
// four columns of one block of each pair), then a pair-of-pairs exchange. A warp's store then
// writes 64 bytes of each of its 8 rows: a quarter of the store instructions of a 4-byte pair
// a lane, half of the decode epilogue's 8-byte form (sm90_decode_epilogue.cuh), with the same
// shuffle count per byte. Measured on the prefill's item boundary: docs/perf-notes.md.
#pragma once

#include <cstdint>

#include "kernels/common/sm90_online_softmax.cuh"

namespace flashmla::sm90 {

// Lane q's 16 bytes for block jj + q of owned row i (0: lane / 4, 1: lane / 4 + 8), scaled
// and packed to Element. Every lane of the warp must call it (shuffles).
template <class Element, int N>
__device__ __forceinline__ uint4 quad_transposed_block(const float (&acc)[N], int i, int jj,
                                                       float scale, int lane) {
  const bool odd = lane & 1, upper = lane & 2;
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    w[k] = pack_pair<Element>(acc[4 * (jj + k) + 2 * i] * scale,
                              acc[4 * (jj + k) + 2 * i + 1] * scale);
  }
  // Lane pairs: even lanes keep blocks jj and jj + 2 and receive the odd lane's columns of
  // them; odd lanes keep jj + 1 and jj + 3.
  const uint32_t r01 = __shfl_xor_sync(0xffffffffu, odd ? w[0] : w[1], 1);
  const uint32_t r23 = __shfl_xor_sync(0xffffffffu, odd ? w[2] : w[3], 1);
  const uint2 p01 = odd ? make_uint2(r01, w[1]) : make_uint2(w[0], r01);
  const uint2 p23 = odd ? make_uint2(r23, w[3]) : make_uint2(w[2], r23);
  // Pairs of pairs: lanes 0, 1 keep blocks jj, jj + 1 (columns 0..3 of them) and receive
  // columns 4..7 from lanes 2, 3, which keep jj + 2, jj + 3.
  const uint2 send = upper ? p01 : p23;
  const uint32_t rx = __shfl_xor_sync(0xffffffffu, send.x, 2);
  const uint32_t ry = __shfl_xor_sync(0xffffffffu, send.y, 2);
  return upper ? make_uint4(rx, ry, p23.x, p23.y) : make_uint4(p01.x, p01.y, rx, ry);
}

}  // namespace flashmla::sm90
