// What the sparse-decode kernels read: the public params resolved into device-facing form.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/common/fast_divisor.h"

namespace flashmla::sm90 {

// One cache and its index lists (main or extra).
struct SparseTokenList {
  const uint8_t* k_cache;  // page blocks in the kernel's format
  int64_t block_stride;    // bytes
  int64_t token_stride;    // bytes (BF16 and FP8 V3.2 layouts)
  FastDivisor page_block_size;
  int64_t scale_rows_offset;  // MODEL1: bytes from a block's start to its scale rows
  // min(num_blocks * page_block_size, 2^31): valid indices (int32) are [0, num_tokens).
  uint32_t num_tokens;
  const int32_t* indices;  // [b, s_q, topk]
  int64_t indices_batch_stride, indices_seq_stride;
  int topk;
  const int32_t* topk_length;  // [b] or null
};

struct SparseDecodeKernelParams {
  int batch;
  int seqlen_q;     // s_q
  int num_heads_q;  // h_q
  // The epilogue's row space (shared with dense decode): one KV head whose rows are
  // s * h_q + head.
  int num_heads_kv;  // 1
  int heads_per_kv;  // h_q
  int rows_per_kv;   // s_q * h_q
  float scale_log2;  // softmax_scale * log2(e)

  const void* q;  // [b, s_q, h_q, d_qk] bf16
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  // The 64-head kernels' Q tiles by TMA, with the q_map the launch gets (api/q_tile_map.h),
  // where q suits a tensor map; otherwise (and in the few-heads kernels) cp.async copies. (The
  // map as a member of this struct made the sparse b 2 row 3% slower, the kernels unchanged.)
  bool q_by_tma;

  SparseTokenList main;
  SparseTokenList extra;   // extra.topk == 0: no extra list
  const float* attn_sink;  // [h_q] or null

  void* out;  // [b, s_q, h_q, d_v] bf16
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float* lse;  // [b, h_q, s_q]
  int64_t lse_batch_stride, lse_head_stride;

  const DecodePartRange* parts;  // [num_parts]
  const int32_t* num_splits;     // [b + 1] prefix sums
  float* o_accum;                // [splits, 1, s_q * h_q, d_v]
  float* lse_accum;              // [splits, 1, s_q * h_q]
};

}  // namespace flashmla::sm90
