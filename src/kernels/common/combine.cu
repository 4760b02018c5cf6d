// Split-KV combine: out = sum_i w_i O_i with w_i = exp(lse_i - lse), lse = log sum_i
// exp(lse_i), for every (sequence, query row). Two kernels:
// - one warp a row: the partial rows of kSplitsInFlight splits are loaded before they are
//   summed (with few sequences (b 2) a row has ~11 splits, and one load latency per split made
//   the combine 6.7 us of a 28 us sparse decode call);
// - one block a row, for few rows with many splits each (b 1, h_q 128, s_k 64K: 128 rows of
//   64 splits, so one warp a row kept 32 SMs busy through 16 load latencies): the block's
//   warps take the splits in turn and add their sums in shared memory.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <unordered_set>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "api/checks.h"
#include "api/device_limits.h"
#include "kernels/common/combine_spread.h"
#include "kernels/common/combine.h"
#include "kernels/common/sm90_ptx.cuh"

namespace flashmla::kernels {

namespace {

constexpr int kHeadDimV = 512;
constexpr int kColsPerLane = kHeadDimV / 32;  // 16: four float4 per lane

template <class Element>
__device__ __forceinline__ void store4(Element* dst, float4 v);
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* dst, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 packed = make_uint2(*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi));
  *reinterpret_cast<uint2*>(dst) = packed;
}
template <>
__device__ __forceinline__ void store4<__half>(__half* dst, float4 v) {
  __half2 lo = __floats2half2_rn(v.x, v.y), hi = __floats2half2_rn(v.z, v.w);
  uint2 packed = make_uint2(*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi));
  *reinterpret_cast<uint2*>(dst) = packed;
}

// Each lane's weight of split `lane` of a group of 32: exp(lse_i - lse), 0 for an empty split
// (lse_i = -inf; its partial row may never have been written). NaN stays NaN.
__device__ __forceinline__ float split_weight(float lse_i, float lse) {
  return lse_i == -INFINITY ? 0.f : expf(lse_i - lse);
}

// The row's lse over its num_splits splits (lane i reads splits i, i + 32, ...): +inf when
// every split is empty (lse_i = -inf), NaN when any split is NaN (a split marked the sequence
// bad). `lse_first` gets lane i's lse of split i (-inf past the end), so that a warp that
// takes every split can form the first 32 weights without loading them again.
__device__ __forceinline__ float combined_lse(const float* lse_in, int64_t split_stride,
                                              int num_splits, int lane, float& lse_first) {
  lse_first = lane < num_splits ? lse_in[lane * split_stride] : -INFINITY;
  float max_lse = lse_first;
  bool poisoned = isnan(lse_first);
  for (int i = lane + 32; i < num_splits; i += 32) {
    const float lse_i = lse_in[i * split_stride];
    poisoned |= isnan(lse_i);
    max_lse = fmaxf(max_lse, lse_i);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffff, max_lse, offset));
  if (__any_sync(0xffffffff, poisoned)) max_lse = NAN;  // fmaxf alone would drop the NaN
  float sum = 0.f;
  if (max_lse != -INFINITY) {
    sum = lane < num_splits ? expf(lse_first - max_lse) : 0.f;
    for (int i = lane + 32; i < num_splits; i += 32)
      sum += expf(lse_in[i * split_stride] - max_lse);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffff, sum, offset);
  return max_lse == -INFINITY ? INFINITY : max_lse + logf(sum);
}

