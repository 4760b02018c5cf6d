// Dense MLA decoding over a paged KV cache (spec section 1).
//
// out[i, j, h, :] = softmax(softmax_scale * q[i, j, h, :] . K^T) V over the first
// cache_seqlens[i] tokens of sequence i (causal: t <= cache_seqlens[i] - s_q + j), where
// token t lives at k_cache[block_table[i, t / page_block_size], t % page_block_size, h / g]
// (g = h_q / h_kv) and V is the first head_dim_v columns of each K row.
//
// Any page_block_size >= 1 (whole-tile TMA loads when it is a multiple of 64 or a sequence
// never spans two pages; smaller loads of gcd(page_block_size, 64) rows otherwise). With
// block_table == nullptr the cache is not paged: k_cache is [batch, page_block_size, h_kv,
// d_qk] with page_block_size the longest sequence the cache holds, num_blocks == batch and
// max_blocks_per_seq == 1. batch == 0 is a no-op.
//
// Lengths and block-table entries live on the GPU and are checked there: a negative length, a
// length beyond the table's capacity (max_blocks_per_seq * page_block_size), or a used table
// entry outside [0, num_blocks) never makes the kernel read outside the cache; the sequence's
// out and lse rows become NaN and the device error record says what was wrong
// (flashmla/device_errors.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "flashmla/device_errors.h"

namespace flashmla {

// All strides are in elements. Pointers are device pointers.
struct DenseDecodeParams {
  ScalarType dtype = ScalarType::kBFloat16;  // of q, k_cache and out

  int batch = 0;               // b (0: nothing to do)
  int seqlen_q = 0;            // s_q (query tokens per sequence)
  int num_heads_q = 0;         // h_q
  int num_heads_kv = 0;        // h_kv, divides h_q
  int head_dim_qk = 0;         // d_qk: 576 or 512
  int head_dim_v = 0;          // d_v: 512
  int page_block_size = 0;     // tokens per KV-cache page, >= 1 (non-paged: tokens per sequence)
  int num_blocks = 0;          // pages in k_cache (non-paged: batch)
  int max_blocks_per_seq = 0;  // columns of block_table (non-paged: 1)
  float softmax_scale = 0.f;   // logits = softmax_scale * q . k
  bool causal = false;         // bottom-right aligned; ignored when s_q == 1

  const void* q = nullptr;  // [b, s_q, h_q, d_qk], last dim contiguous
  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0;

  const void* k_cache = nullptr;  // [num_blocks, page_block_size, h_kv, d_qk], last dim contiguous
  int64_t k_block_stride = 0, k_token_stride = 0, k_head_stride = 0;

  const int32_t* block_table = nullptr;  // [b, max_blocks_per_seq]; nullptr: non-paged cache
  int64_t block_table_batch_stride = 0;
  const int32_t* cache_seqlens = nullptr;  // [b]

  void* out = nullptr;  // [b, s_q, h_q, d_v], last dim contiguous
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  float* lse = nullptr;                               // [b, h_q, s_q] float32
  int64_t lse_batch_stride = 0, lse_head_stride = 0;  // the s_q dimension is contiguous

  // The plan from plan_decode() for this batch (num_parts must match decode_num_parts()).
  const int32_t* tile_scheduler_metadata = nullptr;  // [num_parts, kDecodeMetadataInts]
  const int32_t* num_splits = nullptr;               // [b + 1]
  int num_parts = 0;

  // Scratch for split-KV partial results: at least dense_decode_workspace_bytes() bytes.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // Checked mode (also on when FLASH_MLA_CHECKED is set): synchronise after the call and throw
  // flashmla::Error naming the argument, batch index and value the kernel found wrong. Skipped
  // while the stream is being captured into a CUDA graph (read the record after replaying).
  bool checked = false;
};

// Bytes of workspace dense_decode needs for these shapes (0 is never returned).
size_t dense_decode_workspace_bytes(const DenseDecodeParams& params);

// Checks every argument that can be checked without reading device memory; throws
// flashmla::Error naming the argument otherwise. Needs no GPU.
void validate_dense_decode(const DenseDecodeParams& params);

// Validates, checks the current device, then launches the split-KV kernel and the combine
// kernel on `stream`. Asynchronous (unless checked); safe to capture in a CUDA graph.
void dense_decode(const DenseDecodeParams& params, cudaStream_t stream);

}  // namespace flashmla
