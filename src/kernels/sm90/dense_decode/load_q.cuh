// Loads a 64-row Q tile into 128-byte swizzled shared-memory boxes with 16-byte loads.
// Rows are (s, head) pairs of one KV head, which TMA boxes cannot express when an m-block
// spans several query tokens, so plain loads do it; rows past the end are zero.
#pragma once

#include <cstdint>

#include "kernels/sm90/dense_decode/kernel_params.h"

namespace flashmla::sm90 {

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a 64 x 128-byte SW128 box.
__device__ __forceinline__ uint32_t sw128_offset(int row, int chunk) {
  return row * 128 + ((chunk ^ (row & 7)) << 4);
}

template <class Traits>
__device__ __forceinline__ void load_q_tile(const DenseDecodeKernelParams& p,
                                            typename Traits::Element (*q_smem)[Traits::kBoxElems],
                                            int batch, int kv_head, int m_block, int thread) {
  constexpr int kChunksPerRow = Traits::kHeadDimQK / 8;
  constexpr int kChunks = Traits::kBlockM * kChunksPerRow;
  const auto* q = static_cast<const char*>(p.q);
  char* smem = reinterpret_cast<char*>(q_smem);
#pragma unroll 4
  for (int idx = thread; idx < kChunks; idx += Traits::kNumThreads) {
    const int row = idx / kChunksPerRow;
    const int chunk = idx % kChunksPerRow;
    const int q_row = m_block * Traits::kBlockM + row;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (q_row < p.rows_per_kv) {
      const int s = q_row / p.heads_per_kv;
      const int head = kv_head * p.heads_per_kv + q_row % p.heads_per_kv;
      const int64_t element =
          batch * p.q_batch_stride + s * p.q_seq_stride + head * p.q_head_stride + chunk * 8;
      value = __ldg(reinterpret_cast<const uint4*>(q + element * 2));
    }
    const int box = chunk / 8;
    *reinterpret_cast<uint4*>(smem + box * Traits::kBoxBytes + sw128_offset(row, chunk % 8)) =
        value;
  }
}

}  // namespace flashmla::sm90
