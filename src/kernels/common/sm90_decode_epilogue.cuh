// Writes one warpgroup's columns of a 64-row decode output tile: straight to `out`
// (normalised, in the output dtype) when the sequence has a single split, else to the fp32
// split-KV workspace for the combine kernel. Shared by the dense and sparse decode kernels,
// whose params both carry the fields used here (out / lse / o_accum / lse_accum and strides,
// num_heads_kv, heads_per_kv, rows_per_kv).
//
// Rows are numbered within one KV head: row = s * heads_per_kv + head_in_group (s-major), the
// layout of the split-KV workspace [splits, h_kv, rows_per_kv, d_v] and of the combine kernel.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/sm90_online_softmax.cuh"

namespace flashmla::sm90 {

struct EpilogueTarget {
  int batch;
  int kv_head;
  int row_base;       // KV-head row of the tile's first row
  int num_rows;       // rows of the tile that exist (the others are padding)
  bool single_split;  // write out/lse directly
  int split_slot;     // global split index into the workspace otherwise
};

// acc: a 64xN accumulator of output columns [col_base, col_base + N); inv_sum per owned row.
template <class Element, int kHeadDimV, int N, class Params>
__device__ __forceinline__ void write_output_cols(const Params& p, const EpilogueTarget& target,
                                                  const float (&acc)[N / 2], int col_base,
                                                  const float (&inv_sum)[2], int thread_in_wg) {
  const int warp = thread_in_wg / 32, lane = thread_in_wg % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int local_row = 16 * warp + lane / 4 + 8 * i;
    if (local_row >= target.num_rows) continue;
    const int row = target.row_base + local_row;
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
              kHeadDimV;
#pragma unroll
      for (int j = 0; j < N / 8; ++j) {
        *reinterpret_cast<float2*>(out + col0 + 8 * j) =
            make_float2(acc[4 * j + 2 * i] * inv_sum[i], acc[4 * j + 2 * i + 1] * inv_sum[i]);
      }
    }
  }
}

// Warpgroup 1's output columns [192, 512) (acc: [192, 448), acc_tail: [448, 512)).
template <class Element, int kHeadDimV, class Params>
__device__ __forceinline__ void write_output_cols_wg1(const Params& p, const EpilogueTarget& target,
                                                      const float (&acc)[128],
                                                      const float (&acc_tail)[32],
                                                      const float (&inv_sum)[2], int thread_in_wg) {
  write_output_cols<Element, kHeadDimV, 256>(p, target, acc, 192, inv_sum, thread_in_wg);
  write_output_cols<Element, kHeadDimV, 64>(p, target, acc_tail, 192 + 256, inv_sum, thread_in_wg);
}

// Log-sum-exp of one row (`local_row` of the tile): +inf (final) / -inf (partial) when it
// attended nothing.
template <class Params>
__device__ __forceinline__ void write_row_lse(const Params& p, const EpilogueTarget& target,
                                              int local_row, float lse) {
  if (local_row >= target.num_rows) return;
  const int row = target.row_base + local_row;
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
