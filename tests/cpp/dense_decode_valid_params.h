// Valid DenseDecodeParams with fake (never dereferenced) but aligned pointers, shared by the
// validation tests of dense decoding: validate_dense_decode never reads device memory.
#pragma once

#include <cstdint>

#include "flashmla/dense_decode.h"
#include "validation_helpers.h"

namespace flashmla::testing {

// Dense strides for the given shapes.
inline void set_dense_strides(DenseDecodeParams& p) {
  p.q_head_stride = p.head_dim_qk;
  p.q_seq_stride = int64_t(p.num_heads_q) * p.q_head_stride;
  p.q_batch_stride = int64_t(p.seqlen_q) * p.q_seq_stride;
  p.k_head_stride = p.head_dim_qk;
  p.k_token_stride = int64_t(p.num_heads_kv) * p.k_head_stride;
  p.k_block_stride = int64_t(p.page_block_size) * p.k_token_stride;
  p.block_table_batch_stride = p.max_blocks_per_seq;
  p.out_head_stride = p.head_dim_v;
  p.out_seq_stride = int64_t(p.num_heads_q) * p.out_head_stride;
  p.out_batch_stride = int64_t(p.seqlen_q) * p.out_seq_stride;
  p.lse_head_stride = p.seqlen_q;
  p.lse_batch_stride = int64_t(p.num_heads_q) * p.lse_head_stride;
}

// b = 4, s_q = 2 (causal), h_q = 16, h_kv = 1, d_qk = 576, page 64, 100 pages, 32 columns.
inline DenseDecodeParams valid_dense_decode_params() {
  DenseDecodeParams p;
  p.dtype = ScalarType::kBFloat16;
  p.batch = 4;
  p.seqlen_q = 2;
  p.num_heads_q = 16;
  p.num_heads_kv = 1;
  p.head_dim_qk = 576;
  p.head_dim_v = 512;
  p.page_block_size = 64;
  p.num_blocks = 100;
  p.max_blocks_per_seq = 32;
  p.softmax_scale = 1.f / 24.f;
  p.causal = true;
  p.q = fake_pointer<const void>(0x7f0000000000);
  p.k_cache = fake_pointer<const void>(0x7f1000000000);
  p.block_table = fake_pointer<const int32_t>(0x7f2000000000);
  p.cache_seqlens = fake_pointer<const int32_t>(0x7f2000100000);
  p.out = fake_pointer<void>(0x7f3000000000);
  p.lse = fake_pointer<float>(0x7f3000100000);
  p.tile_scheduler_metadata = fake_pointer<const int32_t>(0x7f4000000000);
  p.num_splits = fake_pointer<const int32_t>(0x7f4000100000);
  p.num_parts = 66;
  p.workspace = fake_pointer<void>(0x7f5000000000);
  set_dense_strides(p);
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  return p;
}

// The same shapes over a non-paged cache of `s_k_max` tokens per sequence: block_table null,
// k_cache [batch, s_k_max, h_kv, d_qk], num_blocks = batch, max_blocks_per_seq = 1.
inline DenseDecodeParams valid_non_paged_dense_decode_params(int s_k_max) {
  DenseDecodeParams p = valid_dense_decode_params();
  p.block_table = nullptr;
  p.page_block_size = s_k_max;
  p.num_blocks = p.batch;
  p.max_blocks_per_seq = 1;
  set_dense_strides(p);
  p.block_table_batch_stride = 0;  // ignored without a table
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  return p;
}

}  // namespace flashmla::testing
