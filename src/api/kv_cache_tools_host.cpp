// FP8 KV-cache tools, host twins (host pointers): the same validation, and the per-value
// arithmetic of kv_cache_token.h that the device kernels use, looped over on the CPU. Tests
// compare the device bytes with these byte for byte.
#include <cstdint>
#include <cstring>

#include "api/validate_kv_cache_tools.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "kernels/common/kv_cache_token.h"
#include "reference/kv_cache_reference.h"

namespace flashmla {

namespace {

using namespace kv_cache;

// Quantizes the NoPE values of one token: `num_groups` groups of `chunks_per_group` chunks,
// e4m3 bytes to `nope`, the scale of group g to scales[g].
void quantize_nope(const uint16_t* kv, int num_groups, int chunks_per_group, uint8_t* nope,
                   float* scales) {
  for (int g = 0; g < num_groups; ++g) {
    const int first = g * chunks_per_group * kChunkValues;
    uint32_t amax = 0;
    for (int c = 0; c < chunks_per_group; ++c) {
      const uint32_t chunk = chunk_amax_bits(kv + first + c * kChunkValues);
      amax = chunk > amax ? chunk : amax;
    }
    scales[g] = group_scale(amax);
    for (int c = 0; c < chunks_per_group; ++c) {
      const int offset = first + c * kChunkValues;
      quantize_chunk(kv + offset, scales[g], nope + offset);
    }
  }
}

void write_v32_token(const uint16_t* kv, uint8_t* row) {
  float scales[kFp8V32NumScales];
  quantize_nope(kv, kFp8V32NumScales, kV32ChunksPerGroup, row, scales);
  std::memcpy(row + kFp8V32ScaleOffset, scales, sizeof(scales));
  std::memcpy(row + kFp8V32RopeOffset, kv + kFp8V32NopeDim, kRopeDim * 2);
}

void write_model1_token(const uint16_t* kv, uint8_t* block_base, int page_block_size, int row) {
  uint8_t* data_row = block_base + int64_t(row) * kFp8Model1RowBytes;
  float scales[kFp8Model1NumScales];
  quantize_nope(kv, kFp8Model1NumScales, kModel1ChunksPerGroup, data_row, scales);
  std::memcpy(data_row + kFp8Model1RopeOffset, kv + kFp8Model1NopeDim, kRopeDim * 2);
  // The device stores the same uint64 with one 8-byte store; both are little-endian.
  const uint64_t scale_row = model1_scale_row(scales);
  std::memcpy(block_base + int64_t(page_block_size) * kFp8Model1RowBytes +
                  int64_t(row) * kFp8Model1ScaleRowBytes,
              &scale_row, sizeof(scale_row));
}

}  // namespace

void write_kv_cache_host(const KVCacheWriteParams& p) {
  detail::validate_kv_cache_write(p, "write_kv_cache_host");
  const int64_t num_slots = int64_t(p.num_blocks) * p.page_block_size;
  for (int64_t token = 0; token < p.num_tokens; ++token) {
    const int64_t slot = p.slot_mapping[token];
    if (slot < 0 || slot >= num_slots) continue;
    const int64_t block = slot / p.page_block_size;
    const int row = int(slot % p.page_block_size);
    const uint16_t* kv = static_cast<const uint16_t*>(p.kv) + token * p.kv_token_stride;
    uint8_t* block_base = static_cast<uint8_t*>(p.k_cache) + block * p.block_stride;
    switch (p.format) {
      case KVCacheFormat::kBFloat16:
        std::memcpy(block_base + row * p.token_stride, kv, size_t(p.head_dim_qk) * 2);
        break;
      case KVCacheFormat::kFp8V32:
        write_v32_token(kv, block_base + row * p.token_stride);
        break;
      case KVCacheFormat::kFp8Model1:
        write_model1_token(kv, block_base, p.page_block_size, row);
        break;
    }
  }
}

void dequantize_kv_cache_host(const KVCacheDequantizeParams& p) {
  detail::validate_kv_cache_dequantize(p, "dequantize_kv_cache_host");
  uint16_t* out = static_cast<uint16_t*>(p.out);
  for (int64_t block = 0; block < p.num_blocks; ++block) {
    const uint8_t* block_base = static_cast<const uint8_t*>(p.k_cache) + block * p.block_stride;
    for (int row = 0; row < p.page_block_size; ++row) {
      const int64_t token = block * p.page_block_size + row;
      reference::dequantize_token_host(p.format, p.head_dim_qk, block_base, p.page_block_size, row,
                                       p.token_stride, out + token * p.head_dim_qk);
    }
  }
}

}  // namespace flashmla
