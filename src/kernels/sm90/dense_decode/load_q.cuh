// Loads the 64-row Q tile of one (sequence, KV head, m-block) into SW128 boxes. Rows are
// (s, head) pairs of one KV head, which TMA boxes cannot express when an m-block spans several
// query tokens, so plain loads do it; rows past the end are zero.
#pragma once

#include <cstdint>

#include "kernels/common/sm90_load_rows.cuh"
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

}  // namespace flashmla::sm90