// The lane's columns of the partial rows of the first kSplitsInFlight of a row's splits first,
// first + stride, ... (count of them; zeros past the end), loaded before the row's lse is known so
// that their latency overlaps the lse loads (FlashMLA's combine prefetches its first split the same
// way). An empty split's row may never have been written: accumulate_splits drops it by its weight,
// not by a product.
template <int kSplitsInFlight>
__device__ __forceinline__ void load_first_splits(float4 (&rows)[kSplitsInFlight][kColsPerLane / 4],
                                                  const float* o_in, int64_t split_stride,
                                                  int first, int stride, int count, int lane) {
#pragma unroll
  for (int u = 0; u < kSplitsInFlight; ++u) {
    const float4* src = reinterpret_cast<const float4*>(o_in + int64_t(first + u * stride) *
                                                                   split_stride * kHeadDimV);
#pragma unroll
    for (int c = 0; c < kColsPerLane / 4; ++c) {
      rows[u][c] = u < count ? src[c * 32 + lane] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
}

// acc += w_k O_k over the splits k = first, first + stride, ... (count of them) of a row:
// o_in / lse_in point at split 0's partial row / lse. kSplitsInFlight rows are loaded before
// any is summed (one memory latency per step, not per split); empty splits are not read. With
// `lse_first_group` (first 0, stride 1) lane i already holds split i's lse. `first_step` holds
// the first step's rows (load_first_splits).
template <int kSplitsInFlight>
__device__ __forceinline__ void accumulate_splits(
    float4 (&acc)[kColsPerLane / 4], const float* o_in, const float* lse_in, int64_t split_stride,
    int first, int stride, int count, float lse, bool have_lse_first, float lse_first, int lane,
    const float4 (&first_step)[kSplitsInFlight][kColsPerLane / 4]) {
  const auto weight_of_lane = [&](int group, int in_group) {
    const float lse_lane =
        group == 0 && have_lse_first
            ? lse_first
            : (lane < in_group ? lse_in[(first + (group + lane) * stride) * split_stride] : 0.f);
    return lane < in_group ? split_weight(lse_lane, lse) : 0.f;
  };
  // The loaded first step, before the loop (inside it, its rows stayed live through the loop:
  // spills).
  {
    const int in_group = min(32, count);
    const float weight_lane = weight_of_lane(0, in_group);
#pragma unroll
    for (int u = 0; u < kSplitsInFlight; ++u) {
      const float weight = __shfl_sync(0xffffffff, weight_lane, u);
      // A zero weight (empty split, or past the row's splits) drops the row as a select: 0
      // times an unwritten row's NaN would not.
      const bool use = u < in_group && weight != 0.f;
#pragma unroll
      for (int c = 0; c < kColsPerLane / 4; ++c) {
        if (use) {
          acc[c].x += weight * first_step[u][c].x;
          acc[c].y += weight * first_step[u][c].y;
          acc[c].z += weight * first_step[u][c].z;
          acc[c].w += weight * first_step[u][c].w;
        }
      }
    }
  }
  for (int group = 0; group < count; group += 32) {
    const int in_group = min(32, count - group);
    const float weight_lane = weight_of_lane(group, in_group);
    for (int step = group == 0 ? kSplitsInFlight : 0; step < in_group; step += kSplitsInFlight) {
      float weight[kSplitsInFlight];
      float4 v[kSplitsInFlight][kColsPerLane / 4];
#pragma unroll
      for (int u = 0; u < kSplitsInFlight; ++u) {
        weight[u] = __shfl_sync(0xffffffff, weight_lane, (step + u) & 31);
        const bool read = step + u < in_group && weight[u] != 0.f;
        const float4* src = reinterpret_cast<const float4*>(
            o_in + int64_t(first + (group + step + u) * stride) * split_stride * kHeadDimV);
#pragma unroll
        for (int c = 0; c < kColsPerLane / 4; ++c) {
          v[u][c] = read ? src[c * 32 + lane] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        if (!read) weight[u] = 0.f;
      }
#pragma unroll
      for (int u = 0; u < kSplitsInFlight; ++u) {
#pragma unroll
        for (int c = 0; c < kColsPerLane / 4; ++c) {
          acc[c].x += weight[u] * v[u][c].x;
          acc[c].y += weight[u] * v[u][c].y;
          acc[c].z += weight[u] * v[u][c].z;
          acc[c].w += weight[u] * v[u][c].w;
        }
      }
    }
  }
}

// The attention sink's factor of a row's output: exp(lse) / (exp(lse) + exp(sink)) =
// 1 / (1 + exp(sink - lse)), 0 for sink = +inf; 1 without a sink or for an empty row.
__device__ __forceinline__ float sink_factor(const CombineParams& p, int head, float lse) {
  if (p.attn_sink == nullptr || lse == INFINITY) return 1.f;
  return 1.f / (1.f + expf(p.attn_sink[head] - lse));
}

// The combine is launched while the decode kernel may still run (programmatic dependent
// launch, launch_after_decode below): nothing that kernel writes is read before this wait.
// A sequence without splits was written by the decode kernel itself, so its blocks leave at
// once, except block (0, 0), which always waits: the combine then never completes before the
// decode kernel, and work queued after it sees the whole output. Returns whether to leave.
__device__ __forceinline__ bool wait_for_decode_kernel(int num_splits) {
  if (num_splits <= 1 && (blockIdx.x | blockIdx.y) != 0) return true;
  sm90::wait_for_primary_grid();
  return num_splits <= 1;
}

// kSplitsInFlight partial rows are loaded before any is summed (one memory latency per step,
// not per split). Many splits a sequence: 4 in flight, 4 warps a block (128 registers; few
// rows still spread over the SMs). Few: 1 and 8 warps a block, for occupancy (4 in flight
// there made rows of ~2 splits 1-3% slower, docs/perf-notes.md).
template <class Element, int kSplitsInFlight, int kWarpsPerBlock>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineParams p) {
  const int batch = blockIdx.y;
  const int first_split = p.num_splits[batch];
  const int num_splits = p.num_splits[batch + 1] - first_split;  // the plan's, not the kernel's
  if (wait_for_decode_kernel(num_splits)) return;  // written directly by the split-KV kernel
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_id = blockIdx.x * kWarpsPerBlock + warp;  // kv_head * rows_per_kv + row
  if (row_id >= p.num_heads_kv * p.rows_per_kv) return;
  const int kv_head = row_id / p.rows_per_kv;
  const int row = row_id % p.rows_per_kv;
  const int64_t split_stride = int64_t(p.num_heads_kv) * p.rows_per_kv;
  const float* lse_in = p.lse_accum + int64_t(first_split) * split_stride + row_id;

  // The first splits' partial rows are in flight while the lse is formed.
  const float* o_in = p.o_accum + (int64_t(first_split) * split_stride + row_id) * kHeadDimV;
  float4 first_step[kSplitsInFlight][kColsPerLane / 4];
  load_first_splits<kSplitsInFlight>(first_step, o_in, split_stride, 0, 1, num_splits, lane);
  // Lane i holds lse of split i of the first group of 32 (the only one below 33 splits) for
  // the whole kernel: the weights then come by shuffle, not by a load in the summing loop.
  float lse_first;
  const float lse = combined_lse(lse_in, split_stride, num_splits, lane, lse_first);

  float4 acc[kColsPerLane / 4];
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (lse != INFINITY) {
    accumulate_splits<kSplitsInFlight>(acc, o_in, lse_in, split_stride, 0, 1, num_splits, lse, true,
                                       lse_first, lane, first_step);
  }
  const int s = row / p.heads_per_kv;
  const int head = kv_head * p.heads_per_kv + row % p.heads_per_kv;
  const float factor = sink_factor(p, head, lse);
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) {
    acc[c].x *= factor;
    acc[c].y *= factor;
    acc[c].z *= factor;
    acc[c].w *= factor;
  }
  Element* out = static_cast<Element*>(p.out) + batch * p.out_batch_stride + s * p.out_seq_stride +
                 head * p.out_head_stride;
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) store4<Element>(out + (c * 32 + lane) * 4, acc[c]);
  if (lane == 0) p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + s] = lse;
}

