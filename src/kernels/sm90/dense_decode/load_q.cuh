// Loads the 64-row Q tile of one (sequence, KV head, m-block) into SW128 boxes. Rows are
// (s, head) pairs of one KV head, which TMA boxes cannot express when an m-block spans several
// query tokens, so plain loads do it (rows past the end are zero); where an m-block is 64 heads
// of one query token (DenseDecodeKernelParams::q_by_tma) one thread can issue it by TMA.
#pragma once

#include <cstdint>

#include "kernels/common/sm90_load_rows.cuh"
#include "kernels/common/sm90_q_tile_tma.cuh"
#include "kernels/sm90/dense_decode/kernel_params.h"

namespace flashmla::sm90 {

template <class Traits>
__device__ __forceinline__ void load_q_tile(const DenseDecodeKernelParams& p,
                                            typename Traits::Element (*q_smem)[Traits::kBoxElems],
                                            int batch, int kv_head, int m_block, int thread) {
  const auto* q = static_cast<const char*>(p.q);
  const auto row_address = [&](int row) -> const char* {
    const int q_row = m_block * Traits::kBlockM + row;
    if (q_row >= p.rows_per_kv) return nullptr;
    const int s = q_row / p.heads_per_kv;
    const int head = kv_head * p.heads_per_kv + q_row % p.heads_per_kv;
    return q + (batch * p.q_batch_stride + s * p.q_seq_stride + head * p.q_head_stride) * 2;
  };
  load_rows_sw128<Traits::kBlockM, Traits::kHeadDimQK, Traits::kNumThreads>(q_smem, row_address,
                                                                            thread);
}

// The same tile by TMA, completing on `barrier` (one thread; p.q_by_tma).
template <class Traits>
__device__ __forceinline__ void issue_q_tile(const CUtensorMap* q_map, uint64_t* barrier,
                                             typename Traits::Element (*q_smem)[Traits::kBoxElems],
                                             int batch, int kv_head, int m_block,
                                             int heads_per_kv) {
  const int first_row = m_block * Traits::kBlockM;
  issue_q_tile_tma<Traits::kNumBoxesQK, Traits::kBoxBytes>(
      q_map, barrier, [&](int box) { return q_smem[box]; },
      kv_head * heads_per_kv + first_row % heads_per_kv, first_row / heads_per_kv, batch);
}

}  // namespace flashmla::sm90
