// Split-KV combine: one warp per (sequence, query row); out = sum_i w_i O_i with
// w_i = exp(lse_i - lse), lse = log sum_i exp(lse_i).
#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "api/checks.h"
#include "kernels/common/combine.h"

namespace flashmla::kernels {

namespace {

constexpr int kWarpsPerBlock = 8;
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

template <class Element>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineParams p) {
  const int batch = blockIdx.y;
  const int first_split = p.num_splits[batch];
  const int num_splits = p.num_splits[batch + 1] - first_split;
  if (num_splits <= 1) return;  // written directly by the split-KV kernel
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_id = blockIdx.x * kWarpsPerBlock + warp;  // kv_head * rows_per_kv + row
  if (row_id >= p.num_heads_kv * p.rows_per_kv) return;
  const int kv_head = row_id / p.rows_per_kv;
  const int row = row_id % p.rows_per_kv;
  const int64_t split_stride = int64_t(p.num_heads_kv) * p.rows_per_kv;
  const float* lse_in = p.lse_accum + int64_t(first_split) * split_stride + row_id;

  float max_lse = -INFINITY;
  bool poisoned = false;  // a split marked the sequence bad (lse NaN): the result is NaN too
  for (int i = lane; i < num_splits; i += 32) {
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
    for (int i = lane; i < num_splits; i += 32) sum += expf(lse_in[i * split_stride] - max_lse);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffff, sum, offset);
  const bool empty = max_lse == -INFINITY;
  const float lse = empty ? INFINITY : max_lse + logf(sum);

  float4 acc[kColsPerLane / 4];
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (!empty) {
    const float* o_in = p.o_accum + (int64_t(first_split) * split_stride + row_id) * kHeadDimV;
    for (int i = 0; i < num_splits; ++i) {
      const float lse_i = lse_in[i * split_stride];
      if (lse_i == -INFINITY) continue;  // an empty split contributes nothing
      const float weight = expf(lse_i - lse);
      const float4* src = reinterpret_cast<const float4*>(o_in + i * split_stride * kHeadDimV);
#pragma unroll
      for (int c = 0; c < kColsPerLane / 4; ++c) {
        const float4 v = src[c * 32 + lane];
        acc[c].x += weight * v.x;
        acc[c].y += weight * v.y;
        acc[c].z += weight * v.z;
        acc[c].w += weight * v.w;
      }
    }
  }
  const int s = row / p.heads_per_kv;
  const int head = kv_head * p.heads_per_kv + row % p.heads_per_kv;
  if (p.attn_sink != nullptr && !empty) {
    // exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)): 0 for sink = +inf.
    const float sink_factor = 1.f / (1.f + expf(p.attn_sink[head] - lse));
#pragma unroll
    for (int c = 0; c < kColsPerLane / 4; ++c) {
      acc[c].x *= sink_factor;
      acc[c].y *= sink_factor;
      acc[c].z *= sink_factor;
      acc[c].w *= sink_factor;
    }
  }
  Element* out = static_cast<Element*>(p.out) + batch * p.out_batch_stride + s * p.out_seq_stride +
                 head * p.out_head_stride;
#pragma unroll
  for (int c = 0; c < kColsPerLane / 4; ++c) store4<Element>(out + (c * 32 + lane) * 4, acc[c]);
  if (lane == 0) p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + s] = lse;
}

}  // namespace

void launch_combine(const CombineParams& params, ScalarType dtype, cudaStream_t stream) {
  detail::require(params.head_dim_v == kHeadDimV, "combine", "head_dim_v",
                  "must be 512 for the combine kernel");
  const int rows = params.num_heads_kv * params.rows_per_kv;
  const dim3 grid((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, params.batch);
  if (dtype == ScalarType::kBFloat16) {
    combine_kernel<__nv_bfloat16><<<grid, kWarpsPerBlock * 32, 0, stream>>>(params);
  } else {
    combine_kernel<__half><<<grid, kWarpsPerBlock * 32, 0, stream>>>(params);
  }
  detail::check_launch("combine_kernel");
}

}  // namespace flashmla::kernels