// One block a row: warp w sums splits w, w + kWarps, ..., and the warps' sums are added in
// shared memory. For few rows with many splits each (see the file comment).
template <class Element, int kWarps, int kSplitsInFlight>
__global__ void __launch_bounds__(kWarps * 32) combine_row_block_kernel(const CombineParams p) {
  const int batch = blockIdx.y;
  const int first_split = p.num_splits[batch];
  const int num_splits = p.num_splits[batch + 1] - first_split;  // the plan's, not the kernel's
  if (wait_for_decode_kernel(num_splits))
    return;  // written directly by the split-KV kernel (uniform per block)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_id = blockIdx.x;  // kv_head * rows_per_kv + row; the grid has one per row
  const int kv_head = row_id / p.rows_per_kv;
  const int row = row_id % p.rows_per_kv;
  const int64_t split_stride = int64_t(p.num_heads_kv) * p.rows_per_kv;
  const float* lse_in = p.lse_accum + int64_t(first_split) * split_stride + row_id;

  // The warp's first splits' partial rows are in flight while the lse is formed.
  const float* o_in = p.o_accum + (int64_t(first_split) * split_stride + row_id) * kHeadDimV;
  const int count = warp < num_splits ? (num_splits - warp + kWarps - 1) / kWarps : 0;
  float4 first_step[kSplitsInFlight][kColsPerLane / 4];
  load_first_splits<kSplitsInFlight>(first_step, o_in, split_stride, warp, kWarps, count, lane);
  float lse_first;  // every warp forms the row's lse (a few loads, L1 hits after the first)
  const float lse = combined_lse(lse_in, split_stride, num_splits, lane, lse_first);
  float4 acc[kColsPerLane / 4];
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (lse != INFINITY && count > 0) {
    accumulate_splits<kSplitsInFlight>(acc, o_in, lse_in, split_stride, warp, kWarps, count, lse,
                                       false, 0.f, lane, first_step);
  }
  __shared__ float4 warp_sums[kWarps][kHeadDimV / 4];
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) warp_sums[warp][c * 32 + lane] = acc[c];
  __syncthreads();

  const int s = row / p.heads_per_kv;
  const int head = kv_head * p.heads_per_kv + row % p.heads_per_kv;
  const float factor = sink_factor(p, head, lse);
  Element* out = static_cast<Element*>(p.out) + batch * p.out_batch_stride + s * p.out_seq_stride +
                 head * p.out_head_stride;
  for (int column4 = threadIdx.x; column4 < kHeadDimV / 4; column4 += kWarps * 32) {
    float4 total = warp_sums[0][column4];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 part = warp_sums[w][column4];
      total.x += part.x;
      total.y += part.y;
      total.z += part.z;
      total.w += part.w;
    }
    total.x *= factor;
    total.y *= factor;
    total.z *= factor;
    total.w *= factor;
    store4<Element>(out + column4 * 4, total);
  }
  if (threadIdx.x == 0) p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + s] = lse;
}

