// Q tiles by TMA for the decode kernels: a tensor map over q [b, s_q, h_q, d_qk] (16-bit
// elements) whose boxes are 64 columns x 64 heads of one query token, 128-byte swizzled: the
// SW128 boxes the kernels' S = Q K^T reads. Heads past h_q in a box read as zeros. Where q does
// not suit a tensor map, or an m-block is not 64 heads of one query token, the kernels copy Q
// with cp.async instead (docs/perf-notes.md, "The seesaw's Q by TMA").
#pragma once

#include <cstdint>
#include <cuda.h>

#include "flashmla/dense_decode.h"
#include "flashmla/sparse_decode.h"

namespace flashmla::detail {

// q and its layout; strides in elements.
struct QTileSource {
  const void* q = nullptr;
  int head_dim = 0, num_heads = 0, seqlen_q = 0, batch = 0;
  int64_t head_stride = 0, seq_stride = 0, batch_stride = 0;
};

// q 16-byte aligned, and the strides of every dim with more than one element positive
// multiples of 16 bytes (a unit dim's stride is never read).
bool q_tile_source_aligned(const QTileSource& source);

// The map, or false where the layout does not suit one (the caller then copies Q).
bool make_q_tile_map(const QTileSource& source, CUtensorMap& map);

QTileSource q_tile_source(const DenseDecodeParams& params);
QTileSource q_tile_source(const SparseDecodeParams& params);

// Dense decode (the seesaw kernel): heads_per_kv a multiple of 64, and q aligned.
bool q_tile_by_tma_eligible(const DenseDecodeParams& params);

// Sparse decode (the 64-head kernels; h_q <= 32 takes the few-heads kernels, which copy their
// 16 or 32 Q rows): q aligned.
bool q_tile_by_tma_eligible(const SparseDecodeParams& params);

}  // namespace flashmla::detail
