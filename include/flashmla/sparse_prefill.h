// Sparse MLA prefill (DeepSeek Sparse Attention, spec section 3): every query token attends to
// its own top-k tokens of one bfloat16 latent KV sequence, named by index. No batch dimension:
// callers concatenate sequences and offset the indices.
//
// For query token s and head h:
//   len = min(topk, topk_length[s]) (topk when topk_length is null),
//   tokens T = { indices[s, j] : j < len, 0 <= indices[s, j] < num_kv_tokens },
//   logits l_t = softmax_scale * q[s, h, :] . kv[t, :] (all head_dim_qk columns),
//   max_logits = max_t l_t, lse = log sum_t exp(l_t) (natural log, float32),
//   out = sum_t softmax(l)_t V_t (V_t = first head_dim_v columns of kv[t]),
//   and with attn_sink: out *= exp(lse) / (exp(lse) + exp(attn_sink[h])) (lse unchanged).
// No valid token: out = 0, max_logits = -inf, lse = +inf. An index that is not valid is
// skipped and its row is never read; a token listed twice counts twice.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"

namespace flashmla {

// All strides are in elements. Pointers are device pointers.
struct SparsePrefillParams {
  int seqlen_q = 0;     // s_q (any value >= 1; no grid-dimension limit)
  int num_heads_q = 0;  // h_q, 1..128 (h_kv is 1)
  int head_dim_qk = 0;  // 576 (V3.2) or 512 (MODEL1)
  int head_dim_v = 0;   // 512
  float softmax_scale = 0.f;

  const void* q = nullptr;  // [s_q, h_q, d_qk] bfloat16, last dim contiguous
  int64_t q_seq_stride = 0, q_head_stride = 0;

  const void* kv = nullptr;   // [s_kv, d_qk] bfloat16 (h_kv = 1), last dim contiguous
  int64_t num_kv_tokens = 0;  // s_kv (>= 1)
  int64_t kv_token_stride = 0;

  const int32_t* indices = nullptr;  // [s_q, topk] int32, last dim contiguous
  int64_t indices_seq_stride = 0;
  int topk = 0;                          // >= 1
  const int32_t* topk_length = nullptr;  // optional [s_q] int32

  const float* attn_sink = nullptr;  // optional [h_q] float32

  void* out = nullptr;  // [s_q, h_q, d_v] bfloat16, last dim contiguous
  int64_t out_seq_stride = 0, out_head_stride = 0;
  float* max_logits = nullptr;  // [s_q, h_q] float32, head dim contiguous
  int64_t max_logits_seq_stride = 0;
  float* lse = nullptr;  // [s_q, h_q] float32, head dim contiguous
  int64_t lse_seq_stride = 0;
};

// Checks every argument that can be checked without reading device memory; throws
// flashmla::Error naming the argument otherwise. Needs no GPU.
void validate_sparse_prefill(const SparsePrefillParams& params);

// Validates, checks the current device and launches the sparse prefill kernel on `stream`
// (one kernel, no workspace). Asynchronous; safe to capture in a CUDA graph.
void sparse_prefill(const SparsePrefillParams& params, cudaStream_t stream);

}  // namespace flashmla
