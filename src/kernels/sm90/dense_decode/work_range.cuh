// Which KV tiles a CTA processes for each sequence of its planner part.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/sm90/dense_decode/kernel_params.h"
#include "schedule/decode_plan_core.h"

namespace flashmla::sm90 {

struct BatchTiles {
  int length;  // cache_seqlens[batch] as given (may be out of range)
  // Tokens that exist: length clamped to [0, capacity of its block-table row], so the kernel
  // never reads past the row however wrong cache_seqlens is.
  int seqlen;
  int first;  // first tile this CTA processes
  int last;   // one past the last tile
  // [first, last) before the causal cut: the tiles whose block-table entries this CTA checks.
  int planned_first;
  int planned_last;
};

// Tiles [first, last) of `batch` for this part, further cut to the tiles that some row of
// this m-block can attend under the causal mask.
__device__ __forceinline__ BatchTiles decode_batch_tiles(const DenseDecodeKernelParams& p,
                                                         const DecodePartRange& range, int batch,
                                                         int m_block) {
  BatchTiles t;
  t.length = p.cache_seqlens[batch];
  const int64_t capacity = int64_t(p.max_blocks_per_seq) * p.page_block_size;
  t.seqlen = static_cast<int>(t.length < 0 ? 0 : (t.length > capacity ? capacity : t.length));
  const int planned_tiles = flashmla::detail::decode_num_tiles(t.length);
  t.first = batch == range.begin_batch ? range.begin_tile : 0;
  t.last = batch == range.end_batch ? range.end_tile : planned_tiles;
  int attended = t.seqlen;
  if (p.causal) {
    // The last row of the m-block sees the most tokens.
    const int last_row = min(p.rows_per_kv, (m_block + 1) * kDecodeRowsPerBlock) - 1;
    const int s_max = last_row / p.heads_per_kv;
    attended = min(attended, max(0, t.seqlen - p.seqlen_q + s_max + 1));
  }
  const int attended_tiles = flashmla::detail::decode_num_tiles(attended);
  t.planned_first = t.first;
  t.planned_last = t.last;
  t.last = min(t.last, attended_tiles);
  t.first = min(t.first, t.last);
  return t;
}

}  // namespace flashmla::sm90
