// The PyTorch operators of the flash_mla library (namespace torch.ops.flash_mla). Schemas and
// registration live in ops.cpp; fake (meta) implementations in python/flash_mla/_ops.py.
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace flashmla::torch_binding {

// flash_mla::get_decode_metadata: the split-KV plan of a decode batch, computed on the GPU on
// the current stream (no host synchronisation; safe to capture in a CUDA graph).
//   cache_seqlens: [batch] int32, CUDA
//   num_sms: SMs to balance over; 0 = all SMs of cache_seqlens' device
// Returns tile_scheduler_metadata [num_parts, kDecodeMetadataInts] int32 and
// num_splits [batch + 1] int32.
std::tuple<at::Tensor, at::Tensor> get_decode_metadata(const at::Tensor& cache_seqlens,
                                                       int64_t rows_per_kv_head,
                                                       int64_t num_heads_kv,
                                                       int64_t page_block_size, int64_t num_sms);

// flash_mla::dense_decode_fwd: dense MLA decoding over a paged KV cache (spec section 1).
// Returns out [b, s_q, h_q, head_dim_v] (dtype of q) and lse [b, h_q, s_q] float32.
std::tuple<at::Tensor, at::Tensor> dense_decode_fwd(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& block_table,
    const at::Tensor& cache_seqlens, int64_t head_dim_v, const at::Tensor& tile_scheduler_metadata,
    const at::Tensor& num_splits, double softmax_scale, bool causal);

}  // namespace flashmla::torch_binding
