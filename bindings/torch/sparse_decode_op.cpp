// flash_mla::get_sparse_decode_metadata and flash_mla::sparse_decode_fwd (spec section 2): tensor
// checks -> flashmla::SparseDecodeParams -> flashmla::sparse_decode, and the sparse planner.
// Shapes, dtypes and layouts are checked here (the params struct cannot express a mismatch
// between two tensors); values such as head dims, page sizes and strides are checked by the C++
// core, whose errors are translated with the argument they name.
//
// The schemas are registered here (a fragment of the flash_mla library defined in ops.cpp); their
// fake implementations live in python/flash_mla/_ops_sparse.py (named by set_python_module).
#include <algorithm>
#include <optional>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/sparse_decode.h"
#include "ops.h"
#include "decode_op_common.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {
namespace {

constexpr const char* kOp = "flash_mla_with_kvcache";
constexpr const char* kPlanOp = "get_mla_metadata";

// An optional [batch] int32 length array (topk_length, extra_topk_length).
void check_lengths(const at::Tensor& t, const char* op, const char* arg, const at::Tensor& ref,
                   const char* ref_name, const char* batch_source) {
  check_cuda(t, op, arg);
  if (t.device() != ref.device()) {
    fail(op, arg, "must be on the same device as ", ref_name, " (", ref.device().str(), "), got ",
         t.device().str());
  }
  const int64_t batch = ref.size(0);
  check_dtype(t, op, arg, at::kInt);
  check_dim(t, op, arg, 1, "[batch]");
  check_size(t, op, arg, 0, batch, batch_source);
  check_contiguous(t, op, arg);
}

// The cache format the arguments select (spec section 2).
KVCacheFormat select_format(const at::Tensor& q, bool is_fp8_kvcache) {
  if (!is_fp8_kvcache) return KVCacheFormat::kBFloat16;
  const int64_t d_qk = q.size(3);
  if (d_qk == kFp8V32HeadDim) return KVCacheFormat::kFp8V32;
  if (d_qk == kFp8Model1HeadDim) return KVCacheFormat::kFp8Model1;
  fail(kOp, "q",
       "must have head_dim 576 (FP8 V3.2 cache, 656 bytes a token) or 512 (FP8 MODEL1 cache, 584 "
       "bytes a token) when is_fp8_kvcache is True, got head_dim ",
       d_qk);
}

void check_cache(const at::Tensor& cache, const char* arg, KVCacheFormat format, int64_t d_qk,
                 const c10::Device& device) {
  check_same_device(cache, kOp, arg, device);
  if (format == KVCacheFormat::kBFloat16) {
    if (cache.scalar_type() != at::kBFloat16) {
      fail(kOp, arg,
           "must have dtype bfloat16 when is_fp8_kvcache is False (a plain bfloat16 cache), got ",
           dtype_name(cache.scalar_type()));
    }
  } else if (cache.scalar_type() != at::kFloat8_e4m3fn && cache.scalar_type() != at::kByte) {
    fail(kOp, arg,
         "must have dtype float8_e4m3fn or uint8 (the bytes of an FP8 cache) when is_fp8_kvcache "
         "is True, got ",
         dtype_name(cache.scalar_type()));
  }
  const bool fp8 = format != KVCacheFormat::kBFloat16;
  check_dim(cache, kOp, arg, 4,
            fp8 ? "[num_blocks, page_block_size, num_heads_k = 1, bytes per token]"
                : "[num_blocks, page_block_size, num_heads_k = 1, head_dim]");
  if (cache.size(0) < 1 || cache.size(1) < 1) {
    fail(kOp, arg, "must hold at least one page block of at least one token, got shape ",
         cache.sizes());
  }
  if (cache.size(2) != 1) {
    fail(kOp, arg, "must have num_heads_k = 1 (dimension 2) for sparse decoding, got shape ",
         cache.sizes());
  }
  switch (format) {
    case KVCacheFormat::kFp8V32:
      check_size(cache, kOp, arg, 3, kFp8V32TokenBytes,
                 "bytes a token in the FP8 V3.2 layout of head_dim 576");
      break;
    case KVCacheFormat::kFp8Model1:
      check_size(cache, kOp, arg, 3, kFp8Model1RowBytes + kFp8Model1ScaleRowBytes,
                 "bytes a token in the FP8 MODEL1 layout of head_dim 512: 576 data + 8 scale");
      break;
    case KVCacheFormat::kBFloat16:
      check_size(cache, kOp, arg, 3, d_qk, "the head_dim of q");
      break;
  }
  check_last_dim_contiguous(cache, kOp, arg);
  if (format == KVCacheFormat::kFp8Model1) {
    // A MODEL1 block is page_block_size data rows followed by page_block_size scale rows; the
    // tensor is a [num_blocks, page_block_size, 1, 584] view over each block's first
    // page_block_size * 584 bytes, as FlashMLA's quantizer returns it.
    if (cache.size(1) > 1 && cache.stride(1) != kFp8Model1RowBytes + kFp8Model1ScaleRowBytes) {
      fail(kOp, arg,
           "must be the [num_blocks, page_block_size, 1, 584] view of whole MODEL1 page blocks "
           "(stride 584 in dimension 1), got strides ",
           cache.strides());
    }
    const int64_t min_block =
        kv_cache_min_block_bytes(format, static_cast<int>(cache.size(1)), kFp8Model1HeadDim);
    if (cache.size(0) > 1 && cache.stride(0) < min_block) {
      fail(kOp, arg, "must have a block stride (stride 0) of at least ", min_block,
           " bytes for page_block_size ", cache.size(1),
           " (data rows of 576 bytes, then scale rows of 8, padded to a multiple of 576), got "
           "strides ",
           cache.strides());
    }
  }
}

void check_indices(const at::Tensor& indices, const char* arg, const at::Tensor& q) {
  check_same_device(indices, kOp, arg, q.device());
  check_dtype(indices, kOp, arg, at::kInt);
  check_dim(indices, kOp, arg, 3, "[batch, seqlen_q, topk]");
  check_size(indices, kOp, arg, 0, q.size(0), "the batch size of q");
  check_size(indices, kOp, arg, 1, q.size(1), "the seqlen_q of q");
  if (indices.size(2) < 1) {
    fail(kOp, arg, "must have at least one column (topk >= 1), got shape ", indices.sizes());
  }
  check_last_dim_contiguous(indices, kOp, arg);
}

// Fills one token source from a cache that check_cache accepted and its index list.
SparseTokenSource make_source(const at::Tensor& cache, const char* cache_arg,
                              const at::Tensor& indices, const char* indices_arg,
                              const std::optional<at::Tensor>& topk_length, KVCacheFormat format,
                              int d_qk) {
  SparseTokenSource s;
  s.k_cache = cache.data_ptr();
  s.num_blocks = to_int(cache.size(0), kOp, cache_arg);
  s.page_block_size = to_int(cache.size(1), kOp, cache_arg);
  const int64_t element_bytes = static_cast<int64_t>(cache.element_size());
  // Strides in bytes. A dimension of size 1 is never stepped over: report the densest layout
  // there (layout_stride of a single MODEL1 block would undercount its scale rows and padding).
  s.token_stride = format == KVCacheFormat::kFp8Model1 ? kFp8Model1RowBytes
                                                       : layout_stride(cache, 1) * element_bytes;
  s.block_stride =
      cache.size(0) == 1
          ? std::max<int64_t>(layout_stride(cache, 0) * element_bytes,
                              kv_cache_min_block_bytes(format, s.page_block_size, d_qk))
          : cache.stride(0) * element_bytes;
  s.indices = indices.data_ptr<int32_t>();
  s.indices_batch_stride = layout_stride(indices, 0);
  s.indices_seq_stride = layout_stride(indices, 1);
  s.topk = to_int(indices.size(2), kOp, indices_arg);
  s.topk_length = topk_length.has_value() ? topk_length->data_ptr<int32_t>() : nullptr;
  return s;
}

void check_plan(const at::Tensor& tile_scheduler_metadata, const at::Tensor& num_splits,
                const c10::Device& device, int64_t batch) {
  check_same_device(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", device);
  check_same_device(num_splits, kOp, "num_splits", device);
  check_dtype(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", at::kInt);
  check_dtype(num_splits, kOp, "num_splits", at::kInt);
  check_dim(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", 2,
            "[num_parts, metadata_ints] (from get_mla_metadata)");
  check_dim(num_splits, kOp, "num_splits", 1, "[batch + 1] (from get_mla_metadata)");
  check_size(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", 1, kDecodeMetadataInts,
             "ints per part of the plan");
  check_size(num_splits, kOp, "num_splits", 0, batch + 1, "batch size of q + 1");
  check_contiguous(tile_scheduler_metadata, kOp, "tile_scheduler_metadata");
  check_contiguous(num_splits, kOp, "num_splits");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> get_sparse_decode_metadata(
    const at::Tensor& batch_ref, int64_t seqlen_q, int64_t num_heads_q, int64_t topk,
    const std::optional<at::Tensor>& topk_length, int64_t extra_topk,
    const std::optional<at::Tensor>& extra_topk_length, int64_t num_sms) {
  check_cuda(batch_ref, kPlanOp, "cache_seqlens");
  if (batch_ref.dim() < 1) {
    fail(kPlanOp, "cache_seqlens",
         "must have at least one dimension (its size 0 is the batch size), got a 0-d tensor");
  }
  const c10::Device device = batch_ref.device();
  const int64_t batch = batch_ref.size(0);
  if (seqlen_q <= 0) fail(kPlanOp, "seqlen_q", "must be positive, got ", seqlen_q);
  if (num_heads_q <= 0) fail(kPlanOp, "num_heads_q", "must be positive, got ", num_heads_q);
  if (topk <= 0) fail(kPlanOp, "topk", "must be positive, got ", topk);
  if (extra_topk < 0) {
    fail(kPlanOp, "extra_topk", "must be >= 0 (0 = no extra cache), got ", extra_topk);
  }
  if (num_sms < 0)
    fail(kPlanOp, "num_sms", "must be >= 0 (0 = all SMs of the device), got ", num_sms);
  if (topk_length.has_value()) {
    check_lengths(*topk_length, kPlanOp, "topk_length", batch_ref, "cache_seqlens",
                  "the batch size");
  }
  if (extra_topk_length.has_value()) {
    if (extra_topk == 0) {
      fail(kPlanOp, "extra_topk_length",
           "needs an extra index set (extra_topk > 0: extra_k_cache and "
           "extra_indices_in_kvcache), got extra_topk 0");
    }
    check_lengths(*extra_topk_length, kPlanOp, "extra_topk_length", batch_ref, "cache_seqlens",
                  "the batch size");
  }

  SparseDecodeScheduleShape shape;
  shape.batch = to_int(batch, kPlanOp, "cache_seqlens");
  shape.seqlen_q = to_int(seqlen_q, kPlanOp, "seqlen_q");
  shape.num_heads_q = to_int(num_heads_q, kPlanOp, "num_heads_q");
  shape.num_sms = to_int(num_sms, kPlanOp, "num_sms");
  const int topk_int = to_int(topk, kPlanOp, "topk");
  const int extra_topk_int = to_int(extra_topk, kPlanOp, "extra_topk");

  // num_sms == 0 resolves to the SMs of the current device, which the guard makes batch_ref's.
  const c10::cuda::CUDAGuard device_guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  const int num_parts = translate_errors(kPlanOp, [&] { return sparse_decode_num_parts(shape); });
  const at::TensorOptions options = batch_ref.options().dtype(at::kInt);
  at::Tensor tile_scheduler_metadata = at::empty({num_parts, kDecodeMetadataInts}, options);
  at::Tensor num_splits = at::empty({batch + 1}, options);
  translate_errors(kPlanOp, [&] {
    plan_sparse_decode(
        shape, topk_int, topk_length.has_value() ? topk_length->data_ptr<int32_t>() : nullptr,
        extra_topk_int,
        extra_topk_length.has_value() ? extra_topk_length->data_ptr<int32_t>() : nullptr,
        tile_scheduler_metadata.data_ptr<int32_t>(), num_splits.data_ptr<int32_t>(), stream);
  });
  return {tile_scheduler_metadata, num_splits};
}

std::tuple<at::Tensor, at::Tensor> sparse_decode_fwd(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& indices,
    const std::optional<at::Tensor>& topk_length, const std::optional<at::Tensor>& attn_sink,
    const at::Tensor& tile_scheduler_metadata, const at::Tensor& num_splits,
    const std::optional<at::Tensor>& extra_k_cache, const std::optional<at::Tensor>& extra_indices,
    const std::optional<at::Tensor>& extra_topk_length, int64_t head_dim_v, double softmax_scale,
    bool is_fp8_kvcache) {
  // q first: every other shape is checked against it.
  check_cuda(q, kOp, "q");
  const c10::Device device = q.device();
  check_dtype(q, kOp, "q", at::kBFloat16);
  check_dim(q, kOp, "q", 4, "[batch, seqlen_q, num_heads_q, head_dim]");
  check_last_dim_contiguous(q, kOp, "q");
  const int64_t batch = q.size(0), seqlen_q = q.size(1), num_heads_q = q.size(2);
  const int64_t d_qk = q.size(3);
  const KVCacheFormat format = select_format(q, is_fp8_kvcache);
  if (head_dim_v <= 0 || head_dim_v > d_qk) {
    fail(kOp, "head_dim_v", "must be in [1, head_dim of q = ", d_qk,
         "] (V is the first head_dim_v columns of each K row), got ", head_dim_v);
  }

  check_cache(k_cache, "k_cache", format, d_qk, device);
  check_indices(indices, "indices", q);
  if (topk_length.has_value()) {
    check_lengths(*topk_length, kOp, "topk_length", q, "q", "the batch size of q");
  }
  if (attn_sink.has_value()) {
    check_same_device(*attn_sink, kOp, "attn_sink", device);
    check_dtype(*attn_sink, kOp, "attn_sink", at::kFloat);
    check_dim(*attn_sink, kOp, "attn_sink", 1, "[num_heads_q]");
    check_size(*attn_sink, kOp, "attn_sink", 0, num_heads_q, "the num_heads_q of q");
    check_contiguous(*attn_sink, kOp, "attn_sink");
  }
  if (extra_k_cache.has_value() != extra_indices.has_value()) {
    if (extra_k_cache.has_value()) {
      fail(kOp, "extra_indices_in_kvcache",
           "must be given with extra_k_cache (the extra tokens to attend to), got None");
    }
    fail(kOp, "extra_k_cache",
         "must be given with extra_indices_in_kvcache (the cache they index), got None");
  }
  if (extra_topk_length.has_value() && !extra_k_cache.has_value()) {
    fail(kOp, "extra_topk_length",
         "needs extra_k_cache and extra_indices_in_kvcache (it limits the extra index set), got "
         "extra_k_cache=None");
  }
  if (extra_k_cache.has_value()) {
    check_cache(*extra_k_cache, "extra_k_cache", format, d_qk, device);
    check_indices(*extra_indices, "extra_indices_in_kvcache", q);
    if (extra_topk_length.has_value()) {
      check_lengths(*extra_topk_length, kOp, "extra_topk_length", q, "q", "the batch size of q");
    }
  }
  check_plan(tile_scheduler_metadata, num_splits, device, batch);

  const c10::cuda::CUDAGuard device_guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  SparseDecodeParams params;
  params.kv_format = format;
  params.batch = to_int(batch, kOp, "q");
  params.seqlen_q = to_int(seqlen_q, kOp, "q");
  params.num_heads_q = to_int(num_heads_q, kOp, "q");
  params.head_dim_qk = to_int(d_qk, kOp, "q");
  params.head_dim_v = to_int(head_dim_v, kOp, "head_dim_v");
  params.softmax_scale = static_cast<float>(softmax_scale);

  params.q = q.data_ptr();
  params.q_batch_stride = layout_stride(q, 0);
  params.q_seq_stride = layout_stride(q, 1);
  params.q_head_stride = layout_stride(q, 2);

  params.main =
      make_source(k_cache, "k_cache", indices, "indices", topk_length, format, params.head_dim_qk);
  if (extra_k_cache.has_value()) {
    params.extra =
        make_source(*extra_k_cache, "extra_k_cache", *extra_indices, "extra_indices_in_kvcache",
                    extra_topk_length, format, params.head_dim_qk);
  }
  params.attn_sink = attn_sink.has_value() ? attn_sink->data_ptr<float>() : nullptr;

  return run_decode(
      params, kOp, q, head_dim_v, tile_scheduler_metadata, num_splits,
      [](const auto& p) { return sparse_decode_workspace_bytes(p); },
      [&](const auto& p) { sparse_decode(p, stream); });
}

}  // namespace flashmla::torch_binding

namespace fb = flashmla::torch_binding;

TORCH_LIBRARY_FRAGMENT(flash_mla, m) {
  // The fake (meta) implementations used by torch.compile are registered by this module.
  // PyTorch checks that register_fake is called from exactly the module named here (not from a
  // module that imports it), so this names _ops_sparse, not flash_mla._ops.
  m.set_python_module("flash_mla._ops_sparse");
  m.def(
      "get_sparse_decode_metadata(Tensor batch_ref, int seqlen_q, int num_heads_q, int topk, "
      "Tensor? topk_length, int extra_topk, Tensor? extra_topk_length, int num_sms) -> "
      "(Tensor tile_scheduler_metadata, Tensor num_splits)");
  m.def(
      "sparse_decode_fwd(Tensor q, Tensor k_cache, Tensor indices, Tensor? topk_length, "
      "Tensor? attn_sink, Tensor tile_scheduler_metadata, Tensor num_splits, "
      "Tensor? extra_k_cache, Tensor? extra_indices, Tensor? extra_topk_length, int head_dim_v, "
      "float softmax_scale, bool is_fp8_kvcache) -> (Tensor out, Tensor lse)");
}

TORCH_LIBRARY_IMPL(flash_mla, CUDA, m) {
  m.impl("get_sparse_decode_metadata", &fb::get_sparse_decode_metadata);
  m.impl("sparse_decode_fwd", &fb::sparse_decode_fwd);
}

// CPU tensors reach the same functions, which reject them with an error naming the argument.
TORCH_LIBRARY_IMPL(flash_mla, CPU, m) {
  m.impl("get_sparse_decode_metadata", &fb::get_sparse_decode_metadata);
  m.impl("sparse_decode_fwd", &fb::sparse_decode_fwd);
}
