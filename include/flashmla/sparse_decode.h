// Sparse MLA decoding (DeepSeek Sparse Attention, spec section 2): every query token attends
// to its own top-k cache tokens, named by index, in a paged cache of one of the formats of
// kv_cache_format.h (FP8 V3.2, FP8 MODEL1, or plain bfloat16), optionally together with a
// second ("extra") cache and index set in the same softmax.
//
// For query token s of sequence i and head h:
//   tokens T = { indices[i, s, j] : j < len, index valid } (+ the same over the extra set),
//   len = min(topk, topk_length[i]) (topk when topk_length is null),
//   an index is valid when 0 <= index < num_blocks * page_block_size; token index x lives in
//   block x / page_block_size at row x % page_block_size;
//   logits l_t = softmax_scale * q[i, s, h, :] . K_t (all head_dim_qk columns, K_t dequantized
//   to bfloat16), lse = log sum_t exp(l_t) (natural log, float32),
//   out = sum_t softmax(l)_t V_t (V_t = first 512 columns of K_t),
//   and with attn_sink: out *= exp(lse) / (exp(lse) + exp(attn_sink[h])) (lse unchanged).
// No valid token: out = 0 and lse = +inf. An index that is not valid (-1, out of range, or at
// a position >= len) is skipped and its row is never read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla {

// One cache and the tokens each query selects from it.
struct SparseTokenSource {
  const void* k_cache = nullptr;  // num_blocks page blocks in `format` (device memory)
  int num_blocks = 0;
  int page_block_size = 0;   // tokens per page block (any value >= 1)
  int64_t block_stride = 0;  // BYTES between page blocks
  int64_t token_stride = 0;  // BYTES between tokens of a block (kFp8Model1: ignored, the
                             // layout fixes it at 576 for data rows and 8 for scale rows)

  const int32_t* indices = nullptr;  // [b, s_q, topk] int32: block * page_block_size + row
  int64_t indices_batch_stride = 0;  // elements; the topk dimension is contiguous
  int64_t indices_seq_stride = 0;
  int topk = 0;                          // last dimension of indices (>= 1)
  const int32_t* topk_length = nullptr;  // optional [b] int32: entries j >= topk_length[i] skipped
};

// All strides are in elements unless named otherwise. Pointers are device pointers.
struct SparseDecodeParams {
  KVCacheFormat kv_format = KVCacheFormat::kFp8V32;  // of both caches

  int batch = 0;        // b
  int seqlen_q = 0;     // s_q
  int num_heads_q = 0;  // h_q (h_kv is 1)
  int head_dim_qk = 0;  // 576 (kFp8V32, kBFloat16) or 512 (kFp8Model1, kBFloat16)
  int head_dim_v = 0;   // 512
  float softmax_scale = 0.f;

  const void* q = nullptr;  // [b, s_q, h_q, d_qk] bfloat16, last dim contiguous
  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0;

  SparseTokenSource main;   // required
  SparseTokenSource extra;  // optional: present when any of its pointers is set (then all
                            // of k_cache and indices must be)

  const float* attn_sink = nullptr;  // optional [h_q] float32

  void* out = nullptr;  // [b, s_q, h_q, d_v] bfloat16, last dim contiguous
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  float* lse = nullptr;                               // [b, h_q, s_q] float32
  int64_t lse_batch_stride = 0, lse_head_stride = 0;  // the s_q dimension is contiguous

  // The plan from plan_sparse_decode() (num_parts must match sparse_decode_num_parts()).
  // Any plan of the right size gives the right answer; a plan made for other top-k lengths
  // only balances worse.
  const int32_t* tile_scheduler_metadata = nullptr;  // [num_parts, kDecodeMetadataInts]
  const int32_t* num_splits = nullptr;               // [b + 1]
  int num_parts = 0;

  void* workspace = nullptr;  // at least sparse_decode_workspace_bytes() bytes
  size_t workspace_bytes = 0;
};

size_t sparse_decode_workspace_bytes(const SparseDecodeParams& params);

// Checks every argument that can be checked without reading device memory; throws
// flashmla::Error naming the argument otherwise. Needs no GPU.
void validate_sparse_decode(const SparseDecodeParams& params);

// Validates, checks the current device, launches the sparse split-KV kernel and the combine
// kernel on `stream`. Asynchronous; safe to capture in a CUDA graph.
void sparse_decode(const SparseDecodeParams& params, cudaStream_t stream);

}  // namespace flashmla
