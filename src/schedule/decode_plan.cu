// Split-KV planner: the GPU kernel (graph-safe, no host sync) and its host twin.
#include <algorithm>
#include <string>

#include "api/checks.h"
#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "schedule/decode_plan_core.h"

namespace flashmla {

namespace {

// One thread suffices: the walk is O(batch + parts) and runs once per decoding step.
__global__ void plan_decode_kernel(int batch, const int32_t* __restrict__ cache_seqlens,
                                   int num_parts, DecodePartRange* parts, int32_t* num_splits) {
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    detail::plan_decode_core(
        batch, [&](int i) { return detail::decode_num_tiles(cache_seqlens[i]); }, num_parts, parts,
        num_splits);
  }
}

void check_shape(const DecodeScheduleShape& shape, const char* fn) {
  detail::require(shape.batch >= 0, fn, "batch",
                  "must be >= 0, got " + std::to_string(shape.batch));
  detail::require(shape.rows_per_kv_head >= 1, fn, "rows_per_kv_head",
                  "(s_q * h_q / h_kv) must be >= 1, got " + std::to_string(shape.rows_per_kv_head));
  detail::require(shape.num_heads_kv >= 1, fn, "num_heads_kv",
                  "must be >= 1, got " + std::to_string(shape.num_heads_kv));
  detail::require(shape.num_sms >= 0, fn, "num_sms",
                  "must be >= 0 (0 = the device's), got " + std::to_string(shape.num_sms));
}

}  // namespace

int decode_num_parts(const DecodeScheduleShape& shape) {
  check_shape(shape, "decode_num_parts");
  int device = 0;
  const int num_sms =
      shape.num_sms > 0
          ? shape.num_sms
          : (detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice"), device_sm_count(device));
  const int m_blocks = (shape.rows_per_kv_head + kDecodeRowsPerBlock - 1) / kDecodeRowsPerBlock;
  // One CTA per SM: each (m-block, KV head) pair gets an equal share of the SMs.
  return std::max(1, num_sms / (shape.num_heads_kv * m_blocks));
}

int decode_max_total_splits(const DecodeScheduleShape& shape) {
  // Every sequence has one split, and every part boundary cuts at most one more.
  return shape.batch + decode_num_parts(shape);
}

void plan_decode(const DecodeScheduleShape& shape, const int32_t* cache_seqlens,
                 int page_block_size, int32_t* tile_scheduler_metadata, int32_t* num_splits,
                 cudaStream_t stream) {
  constexpr const char* fn = "plan_decode";
  check_shape(shape, fn);
  detail::require(page_block_size > 0, fn, "page_block_size",
                  "must be > 0, got " + std::to_string(page_block_size));
  // An empty batch (batch 0) may come with a null cache_seqlens; the plan is still written.
  detail::require(cache_seqlens != nullptr || shape.batch == 0, fn, "cache_seqlens",
                  "must not be null");
  detail::require(tile_scheduler_metadata != nullptr, fn, "tile_scheduler_metadata",
                  "must not be null");
  detail::require(num_splits != nullptr, fn, "num_splits", "must not be null");
  const int num_parts = decode_num_parts(shape);
  plan_decode_kernel<<<1, 32, 0, stream>>>(
      shape.batch, cache_seqlens, num_parts,
      reinterpret_cast<DecodePartRange*>(tile_scheduler_metadata), num_splits);
  detail::check_launch("plan_decode_kernel");
}

void plan_decode_host(const DecodeScheduleShape& shape, const int32_t* cache_seqlens,
                      int page_block_size, int num_parts, int32_t* tile_scheduler_metadata,
                      int32_t* num_splits) {
  constexpr const char* fn = "plan_decode_host";
  check_shape(shape, fn);
  detail::require(page_block_size > 0, fn, "page_block_size",
                  "must be > 0, got " + std::to_string(page_block_size));
  detail::require(num_parts >= 1, fn, "num_parts",
                  "must be >= 1, got " + std::to_string(num_parts));
  detail::require(cache_seqlens != nullptr || shape.batch == 0, fn, "cache_seqlens",
                  "must not be null");
  detail::require(tile_scheduler_metadata != nullptr, fn, "tile_scheduler_metadata",
                  "must not be null");
  detail::require(num_splits != nullptr, fn, "num_splits", "must not be null");
  detail::plan_decode_core(
      shape.batch, [&](int i) { return detail::decode_num_tiles(cache_seqlens[i]); }, num_parts,
      reinterpret_cast<DecodePartRange*>(tile_scheduler_metadata), num_splits);
}

}  // namespace flashmla
