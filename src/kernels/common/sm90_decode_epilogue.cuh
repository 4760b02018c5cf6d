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
// Lane l of a quad holds columns 8j + 2(l % 4), +1 of each block j; lanes l and l ^ 1 swap one
// pair per two blocks so that an even lane writes four columns of block j and an odd one four
// of block j + 1: 16-byte (fp32) or 8-byte (16-bit) stores, half the store instructions of a
// pair a lane, each writing whole 32-byte sectors (the pair stores took ~2.7 us of a CTA's
// epilogue, longer than a tile, docs/perf-notes.md).
template <class Element, int kHeadDimV, int N, class Params>
__device__ __forceinline__ void write_output_cols(const Params& p, const EpilogueTarget& target,
                                                  const float (&acc)[N / 2], int col_base,
                                                  const float (&inv_sum)[2], int thread_in_wg) {
  static_assert(N % 16 == 0);
  const int warp = thread_in_wg / 32, lane = thread_in_wg % 32;
  const bool odd = lane & 1;
  // This lane's first column within a pair of blocks (8 (j + odd) + 2 (l % 4 - odd)).
  const int col0 = col_base + (odd ? 8 + 2 * (lane % 4 - 1) : 2 * (lane % 4));
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int local_row = 16 * warp + lane / 4 + 8 * i;
    // Every lane takes part in the exchanges; rows past the end only skip their stores.
    const bool write = local_row < target.num_rows;
    const int row = target.row_base + local_row;
    Element* out = nullptr;
    float* accum = nullptr;
    if (target.single_split) {
      const int s = row / p.heads_per_kv;
      const int head = target.kv_head * p.heads_per_kv + row % p.heads_per_kv;
      out = static_cast<Element*>(p.out) + target.batch * p.out_batch_stride +
            s * p.out_seq_stride + head * p.out_head_stride + col0;
    } else {
      accum =
          p.o_accum +
          ((int64_t(target.split_slot) * p.num_heads_kv + target.kv_head) * p.rows_per_kv + row) *
              kHeadDimV +
          col0;
    }
#pragma unroll
    for (int j = 0; j < N / 8; j += 2) {
      const float a0 = acc[4 * j + 2 * i] * inv_sum[i], a1 = acc[4 * j + 2 * i + 1] * inv_sum[i];
      const float b0 = acc[4 * j + 4 + 2 * i] * inv_sum[i];
      const float b1 = acc[4 * j + 4 + 2 * i + 1] * inv_sum[i];
      // Even lanes keep block j and send block j + 1; odd lanes the other way round.
      const float r0 = __shfl_xor_sync(0xffffffffu, odd ? a0 : b0, 1);
      const float r1 = __shfl_xor_sync(0xffffffffu, odd ? a1 : b1, 1);
      const float4 v = odd ? make_float4(r0, r1, b0, b1) : make_float4(a0, a1, r0, r1);
      if (!write) continue;
      if (target.single_split) {
        *reinterpret_cast<uint2*>(out + 8 * j) =
            make_uint2(pack_pair<Element>(v.x, v.y), pack_pair<Element>(v.z, v.w));
      } else {
        *reinterpret_cast<float4*>(accum + 8 * j) = v;
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
