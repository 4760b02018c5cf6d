// Host dequantization of one token of a KV cache (kv_cache_format.h layouts), built on the
// same fp8_convert.h arithmetic as the kernels so that both agree bit for bit.
#include "reference/kv_cache_reference.h"

#include <cstring>

#include "kernels/common/fp8_convert.h"

namespace flashmla::reference {

namespace {

// RoPE values are stored as bfloat16 and returned unchanged.
void copy_bf16(const uint8_t* source, int count, uint16_t* out_bf16_bits) {
  std::memcpy(out_bf16_bits, source, size_t(count) * 2);
}

void dequantize_v32(const uint8_t* token, uint16_t* out) {
  for (int tile = 0; tile < kFp8V32NumScales; ++tile) {
    float scale;  // memcpy: the row need not be 4-byte aligned in host memory
    std::memcpy(&scale, token + kFp8V32ScaleOffset + 4 * tile, 4);
    for (int i = tile * kFp8V32TileSize; i < (tile + 1) * kFp8V32TileSize; ++i) {
      out[i] = fp8::dequantize_e4m3(token[i], scale);
    }
  }
  copy_bf16(token + kFp8V32RopeOffset, kRopeDim, out + kFp8V32NopeDim);
}

void dequantize_model1(const uint8_t* block_base, int page_block_size, int row, uint16_t* out) {
  const uint8_t* data = block_base + int64_t(row) * kFp8Model1RowBytes;
  const uint8_t* scales = block_base + int64_t(page_block_size) * kFp8Model1RowBytes +
                          int64_t(row) * kFp8Model1ScaleRowBytes;
  for (int tile = 0; tile < kFp8Model1NumScales; ++tile) {
    const float scale = fp8::e8m0_to_float(scales[tile]);
    for (int i = tile * kFp8Model1TileSize; i < (tile + 1) * kFp8Model1TileSize; ++i) {
      out[i] = fp8::dequantize_e4m3(data[i], scale);
    }
  }
  copy_bf16(data + kFp8Model1RopeOffset, kRopeDim, out + kFp8Model1NopeDim);
}

}  // namespace

void dequantize_token_host(KVCacheFormat format, int head_dim_qk, const uint8_t* block_base,
                           int page_block_size, int row, int64_t token_stride,
                           uint16_t* out_bf16_bits) {
  switch (format) {
    case KVCacheFormat::kBFloat16:
      copy_bf16(block_base + int64_t(row) * token_stride, head_dim_qk, out_bf16_bits);
      return;
    case KVCacheFormat::kFp8V32:
      dequantize_v32(block_base + int64_t(row) * token_stride, out_bf16_bits);
      return;
    case KVCacheFormat::kFp8Model1:
      dequantize_model1(block_base, page_block_size, row, out_bf16_bits);
      return;
  }
}

}  // namespace flashmla::reference
