// flash_mla::get_decode_metadata: tensor checks, then flashmla::plan_decode on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>

#include "flashmla/decode_schedule.h"
#include "ops.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {

std::tuple<at::Tensor, at::Tensor> get_decode_metadata(const at::Tensor& cache_seqlens,
                                                       int64_t rows_per_kv_head,
                                                       int64_t num_heads_kv,
                                                       int64_t page_block_size, int64_t num_sms) {
  constexpr const char* kOp = "get_mla_metadata";
  check_cuda(cache_seqlens, kOp, "cache_seqlens");
  check_dtype(cache_seqlens, kOp, "cache_seqlens", at::kInt);
  check_dim(cache_seqlens, kOp, "cache_seqlens", 1, "[batch]");
  check_contiguous(cache_seqlens, kOp, "cache_seqlens");
  if (rows_per_kv_head <= 0)
    fail(kOp, "num_q_tokens_per_head_k", "must be positive, got ", rows_per_kv_head);
  if (num_heads_kv <= 0) fail(kOp, "num_heads_k", "must be positive, got ", num_heads_kv);
  if (page_block_size <= 0) fail(kOp, "page_block_size", "must be positive, got ", page_block_size);
  if (num_sms < 0) fail(kOp, "num_sms", "must be >= 0 (0 = all SMs of the device), got ", num_sms);

  DecodeScheduleShape shape;
  shape.batch = to_int(cache_seqlens.size(0), kOp, "cache_seqlens");
  shape.rows_per_kv_head = to_int(rows_per_kv_head, kOp, "num_q_tokens_per_head_k");
  shape.num_heads_kv = to_int(num_heads_kv, kOp, "num_heads_k");
  shape.num_sms = to_int(num_sms, kOp, "num_sms");
  const int page = to_int(page_block_size, kOp, "page_block_size");

  // num_sms == 0 resolves to the SMs of the current device, which the guard makes
  // cache_seqlens' device.
  const c10::cuda::CUDAGuard device_guard(cache_seqlens.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(cache_seqlens.get_device()).stream();

  const int num_parts = translate_errors(kOp, [&] { return decode_num_parts(shape); });
  const at::TensorOptions options = cache_seqlens.options().dtype(at::kInt);
  at::Tensor tile_scheduler_metadata = at::empty({num_parts, kDecodeMetadataInts}, options);
  at::Tensor num_splits = at::empty({static_cast<int64_t>(shape.batch) + 1}, options);
  translate_errors(kOp, [&] {
    plan_decode(shape, cache_seqlens.data_ptr<int32_t>(), page,
                tile_scheduler_metadata.data_ptr<int32_t>(), num_splits.data_ptr<int32_t>(),
                stream);
  });
  return {tile_scheduler_metadata, num_splits};
}

}  // namespace flashmla::torch_binding
