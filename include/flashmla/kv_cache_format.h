// Byte layouts of the KV caches that sparse decoding reads (spec section 2). Shared by the
// kernels, the FP8 cache tools, the CPU reference and the bindings.
#pragma once

#include <cstdint>

namespace flashmla {

enum class KVCacheFormat : int32_t {
  // Plain bfloat16 rows of head_dim_qk (576 or 512) elements: 2 * head_dim_qk bytes a token.
  kBFloat16 = 0,
  // DeepSeek V3.2, head_dim_qk 576: each token is 656 bytes: 512 float8_e4m3 NoPE values,
  // 4 float32 scales (scale j multiplies values 128j .. 128j+127), 64 bfloat16 RoPE values.
  kFp8V32 = 1,
  // "MODEL1", head_dim_qk 512: per page block, first page_block_size rows of 576 bytes
  // (448 float8_e4m3 NoPE values, then 64 bfloat16 RoPE values), then page_block_size rows of
  // 8 bytes (7 float8_e8m0 scales, one per 64 NoPE values, and one pad byte). A block is
  // padded to a multiple of 576 bytes.
  kFp8Model1 = 2,
};

inline const char* to_string(KVCacheFormat format) {
  switch (format) {
    case KVCacheFormat::kBFloat16:
      return "bfloat16";
    case KVCacheFormat::kFp8V32:
      return "fp8_v32";
    case KVCacheFormat::kFp8Model1:
      return "fp8_model1";
  }
  return "unknown";
}

inline constexpr int kRopeDim = 64;  // RoPE columns, the last 64 of every row, never quantized

// V3.2 layout.
inline constexpr int kFp8V32HeadDim = 576;
inline constexpr int kFp8V32NopeDim = 512;
inline constexpr int kFp8V32TileSize = 128;  // NoPE values per float32 scale
inline constexpr int kFp8V32NumScales = 4;
inline constexpr int kFp8V32ScaleOffset = 512;  // bytes into the token row
inline constexpr int kFp8V32RopeOffset = 528;   // bytes into the token row
inline constexpr int kFp8V32TokenBytes = 656;

// MODEL1 layout.
inline constexpr int kFp8Model1HeadDim = 512;
inline constexpr int kFp8Model1NopeDim = 448;
inline constexpr int kFp8Model1TileSize = 64;  // NoPE values per e8m0 scale
inline constexpr int kFp8Model1NumScales = 7;
inline constexpr int kFp8Model1RowBytes = 576;    // NoPE (448) + RoPE (128) of one token
inline constexpr int kFp8Model1RopeOffset = 448;  // bytes into the token row
inline constexpr int kFp8Model1ScaleRowBytes = 8;
inline constexpr int kFp8Model1BlockAlign = 576;

// The head_dim_qk a format stores (0 for kBFloat16, whose rows may be 576 or 512 wide).
inline constexpr int kv_cache_format_head_dim(KVCacheFormat format) {
  return format == KVCacheFormat::kFp8V32      ? kFp8V32HeadDim
         : format == KVCacheFormat::kFp8Model1 ? kFp8Model1HeadDim
                                               : 0;
}

// Bytes of one page block in the densest layout (FlashMLA's own caches may leave a gap
// between blocks: the kernels take any block stride at least this large).
inline constexpr int64_t kv_cache_min_block_bytes(KVCacheFormat format, int page_block_size,
                                                  int head_dim_qk) {
  switch (format) {
    case KVCacheFormat::kBFloat16:
      return int64_t(page_block_size) * head_dim_qk * 2;
    case KVCacheFormat::kFp8V32:
      return int64_t(page_block_size) * kFp8V32TokenBytes;
    case KVCacheFormat::kFp8Model1: {
      const int64_t used =
          int64_t(page_block_size) * (kFp8Model1RowBytes + kFp8Model1ScaleRowBytes);
      return (used + kFp8Model1BlockAlign - 1) / kFp8Model1BlockAlign * kFp8Model1BlockAlign;
    }
  }
  return 0;
}

// Bytes between consecutive tokens of a block in the densest layout (for MODEL1: between
// data rows; its scale rows are kFp8Model1ScaleRowBytes apart).
inline constexpr int64_t kv_cache_min_token_bytes(KVCacheFormat format, int head_dim_qk) {
  return format == KVCacheFormat::kBFloat16 ? int64_t(head_dim_qk) * 2
         : format == KVCacheFormat::kFp8V32 ? kFp8V32TokenBytes
                                            : kFp8Model1RowBytes;
}

}  // namespace flashmla
