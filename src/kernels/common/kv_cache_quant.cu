// FP8 KV-cache kernels: write (quantize bfloat16 tokens into cache slots) and dequantize (a
// whole cache back to bfloat16). One warp per token; in the FP8 formats lane l owns NoPE chunk
// l (16 values: a 32-byte bf16 load, a 16-byte e4m3 store), a scale group's amax is reduced
// over the lanes of its chunks, and lanes 0..7 move the 128 RoPE bytes. All value arithmetic
// is in kv_cache_token.h / fp8_convert.h, shared with the host twin, so the bytes match it
// exactly. Speed is secondary: this moves about 600 bytes per token.
#include "kernels/common/kv_cache_quant.h"

#include <cstdint>
#include <cstring>

#include "api/checks.h"
#include "flashmla/kv_cache_format.h"
#include "kernels/common/fp8_convert.h"
#include "kernels/common/kv_cache_token.h"

namespace flashmla::kernels {

namespace {

using namespace kv_cache;

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * 32;
// More tokens than this grid covers are handled by grid-stride loops.
constexpr int64_t kMaxGridBlocks = int64_t(1) << 16;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kRopeLanes = kRopeDim * 2 / 16;  // 8 lanes x 16 bytes of bfloat16 RoPE values

static_assert(kV32Chunks == 32, "one V3.2 NoPE chunk per lane");
static_assert(kModel1Chunks <= 32, "one MODEL1 NoPE chunk per lane");

__device__ __forceinline__ void copy16(const void* src, void* dst) {
  *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
}

__device__ __forceinline__ void load_chunk(const uint16_t* src, uint16_t (&values)[kChunkValues]) {
  const uint4 low = reinterpret_cast<const uint4*>(src)[0];
  const uint4 high = reinterpret_cast<const uint4*>(src)[1];
  memcpy(values, &low, 16);
  memcpy(values + 8, &high, 16);
}

__device__ __forceinline__ void store_chunk(const uint16_t (&values)[kChunkValues], uint16_t* dst) {
  uint4 low, high;
  memcpy(&low, values, 16);
  memcpy(&high, values + 8, 16);
  reinterpret_cast<uint4*>(dst)[0] = low;
  reinterpret_cast<uint4*>(dst)[1] = high;
}

// The amax of the group that `lane`'s chunk belongs to: a butterfly over the group's lanes
// (chunks_per_group consecutive lanes, a power of two).
template <int kChunksPerGroup>
__device__ __forceinline__ uint32_t group_amax_bits(uint32_t chunk_amax) {
  static_assert((kChunksPerGroup & (kChunksPerGroup - 1)) == 0);
#pragma unroll
  for (int offset = 1; offset < kChunksPerGroup; offset *= 2) {
    const uint32_t other = __shfl_xor_sync(kFullMask, chunk_amax, offset);
    chunk_amax = other > chunk_amax ? other : chunk_amax;
  }
  return chunk_amax;
}

// Quantizes chunk `lane` of `kv` with its group's scale; returns the scale.
template <int kChunksPerGroup>
__device__ __forceinline__ float quantize_lane_chunk(const uint16_t* kv, bool has_chunk, int lane,
                                                     uint8_t* nope) {
  uint16_t values[kChunkValues] = {};
  if (has_chunk) load_chunk(kv + lane * kChunkValues, values);
  const float scale = group_scale(group_amax_bits<kChunksPerGroup>(chunk_amax_bits(values)));
  if (has_chunk) {
    uint8_t bytes[kChunkValues];
    quantize_chunk(values, scale, bytes);
    uint4 packed;  // memcpy: a local array has no 16-byte alignment to rely on
    memcpy(&packed, bytes, 16);
    *reinterpret_cast<uint4*>(nope + lane * kChunkValues) = packed;
  }
  return scale;
}

__device__ __forceinline__ void write_v32_token(const uint16_t* kv, uint8_t* row, int lane) {
  const float scale = quantize_lane_chunk<kV32ChunksPerGroup>(kv, true, lane, row);
  if (lane % kV32ChunksPerGroup == 0) {
    reinterpret_cast<float*>(row + kFp8V32ScaleOffset)[lane / kV32ChunksPerGroup] = scale;
  }
  if (lane < kRopeLanes)
    copy16(kv + kFp8V32NopeDim + lane * 8, row + kFp8V32RopeOffset + lane * 16);
}

__device__ __forceinline__ void write_model1_token(const uint16_t* kv, uint8_t* block_base,
                                                   int page_block_size, int row, int lane) {
  uint8_t* data_row = block_base + int64_t(row) * kFp8Model1RowBytes;
  const float scale =
      quantize_lane_chunk<kModel1ChunksPerGroup>(kv, lane < kModel1Chunks, lane, data_row);
  float scales[kFp8Model1NumScales];
#pragma unroll
  for (int g = 0; g < kFp8Model1NumScales; ++g) {
    scales[g] = __shfl_sync(kFullMask, scale, g * kModel1ChunksPerGroup);
  }
  if (lane == 0) {
    uint8_t* scale_row = block_base + int64_t(page_block_size) * kFp8Model1RowBytes +
                         int64_t(row) * kFp8Model1ScaleRowBytes;
    *reinterpret_cast<uint64_t*>(scale_row) = model1_scale_row(scales);
  }
  if (lane < kRopeLanes) {
    copy16(kv + kFp8Model1NopeDim + lane * 8, data_row + kFp8Model1RopeOffset + lane * 16);
  }
}

__device__ __forceinline__ void copy_bf16_token(const uint8_t* src, uint8_t* dst, int head_dim_qk,
                                                int lane) {
  for (int offset = lane * 16; offset < head_dim_qk * 2; offset += 32 * 16) {
    copy16(src + offset, dst + offset);
  }
}

__global__ void __launch_bounds__(kThreads) kv_cache_write_kernel(const KVCacheWriteParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t num_slots = int64_t(p.num_blocks) * p.page_block_size;
  const int64_t num_warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t token = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
       token < p.num_tokens; token += num_warps) {
    const int64_t slot = p.slot_mapping[token];
    if (slot < 0 || slot >= num_slots) continue;  // the same for the whole warp
    const int64_t block = slot / p.page_block_size;
    const int row = int(slot % p.page_block_size);
    const uint16_t* kv = static_cast<const uint16_t*>(p.kv) + token * p.kv_token_stride;
    uint8_t* block_base = static_cast<uint8_t*>(p.k_cache) + block * p.block_stride;
    switch (p.format) {
      case KVCacheFormat::kBFloat16:
        copy_bf16_token(reinterpret_cast<const uint8_t*>(kv), block_base + row * p.token_stride,
                        p.head_dim_qk, lane);
        break;
      case KVCacheFormat::kFp8V32:
        write_v32_token(kv, block_base + row * p.token_stride, lane);
        break;
      case KVCacheFormat::kFp8Model1:
        write_model1_token(kv, block_base, p.page_block_size, row, lane);
        break;
    }
  }
}

// Dequantizes chunk `lane` of a token's NoPE bytes into `out`.
__device__ __forceinline__ void dequantize_lane_chunk(const uint8_t* nope, float scale, int lane,
                                                      uint16_t* out) {
  const uint4 packed = *reinterpret_cast<const uint4*>(nope + lane * kChunkValues);
  uint8_t bytes[kChunkValues];
  memcpy(bytes, &packed, 16);
  uint16_t values[kChunkValues];
#pragma unroll
  for (int i = 0; i < kChunkValues; ++i) values[i] = fp8::dequantize_e4m3(bytes[i], scale);
  store_chunk(values, out + lane * kChunkValues);
}

__device__ __forceinline__ void dequantize_v32_token(const uint8_t* row, int lane, uint16_t* out) {
  const float scale =
      reinterpret_cast<const float*>(row + kFp8V32ScaleOffset)[lane / kV32ChunksPerGroup];
  dequantize_lane_chunk(row, scale, lane, out);
  if (lane < kRopeLanes)
    copy16(row + kFp8V32RopeOffset + lane * 16, out + kFp8V32NopeDim + lane * 8);
}

__device__ __forceinline__ void dequantize_model1_token(const uint8_t* block_base,
                                                        int page_block_size, int row, int lane,
                                                        uint16_t* out) {
  const uint8_t* data_row = block_base + int64_t(row) * kFp8Model1RowBytes;
  const uint8_t* scale_row = block_base + int64_t(page_block_size) * kFp8Model1RowBytes +
                             int64_t(row) * kFp8Model1ScaleRowBytes;
  if (lane < kModel1Chunks) {
    const float scale = fp8::e8m0_to_float(scale_row[lane / kModel1ChunksPerGroup]);
    dequantize_lane_chunk(data_row, scale, lane, out);
  }
  if (lane < kRopeLanes) {
    copy16(data_row + kFp8Model1RopeOffset + lane * 16, out + kFp8Model1NopeDim + lane * 8);
  }
}

__global__ void __launch_bounds__(kThreads)
    kv_cache_dequantize_kernel(const KVCacheDequantizeParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t num_tokens = int64_t(p.num_blocks) * p.page_block_size;
  const int64_t num_warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t token = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; token < num_tokens;
       token += num_warps) {
    const int64_t block = token / p.page_block_size;
    const int row = int(token % p.page_block_size);
    const uint8_t* block_base = static_cast<const uint8_t*>(p.k_cache) + block * p.block_stride;
    uint16_t* out = static_cast<uint16_t*>(p.out) + token * p.head_dim_qk;
    switch (p.format) {
      case KVCacheFormat::kBFloat16:
        copy_bf16_token(block_base + row * p.token_stride, reinterpret_cast<uint8_t*>(out),
                        p.head_dim_qk, lane);
        break;
      case KVCacheFormat::kFp8V32:
        dequantize_v32_token(block_base + row * p.token_stride, lane, out);
        break;
      case KVCacheFormat::kFp8Model1:
        dequantize_model1_token(block_base, p.page_block_size, row, lane, out);
        break;
    }
  }
}

int grid_blocks(int64_t num_tokens) {
  const int64_t blocks = (num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return int(blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

}  // namespace

void launch_kv_cache_write(const KVCacheWriteParams& params, cudaStream_t stream) {
  kv_cache_write_kernel<<<grid_blocks(params.num_tokens), kThreads, 0, stream>>>(params);
  detail::check_launch("kv_cache_write_kernel");
}

void launch_kv_cache_dequantize(const KVCacheDequantizeParams& params, cudaStream_t stream) {
  const int64_t num_tokens = int64_t(params.num_blocks) * params.page_block_size;
  kv_cache_dequantize_kernel<<<grid_blocks(num_tokens), kThreads, 0, stream>>>(params);
  detail::check_launch("kv_cache_dequantize_kernel");
}

}  // namespace flashmla::kernels
