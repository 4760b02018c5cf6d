// The PyTorch operators of the flash_mla library (namespace torch.ops.flash_mla). Schemas and
// registration live in ops.cpp (dense decode) and in the fragment at the end of each other
// operator's file; fake (meta) implementations in python/flash_mla/_ops*.py.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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

// flash_mla::dense_decode_fwd: dense MLA decoding over a paged KV cache (spec section 1), or a
// non-paged one [b, s_k, h_kv, d] when block_table is None.
// Returns out [b, s_q, h_q, head_dim_v] (dtype of q) and lse [b, h_q, s_q] float32.
std::tuple<at::Tensor, at::Tensor> dense_decode_fwd(
    const at::Tensor& q, const at::Tensor& k_cache, const std::optional<at::Tensor>& block_table,
    const at::Tensor& cache_seqlens, int64_t head_dim_v, const at::Tensor& tile_scheduler_metadata,
    const at::Tensor& num_splits, double softmax_scale, bool causal);

// The device error record of CUDA device `device` (flashmla/device_errors.h), read after the
// work queued on the current stream: (kind, operation, batch_index, position, value, limit,
// message); kind 0 = no error. `clear` resets it.
std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, std::string> read_error_record(
    int64_t device, bool clear);
void clear_error_record(int64_t device);

// flash_mla::get_sparse_decode_metadata: the split-KV plan of a sparse decode batch
// (flashmla::plan_sparse_decode), computed on the GPU on the current stream.
//   batch_ref: any CUDA tensor whose dimension 0 is the batch size (get_mla_metadata passes
//     cache_seqlens, flash_mla_with_kvcache passes q); only its size and device are used
//   topk_length, extra_topk_length: optional [batch] int32, CUDA; the plan balances these
//     lengths (any plan of the right size gives the right answer, see sparse_decode.h)
//   extra_topk: columns of the extra index set, 0 = no extra cache (then extra_topk_length must
//     be absent); num_sms: 0 = all SMs of batch_ref's device
// Returns tile_scheduler_metadata [sparse_decode_num_parts, kDecodeMetadataInts] int32 and
// num_splits [batch + 1] int32.
std::tuple<at::Tensor, at::Tensor> get_sparse_decode_metadata(
    const at::Tensor& batch_ref, int64_t seqlen_q, int64_t num_heads_q, int64_t topk,
    const std::optional<at::Tensor>& topk_length, int64_t extra_topk,
    const std::optional<at::Tensor>& extra_topk_length, int64_t num_sms);

// flash_mla::sparse_decode_fwd: sparse MLA decoding (spec section 2, flashmla/sparse_decode.h).
//   q [b, s_q, h_q, d_qk] bfloat16; k_cache [num_blocks, page_block_size, 1, row] in the format
//   is_fp8_kvcache and d_qk select: FP8 V3.2 (d_qk 576, row 656 bytes), FP8 MODEL1 (d_qk 512,
//   row 584 bytes: a view of whole page blocks), bfloat16 (row d_qk); FP8 caches as
//   float8_e4m3fn or uint8. indices [b, s_q, topk] int32, topk_length [b] int32, attn_sink [h_q]
//   float32, extra_* the same for the optional second cache (same format, its own page size).
// Returns out [b, s_q, h_q, head_dim_v] bfloat16 and lse [b, h_q, s_q] float32.
std::tuple<at::Tensor, at::Tensor> sparse_decode_fwd(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& indices,
    const std::optional<at::Tensor>& topk_length, const std::optional<at::Tensor>& attn_sink,
    const at::Tensor& tile_scheduler_metadata, const at::Tensor& num_splits,
    const std::optional<at::Tensor>& extra_k_cache, const std::optional<at::Tensor>& extra_indices,
    const std::optional<at::Tensor>& extra_topk_length, int64_t head_dim_v, double softmax_scale,
    bool is_fp8_kvcache);

// flash_mla::sparse_prefill_fwd: sparse MLA prefill (spec section 3, flashmla/sparse_prefill.h).
//   q [s_q, h_q, d_qk] bfloat16 (d_qk 576 or 512, h_q 1..128), kv [s_kv, 1, d_qk] bfloat16,
//   indices [s_q, 1, topk] int32 (all with the last dimension contiguous), d_v 512,
//   attn_sink [h_q] float32 and topk_length [s_q] int32 optional (contiguous); all on one CUDA
//   device. Entries < 0, >= s_kv or at positions >= topk_length[s] are skipped.
// Returns out [s_q, h_q, d_v] bfloat16, max_logits [s_q, h_q] float32 (-inf where no entry is
// valid) and lse [s_q, h_q] float32 (+inf where no entry is valid), all contiguous. s_q = 0
// returns empty tensors without launching anything.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_prefill_fwd(
    const at::Tensor& q, const at::Tensor& kv, const at::Tensor& indices, double sm_scale,
    int64_t d_v, const std::optional<at::Tensor>& attn_sink,
    const std::optional<at::Tensor>& topk_length);

}  // namespace flashmla::torch_binding
