// Which tiles of a sequence's (main, then extra) index lists a CTA processes for each
// sequence of its planner part.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/sm90/sparse_decode/kernel_params.h"

namespace flashmla::sm90 {

__device__ __forceinline__ int sparse_list_length(const SparseTokenList& list, int batch) {
  if (list.topk_length == nullptr) return list.topk;
  const int len = list.topk_length[batch];
  return len < 0 ? 0 : (len > list.topk ? list.topk : len);
}

struct SparseBatchTiles {
  int main_len;    // entries of the main list that count
  int extra_len;   // entries of the extra list that count
  int main_tiles;  // tiles [0, main_tiles) come from the main list, the rest from the extra one
  int first;       // first tile this CTA processes
  int last;        // one past the last
};

// The part's share of `batch`. The plan may have been made for other lengths (a tensor-form
// plan knows only topk): the split that ends a sequence always runs to its actual end, and
// every other range is clamped to it, so the splits still cover every tile exactly once.
__device__ __forceinline__ SparseBatchTiles sparse_batch_tiles(const SparseDecodeKernelParams& p,
                                                               const DecodePartRange& range,
                                                               int batch) {
  SparseBatchTiles t;
  t.main_len = sparse_list_length(p.main, batch);
  t.extra_len = p.extra.topk > 0 ? sparse_list_length(p.extra, batch) : 0;
  t.main_tiles = (t.main_len + kDecodeTileTokens - 1) / kDecodeTileTokens;
  const int total = t.main_tiles + (t.extra_len + kDecodeTileTokens - 1) / kDecodeTileTokens;
  t.first = batch == range.begin_batch ? range.begin_tile : 0;
  t.last = (batch == range.end_batch && !range.end_is_last) ? min(range.end_tile, total) : total;
  t.first = min(t.first, t.last);
  return t;
}

// Walks the tiles of a part in order, sequence after sequence (sequences with no tiles in the
// part are skipped). The producer keeps several, to look ahead.
struct SparseTileCursor {
  int batch;  // > range.end_batch once past the last tile
  int tile;
  SparseBatchTiles tiles;

  __device__ __forceinline__ bool valid(const DecodePartRange& range) const {
    return batch <= range.end_batch;
  }

  __device__ __forceinline__ void skip_empty(const SparseDecodeKernelParams& p,
                                             const DecodePartRange& range) {
    while (tile >= tiles.last && batch < range.end_batch) {
      ++batch;
      tiles = sparse_batch_tiles(p, range, batch);
      tile = tiles.first;
    }
    if (tile >= tiles.last) batch = range.end_batch + 1;
  }

  __device__ __forceinline__ void start(const SparseDecodeKernelParams& p,
                                        const DecodePartRange& range) {
    batch = range.begin_batch;
    tiles = sparse_batch_tiles(p, range, batch);
    tile = tiles.first;
    skip_empty(p, range);
  }

  __device__ __forceinline__ void advance(const SparseDecodeKernelParams& p,
                                          const DecodePartRange& range) {
    if (!valid(range)) return;
    ++tile;
    skip_empty(p, range);
  }
};

}  // namespace flashmla::sm90
