// Split-KV planning for decoding: divides every sequence's KV tiles among a fixed number of
// CTA "parts" so that uneven lengths balance over all SMs. The plan is computed on the GPU
// (no host synchronisation, safe to capture in a CUDA graph) and may be reused by every layer
// while the batch's lengths and shapes stay the same.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace flashmla {

// Ints per part in the tile-scheduler metadata: see DecodePartRange.
inline constexpr int kDecodeMetadataInts = 8;
// KV tokens per tile of the decode kernels: the unit the planner divides.
inline constexpr int kDecodeTileTokens = 64;
// Query rows (s_q * h_q / h_kv flattened) per CTA.
inline constexpr int kDecodeRowsPerBlock = 64;

// One CTA part's share of the work, as stored in the metadata (kDecodeMetadataInts ints).
// The part covers batches begin_batch..end_batch (inclusive): tiles [begin_tile, n) of
// begin_batch, all tiles of the batches in between and tiles [0, end_tile) of end_batch
// (or [begin_tile, end_tile) when both are the same batch). begin_split is the index, within
// begin_batch, of the split this part computes for it (0 for every other batch it covers).
// An empty part has begin_batch > end_batch.
// end_is_last is 1 when the part's split of end_batch is that sequence's last one: a kernel
// then runs to the sequence's actual end, so a plan made for other lengths stays correct.
struct DecodePartRange {
  int32_t begin_batch;
  int32_t begin_tile;
  int32_t end_batch;
  int32_t end_tile;
  int32_t begin_split;
  int32_t end_is_last;
  int32_t reserved[2];
};
static_assert(sizeof(DecodePartRange) == kDecodeMetadataInts * sizeof(int32_t));

struct DecodeScheduleShape {
  int batch = 0;             // b
  int rows_per_kv_head = 0;  // s_q * h_q / h_kv: query rows that share one KV head
  int num_heads_kv = 1;      // h_kv
  int num_sms = 0;           // SMs to balance over; 0 = those of the current device
};

// How many parts (CTAs per (m-block, KV head)) the plan divides the work into.
int decode_num_parts(const DecodeScheduleShape& shape);

// Upper bound on the total number of splits of a plan (sizes the split-KV workspace).
int decode_max_total_splits(const DecodeScheduleShape& shape);

// Cost model: a split costs its tiles plus this many tiles of fixed overhead
// (loading Q, writing the partial result, combining).
inline constexpr int kDecodeSplitOverheadTiles = 5;

// Computes the plan on the GPU.
//   cache_seqlens: [batch] int32, device; num_kv_tokens of each sequence (>= 0)
//   tile_scheduler_metadata: [num_parts, kDecodeMetadataInts] int32, device, written
//   num_splits: [batch + 1] int32, device, written: prefix sums of the splits per sequence
//   page_block_size: tokens per KV-cache page (the plan itself works in kDecodeTileTokens)
void plan_decode(const DecodeScheduleShape& shape, const int32_t* cache_seqlens,
                 int page_block_size, int32_t* tile_scheduler_metadata, int32_t* num_splits,
                 cudaStream_t stream);

// The same plan computed on the host, for tests and for callers that hold lengths on the host.
void plan_decode_host(const DecodeScheduleShape& shape, const int32_t* cache_seqlens,
                      int page_block_size, int num_parts, int32_t* tile_scheduler_metadata,
                      int32_t* num_splits);

// ---- Sparse decoding ------------------------------------------------------------------------
// Each query token has its own top-k token set, so a CTA serves the heads of one query token:
// the grid is (ceil(h_q / 64), s_q, num_parts) and every part walks sequences and 64-token
// tiles of their (main, then extra) index lists.
struct SparseDecodeScheduleShape {
  int batch = 0;        // b
  int seqlen_q = 0;     // s_q
  int num_heads_q = 0;  // h_q
  int num_sms = 0;      // SMs to balance over; 0 = those of the current device
};

int sparse_decode_num_parts(const SparseDecodeScheduleShape& shape);
int sparse_decode_max_total_splits(const SparseDecodeScheduleShape& shape);

// Tiles of sequence i: ceil(len_main / 64) + ceil(len_extra / 64), len = min(topk,
// topk_length[i]) (topk when the length pointer is null; extra_topk 0 = no extra set).
//   topk_length, extra_topk_length: optional [batch] int32, device
//   tile_scheduler_metadata: [num_parts, kDecodeMetadataInts] int32, device, written
//   num_splits: [batch + 1] int32, device, written
void plan_sparse_decode(const SparseDecodeScheduleShape& shape, int topk,
                        const int32_t* topk_length, int extra_topk,
                        const int32_t* extra_topk_length, int32_t* tile_scheduler_metadata,
                        int32_t* num_splits, cudaStream_t stream);

// Host twin (lengths are host pointers), for tests.
void plan_sparse_decode_host(const SparseDecodeScheduleShape& shape, int topk,
                             const int32_t* topk_length, int extra_topk,
                             const int32_t* extra_topk_length, int num_parts,
                             int32_t* tile_scheduler_metadata, int32_t* num_splits);

}  // namespace flashmla