// Lets kKernel ask for up to `bytes` of dynamic shared memory on `device` (above 48 KB a
// kernel must opt in), once per device.
template <auto kKernel>
void allow_dynamic_shared(int device, int bytes) {
  static std::mutex mutex;
  static std::unordered_set<int> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count(device)) return;
  detail::check_cuda(
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
      "cudaFuncSetAttribute(combine_kernel)");
  done.insert(device);
}

// Programmatic stream serialization: the combine may be scheduled once every CTA of the
// decode kernel before it has its last tile under way (allow_dependent_launch), which hides
// its launch behind that kernel's tail (FlashMLA launches its combine the same way). Its
// blocks are then placed on whichever SMs the decode kernel frees first, as many as fit there
// (4 of the four-warp instance): sparse b 2 and dense b 4 ran their combine on a few SMs and
// took 2 us longer than when launched after the kernel. Unused dynamic shared memory caps them
// at the count an ordinary launch places (combine_spread.h); measured in docs/perf-notes.md.
template <auto kKernel>
void launch_after_decode(dim3 grid, int threads, int static_shared, const CombineParams& params,
                         cudaStream_t stream) {
  int device = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const detail::DeviceLimits& limits = detail::device_limits(device);
  const int dynamic_shared =
      combine_spread_shared_bytes(int64_t(grid.x) * grid.y, threads, static_shared, limits);
  if (dynamic_shared > 0) {
    allow_dynamic_shared<kKernel>(device, limits.shared_per_block_optin - static_shared);
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = size_t(dynamic_shared);
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  detail::check_cuda(cudaLaunchKernelEx(&config, kKernel, params), "combine_kernel launch");
}

template <class Element, int kSplitsInFlight, int kWarpsPerBlock>
void launch_instance(const CombineParams& params, cudaStream_t stream) {
  const int rows = params.num_heads_kv * params.rows_per_kv;
  const dim3 grid((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, params.batch);
  launch_after_decode<combine_kernel<Element, kSplitsInFlight, kWarpsPerBlock>>(
      grid, kWarpsPerBlock * 32, 0, params, stream);
}

// The plan gives the sequences batch + num_parts - 1 splits at most. Few rows (a warp each:
// at most 2 per SM) with 8 or more splits on average take a block a row (8 warps, 4 splits in
// flight each): b 1 h_q 128 (128 rows, 64 splits) 12.3 -> 6.0 us; but 512 rows of ~16 splits
// (sparse b 2, dense b 4) were 1.2 us slower than a warp a row. 4 or more splits on average
// take a warp a row with 4 splits in flight, fewer a warp a row with 1.
template <class Element>
void launch_for_plan(const CombineParams& params, cudaStream_t stream) {
  const int64_t rows = int64_t(params.batch) * params.num_heads_kv * params.rows_per_kv;
  if (rows <= 256 && params.num_parts >= 8 * params.batch) {
    constexpr int kWarps = 8;
    const dim3 grid(params.num_heads_kv * params.rows_per_kv, params.batch);
    launch_after_decode<combine_row_block_kernel<Element, kWarps, 4>>(
        grid, kWarps * 32, kWarps * kHeadDimV * int(sizeof(float)), params, stream);
  } else if (params.num_parts >= 3 * params.batch) {
    launch_instance<Element, 4, 4>(params, stream);
  } else {
    launch_instance<Element, 1, 8>(params, stream);
  }
}

}  // namespace

void launch_combine(const CombineParams& params, ScalarType dtype, cudaStream_t stream) {
  detail::require(params.head_dim_v == kHeadDimV, "combine", "head_dim_v",
                  "must be 512 for the combine kernel");
  if (dtype == ScalarType::kBFloat16) {
    launch_for_plan<__nv_bfloat16>(params, stream);
  } else {
    launch_for_plan<__half>(params, stream);
  }
  detail::check_launch("combine_kernel");
}

}  // namespace flashmla::kernels
