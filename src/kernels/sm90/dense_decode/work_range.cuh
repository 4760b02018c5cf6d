// Which KV tiles a CTA processes for each sequence of its planner part.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/sm90/dense_decode/kernel_params.h"

namespace flashmla::sm90 {

// Tokens of sequence `batch` that exist (clamped to [0, capacity of its block-table row]:
// the kernel never reads past the row however wrong cache_seqlens is).
__device__ __forceinline__ int decode_seqlen(const DenseDecodeKernelParams& p, int batch) {
  const int64_t capacity = int64_t(p.max_blocks_per_seq) * p.page_block_size;
  const int64_t len = p.cache_seqlens[batch];
  return static_cast<int>(len < 0 ? 0 : (len > capacity ? capacity : len));
}

struct BatchTiles {
  int seqlen;  // clamped length
  int first;   // first tile this CTA processes
  int last;    // one past the last tile
};

// Tiles [first, last) of `batch` for this part, further cut to the tiles that some row of
// this m-block can attend under the causal mask.
__device__ __forceinline__ BatchTiles decode_batch_tiles(const DenseDecodeKernelParams& p,
                                                         const DecodePartRange& range, int batch,
                                                         int m_block) {
  BatchTiles t;
  t.seqlen = decode_seqlen(p, batch);
  const int planned_len = p.cache_seqlens[batch];
  const int planned_tiles =
      planned_len > 0 ? (planned_len + kDecodeTileTokens - 1) / kDecodeTileTokens : 0;
  t.first = batch == range.begin_batch ? range.begin_tile : 0;
  t.last = batch == range.end_batch ? range.end_tile : planned_tiles;
  int attended = t.seqlen;
  if (p.causal) {
    // The last row of the m-block sees the most tokens.
    const int last_row = min(p.rows_per_kv, (m_block + 1) * kDecodeRowsPerBlock) - 1;
    const int s_max = last_row / p.heads_per_kv;
    attended = min(attended, max(0, t.seqlen - p.seqlen_q + s_max + 1));
  }
  const int attended_tiles = (attended + kDecodeTileTokens - 1) / kDecodeTileTokens;
  t.last = min(t.last, attended_tiles);
  t.first = min(t.first, t.last);
  return t;
}

}  // namespace flashmla::sm90
