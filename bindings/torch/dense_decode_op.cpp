// flash_mla::dense_decode_fwd: tensor checks -> flashmla::DenseDecodeParams ->
// flashmla::dense_decode. Shapes and layouts are checked here (the params struct cannot express a
// mismatch between two tensors); values such as head dims, head ratios and page sizes are checked
// by the C++ core, whose errors are translated with the argument they name.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>

#include "flashmla/dense_decode.h"
#include "ops.h"
#include "decode_op_common.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {
namespace {

constexpr const char* kOp = "flash_mla_with_kvcache";

void check_inputs(const at::Tensor& q, const at::Tensor& k_cache,
                  const std::optional<at::Tensor>& block_table, const at::Tensor& cache_seqlens,
                  int64_t head_dim_v, const at::Tensor& tile_scheduler_metadata,
                  const at::Tensor& num_splits) {
  check_cuda(q, kOp, "q");
  const c10::Device device = q.device();
  check_same_device(k_cache, kOp, "k_cache", device);
  if (block_table) check_same_device(*block_table, kOp, "block_table", device);
  check_same_device(cache_seqlens, kOp, "cache_seqlens", device);
  check_same_device(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", device);
  check_same_device(num_splits, kOp, "num_splits", device);

  if (q.scalar_type() != at::kBFloat16 && q.scalar_type() != at::kHalf) {
    fail(kOp, "q", "must have dtype bfloat16 or float16, got ", dtype_name(q.scalar_type()));
  }
  if (k_cache.scalar_type() != q.scalar_type()) {
    fail(kOp, "k_cache", "must have the same dtype as q (", dtype_name(q.scalar_type()), "), got ",
         dtype_name(k_cache.scalar_type()));
  }
  if (block_table) check_dtype(*block_table, kOp, "block_table", at::kInt);
  check_dtype(cache_seqlens, kOp, "cache_seqlens", at::kInt);
  check_dtype(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", at::kInt);
  check_dtype(num_splits, kOp, "num_splits", at::kInt);

  check_dim(q, kOp, "q", 4, "[batch, seqlen_q, num_heads_q, head_dim]");
  if (block_table) {
    check_dim(k_cache, kOp, "k_cache", 4, "[num_blocks, page_block_size, num_heads_kv, head_dim]");
    check_dim(*block_table, kOp, "block_table", 2, "[batch, max_blocks_per_seq]");
  } else {
    check_dim(k_cache, kOp, "k_cache", 4,
              "[batch, seqlen_k, num_heads_kv, head_dim] (a non-paged cache: block_table is None)");
  }
  check_dim(cache_seqlens, kOp, "cache_seqlens", 1, "[batch]");
  check_dim(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", 2,
            "[num_parts, metadata_ints] (from get_mla_metadata)");
  check_dim(num_splits, kOp, "num_splits", 1, "[batch + 1] (from get_mla_metadata)");

  const int64_t batch = q.size(0);
  check_size(k_cache, kOp, "k_cache", 3, q.size(3), "the head_dim of q");
  if (block_table) {
    check_size(*block_table, kOp, "block_table", 0, batch, "the batch size of q");
  } else {
    check_size(k_cache, kOp, "k_cache", 0, batch,
               "the batch size of q (a non-paged cache: block_table is None)");
  }
  check_size(cache_seqlens, kOp, "cache_seqlens", 0, batch, "the batch size of q");
  check_size(tile_scheduler_metadata, kOp, "tile_scheduler_metadata", 1, kDecodeMetadataInts,
             "ints per part of the plan");
  check_size(num_splits, kOp, "num_splits", 0, batch + 1, "batch size of q + 1");
  if (head_dim_v <= 0 || head_dim_v > q.size(3)) {
    fail(kOp, "head_dim_v", "must be in [1, head_dim of q = ", q.size(3),
         "] (V is the first head_dim_v columns of each K row), got ", head_dim_v);
  }

  check_last_dim_contiguous(q, kOp, "q");
  check_last_dim_contiguous(k_cache, kOp, "k_cache");
  if (block_table) check_last_dim_contiguous(*block_table, kOp, "block_table");
  check_contiguous(cache_seqlens, kOp, "cache_seqlens");
  check_contiguous(tile_scheduler_metadata, kOp, "tile_scheduler_metadata");
  check_contiguous(num_splits, kOp, "num_splits");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> dense_decode_fwd(
    const at::Tensor& q, const at::Tensor& k_cache, const std::optional<at::Tensor>& block_table,
    const at::Tensor& cache_seqlens, int64_t head_dim_v, const at::Tensor& tile_scheduler_metadata,
    const at::Tensor& num_splits, double softmax_scale, bool causal) {
  check_inputs(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
               num_splits);
  const c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();

  DenseDecodeParams params;
  params.dtype = q.scalar_type() == at::kBFloat16 ? ScalarType::kBFloat16 : ScalarType::kFloat16;
  params.batch = to_int(q.size(0), kOp, "q");
  params.seqlen_q = to_int(q.size(1), kOp, "q");
  params.num_heads_q = to_int(q.size(2), kOp, "q");
  params.num_heads_kv = to_int(k_cache.size(2), kOp, "k_cache");
  params.head_dim_qk = to_int(q.size(3), kOp, "q");
  params.head_dim_v = to_int(head_dim_v, kOp, "head_dim_v");
  params.page_block_size = to_int(k_cache.size(1), kOp, "k_cache");
  params.num_blocks = to_int(k_cache.size(0), kOp, "k_cache");
  params.max_blocks_per_seq = block_table ? to_int(block_table->size(1), kOp, "block_table") : 1;
  params.softmax_scale = static_cast<float>(softmax_scale);
  params.causal = causal;

  params.q = q.data_ptr();
  params.q_batch_stride = layout_stride(q, 0);
  params.q_seq_stride = layout_stride(q, 1);
  params.q_head_stride = layout_stride(q, 2);

  params.k_cache = k_cache.data_ptr();
  params.k_block_stride = layout_stride(k_cache, 0);
  params.k_token_stride = layout_stride(k_cache, 1);
  params.k_head_stride = layout_stride(k_cache, 2);

  if (block_table) {
    params.block_table = block_table->data_ptr<int32_t>();
    params.block_table_batch_stride = layout_stride(*block_table, 0);
  }
  params.cache_seqlens = cache_seqlens.data_ptr<int32_t>();

  return run_decode(
      params, kOp, q, head_dim_v, tile_scheduler_metadata, num_splits,
      [](const auto& p) { return dense_decode_workspace_bytes(p); },
      [&](const auto& p) { dense_decode(p, stream); });
}

}  // namespace flashmla::torch_binding
