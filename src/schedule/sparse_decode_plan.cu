// Split-KV planner of sparse decoding: the GPU kernel (graph-safe, no host sync) and its host
// twin. The walk is the dense planner's (decode_plan_core.h) over each sequence's tiles of
// its main and extra index lists.
#include <algorithm>
#include <string>

#include "api/checks.h"
#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "schedule/decode_plan_core.h"

namespace flashmla {

namespace {

struct SparseLengths {
  int topk;
  const int32_t* topk_length;  // nullable
  int extra_topk;
  const int32_t* extra_topk_length;  // nullable

  FLASHMLA_HOST_DEVICE int tiles(int i) const {
    return detail::sparse_decode_num_tiles(i, topk, topk_length, extra_topk, extra_topk_length);
  }
};

__global__ void plan_sparse_decode_kernel(int batch, SparseLengths lengths, int num_parts,
                                          DecodePartRange* parts, int32_t* num_splits) {
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    detail::plan_decode_core(
        batch, [&](int i) { return lengths.tiles(i); }, num_parts, parts, num_splits);
  }
}

void check_shape(const SparseDecodeScheduleShape& shape, const char* fn) {
  detail::require(shape.batch >= 1, fn, "batch",
                  "must be >= 1, got " + std::to_string(shape.batch));
  detail::require(shape.seqlen_q >= 1, fn, "seqlen_q",
                  "must be >= 1, got " + std::to_string(shape.seqlen_q));
  detail::require(shape.num_heads_q >= 1, fn, "num_heads_q",
                  "must be >= 1, got " + std::to_string(shape.num_heads_q));
  detail::require(shape.num_sms >= 0, fn, "num_sms",
                  "must be >= 0 (0 = the device's), got " + std::to_string(shape.num_sms));
}

void check_lengths(int topk, int extra_topk, const char* fn) {
  detail::require(topk >= 1, fn, "topk", "must be >= 1, got " + std::to_string(topk));
  detail::require(extra_topk >= 0, fn, "extra_topk",
                  "must be >= 0 (0 = no extra cache), got " + std::to_string(extra_topk));
}

}  // namespace

int sparse_decode_num_parts(const SparseDecodeScheduleShape& shape) {
  check_shape(shape, "sparse_decode_num_parts");
  int device = 0;
  const int num_sms =
      shape.num_sms > 0
          ? shape.num_sms
          : (detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice"), device_sm_count(device));
  const int m_blocks = (shape.num_heads_q + kDecodeRowsPerBlock - 1) / kDecodeRowsPerBlock;
  // One CTA per SM: each (m-block, query token) pair gets an equal share of the SMs.
  return std::max(1, num_sms / (m_blocks * shape.seqlen_q));
}

int sparse_decode_max_total_splits(const SparseDecodeScheduleShape& shape) {
  return shape.batch + sparse_decode_num_parts(shape);
}

void plan_sparse_decode(const SparseDecodeScheduleShape& shape, int topk,
                        const int32_t* topk_length, int extra_topk,
                        const int32_t* extra_topk_length, int32_t* tile_scheduler_metadata,
                        int32_t* num_splits, cudaStream_t stream) {
  constexpr const char* fn = "plan_sparse_decode";
  check_shape(shape, fn);
  check_lengths(topk, extra_topk, fn);
  detail::require(tile_scheduler_metadata != nullptr, fn, "tile_scheduler_metadata",
                  "must not be null");
  detail::require(num_splits != nullptr, fn, "num_splits", "must not be null");
  const int num_parts = sparse_decode_num_parts(shape);
  const SparseLengths lengths{topk, topk_length, extra_topk, extra_topk_length};
  plan_sparse_decode_kernel<<<1, 32, 0, stream>>>(
      shape.batch, lengths, num_parts, reinterpret_cast<DecodePartRange*>(tile_scheduler_metadata),
      num_splits);
  detail::check_launch("plan_sparse_decode_kernel");
}

void plan_sparse_decode_host(const SparseDecodeScheduleShape& shape, int topk,
                             const int32_t* topk_length, int extra_topk,
                             const int32_t* extra_topk_length, int num_parts,
                             int32_t* tile_scheduler_metadata, int32_t* num_splits) {
  constexpr const char* fn = "plan_sparse_decode_host";
  check_shape(shape, fn);
  check_lengths(topk, extra_topk, fn);
  detail::require(num_parts >= 1, fn, "num_parts",
                  "must be >= 1, got " + std::to_string(num_parts));
  detail::require(tile_scheduler_metadata != nullptr, fn, "tile_scheduler_metadata",
                  "must not be null");
  detail::require(num_splits != nullptr, fn, "num_splits", "must not be null");
  const SparseLengths lengths{topk, topk_length, extra_topk, extra_topk_length};
  detail::plan_decode_core(
      shape.batch, [&](int i) { return lengths.tiles(i); }, num_parts,
      reinterpret_cast<DecodePartRange*>(tile_scheduler_metadata), num_splits);
}

}  // namespace flashmla
