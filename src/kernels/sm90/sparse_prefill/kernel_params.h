// What the sparse-prefill kernel reads: flashmla::SparsePrefillParams resolved into
// device-facing form (typed pointers, log2-scaled softmax scale, the grid's head blocks).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

namespace flashmla::sm90 {

struct SparsePrefillKernelParams {
  int seqlen_q;         // s_q
  int num_heads_q;      // h_q
  int num_head_blocks;  // ceil(h_q / 64): work items per query token
  int64_t num_items;    // s_q * num_head_blocks
  int num_ctas;         // the persistent grid: min(num_items, SMs rounded down to even)
  int topk;
  float scale_log2;  // softmax_scale * log2(e)

  const __nv_bfloat16* q;  // [s_q, h_q, d_qk]
  int64_t q_seq_stride, q_head_stride;
  const __nv_bfloat16* kv;  // [s_kv, d_qk]
  int64_t kv_token_stride;
  int num_kv_tokens;       // s_kv: valid indices are [0, s_kv)
  const int32_t* indices;  // [s_q, topk]
  int64_t indices_seq_stride;
  const int32_t* topk_length;  // [s_q] or null
  const float* attn_sink;      // [h_q] or null

  __nv_bfloat16* out;  // [s_q, h_q, d_v]
  int64_t out_seq_stride, out_head_stride;
  float* max_logits;  // [s_q, h_q]
  int64_t max_logits_seq_stride;
  float* lse;  // [s_q, h_q]
  int64_t lse_seq_stride;
};

}  // namespace flashmla::sm90
