// Merges split-KV partial results (normalised fp32 outputs + log-sum-exps) into the final
// output for every sequence that was split; sequences with one split were written directly.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"

namespace flashmla::kernels {

struct CombineParams {
  int batch;
  int seqlen_q;
  int num_heads_kv;
  int heads_per_kv;
  int rows_per_kv;            // s_q * heads_per_kv
  int head_dim_v;             // 512
  const int32_t* num_splits;  // [b + 1] prefix sums
  int num_parts;              // of the plan: sizes the kernel to the splits a sequence has
  const float* o_accum;       // [splits, h_kv, rows_per_kv, d_v]
  const float* lse_accum;     // [splits, h_kv, rows_per_kv]
  void* out;                  // [b, s_q, h_q, d_v]
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float* lse;  // [b, h_q, s_q]
  int64_t lse_batch_stride, lse_head_stride;
  // Optional [h_q]: out *= exp(lse) / (exp(lse) + exp(attn_sink[head])), lse unchanged.
  const float* attn_sink = nullptr;
};

void launch_combine(const CombineParams& params, ScalarType dtype, cudaStream_t stream);

}  // namespace flashmla::kernels
