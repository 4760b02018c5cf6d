// What the dense-decode kernels read: the public params resolved into device-facing form.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"

namespace flashmla::sm90 {

struct DenseDecodeKernelParams {
  int batch;
  int seqlen_q;      // s_q
  int num_heads_kv;  // h_kv
  int heads_per_kv;  // g = h_q / h_kv
  int rows_per_kv;   // s_q * g: query rows sharing one KV head (row r = s * g + head)
  int page_block_size;
  int max_blocks_per_seq;
  bool causal;
  float scale_log2;  // softmax_scale * log2(e)

  const void* q;  // [b, s_q, h_q, d_qk]
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  const int32_t* block_table;  // [b, max_blocks_per_seq]
  int64_t block_table_batch_stride;
  const int32_t* cache_seqlens;  // [b]

  void* out;  // [b, s_q, h_q, d_v]
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float* lse;  // [b, h_q, s_q]
  int64_t lse_batch_stride, lse_head_stride;

  const DecodePartRange* parts;  // [num_parts]
  const int32_t* num_splits;     // [b + 1] prefix sums
  float* o_accum;                // [splits, h_kv, rows_per_kv, d_v]
  float* lse_accum;              // [splits, h_kv, rows_per_kv]
};

}  // namespace flashmla::sm90
