// Writes one warpgroup's columns of the 64-row output tile: straight to `out`
// (normalised, in the input dtype) when the sequence has a single split, else to the fp32
// split-KV workspace for the combine kernel.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/sm90/dense_decode/kernel_params.h"
#include "kernels/sm90/dense_decode/softmax.cuh"

namespace flashmla::sm90 {

struct EpilogueTarget {
  int batch;
  int kv_head;
  int m_block;
  bool single_split;  // write out/lse directly
  int split_slot;     // global split index into the workspace otherwise
};

// acc: a 64xN accumulator of output columns [col_base, col_base + N); inv_sum per owned row.
template <class Traits, int N>
__device__ __forceinline__ void write_output_cols(const DenseDecodeKernelParams& p,
                                                  const EpilogueTarget& target,
                                                  const float (&acc)[N / 2], int col_base,
                                                  const float (&inv_sum)[2], int thread_in_wg) {
  using Element = typename Traits::Element;
  const int warp = thread_in_wg / 32, lane = thread_in_wg % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = target.m_block * Traits::kBlockM + 16 * warp + lane / 4 + 8 * i;
    if (row >= p.rows_per_kv) continue;
    const int col0 = col_base + 2 * (lane % 4);
    if (target.single_split) {
      const int s = row / p.heads_per_kv;
      const int head = target.kv_head * p.heads_per_kv + row % p.heads_per_kv;
      Element* out = static_cast<Element*>(p.out) + target.batch * p.out_batch_stride +
                     s * p.out_seq_stride + head * p.out_head_stride;
#pragma unroll
      for (int j = 0; j < N / 8; ++j) {
        const uint32_t packed = pack_pair<Element>(acc[4 * j + 2 * i] * inv_sum[i],
                                                   acc[4 * j + 2 * i + 1] * inv_sum[i]);
        *reinterpret_cast<uint32_t*>(out + col0 + 8 * j) = packed;
      }
    } else {
      float* out =
          p.o_accum +
          ((int64_t(target.split_slot) * p.num_heads_kv + target.kv_head) * p.rows_per_kv + row) *
              Traits::kHeadDimV;
#pragma unroll
      for (int j = 0; j < N / 8; ++j) {
        *reinterpret_cast<float2*>(out + col0 + 8 * j) =
            make_float2(acc[4 * j + 2 * i] * inv_sum[i], acc[4 * j + 2 * i + 1] * inv_sum[i]);
      }
    }
  }
}

// Log-sum-exp of one row: +inf (final) / -inf (partial) when it attended nothing.
__device__ __forceinline__ void write_row_lse(const DenseDecodeKernelParams& p,
                                              const EpilogueTarget& target, int row, float lse) {
  if (row >= p.rows_per_kv) return;
  if (target.single_split) {
    const int s = row / p.heads_per_kv;
    const int head = target.kv_head * p.heads_per_kv + row % p.heads_per_kv;
    p.lse[target.batch * p.lse_batch_stride + head * p.lse_head_stride + s] =
        lse == -INFINITY ? INFINITY : lse;
  } else {
    p.lse_accum[(int64_t(target.split_slot) * p.num_heads_kv + target.kv_head) * p.rows_per_kv +
                row] = lse;
  }
}

}  // namespace flashmla::sm90
