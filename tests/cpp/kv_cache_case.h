// Host data for the KV-cache tool tests, shared by the CPU and the GPU tests: cache layouts
// with optional gaps, random bfloat16 tokens over a wide range of magnitudes, and slot
// mappings with skipped (-1) and out-of-range entries.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "reference/half_convert.h"

namespace flashmla::testing {

// The head_dim_qk a test uses for a format (bfloat16 caches: 576, like V3.2).
inline int test_head_dim(KVCacheFormat format) {
  return format == KVCacheFormat::kFp8Model1 ? kFp8Model1HeadDim : kFp8V32HeadDim;
}

// Sizes and byte strides of one paged cache.
struct KVCacheLayout {
  KVCacheFormat format = KVCacheFormat::kFp8V32;
  int head_dim_qk = 576;
  int num_blocks = 0;
  int page_block_size = 0;
  int64_t token_stride = 0;  // bytes (MODEL1: the fixed data row size, for information)
  int64_t block_stride = 0;  // bytes

  size_t bytes() const { return size_t(num_blocks) * size_t(block_stride); }
  int64_t num_slots() const { return int64_t(num_blocks) * page_block_size; }
};

// The densest layout, plus token_gap bytes between tokens (not for MODEL1, whose rows are
// fixed) and block_gap bytes between blocks; gaps must be multiples of 16.
inline KVCacheLayout make_kv_cache_layout(KVCacheFormat format, int head_dim_qk, int num_blocks,
                                          int page_block_size, int64_t token_gap = 0,
                                          int64_t block_gap = 0) {
  KVCacheLayout l;
  l.format = format;
  l.head_dim_qk = head_dim_qk;
  l.num_blocks = num_blocks;
  l.page_block_size = page_block_size;
  const int64_t token_bytes = kv_cache_min_token_bytes(format, head_dim_qk);
  l.token_stride = token_bytes + (format == KVCacheFormat::kFp8Model1 ? 0 : token_gap);
  const int64_t rows = format == KVCacheFormat::kFp8Model1
                           ? 0
                           : int64_t(page_block_size - 1) * l.token_stride + token_bytes;
  const int64_t dense =
      std::max(kv_cache_min_block_bytes(format, page_block_size, head_dim_qk), rows);
  l.block_stride = (dense + 15) / 16 * 16 + block_gap;
  return l;
}

inline KVCacheWriteParams make_write_params(const KVCacheLayout& l, const void* kv,
                                            int64_t kv_token_stride, int num_tokens,
                                            const int64_t* slot_mapping, void* k_cache) {
  KVCacheWriteParams p;
  p.format = l.format;
  p.head_dim_qk = l.head_dim_qk;
  p.num_tokens = num_tokens;
  p.kv = kv;
  p.kv_token_stride = kv_token_stride;
  p.slot_mapping = slot_mapping;
  p.k_cache = k_cache;
  p.num_blocks = l.num_blocks;
  p.page_block_size = l.page_block_size;
  p.block_stride = l.block_stride;
  p.token_stride = l.token_stride;
  return p;
}

inline KVCacheDequantizeParams make_dequantize_params(const KVCacheLayout& l, const void* k_cache,
                                                      void* out) {
  KVCacheDequantizeParams p;
  p.format = l.format;
  p.head_dim_qk = l.head_dim_qk;
  p.k_cache = k_cache;
  p.num_blocks = l.num_blocks;
  p.page_block_size = l.page_block_size;
  p.block_stride = l.block_stride;
  p.token_stride = l.token_stride;
  p.out = out;
  return p;
}

// num_tokens rows of head_dim bfloat16 values, row_stride elements apart (NaN in between).
// Every 64-value group (64 divides both formats' scale groups) gets its own magnitude
// 2^U(-40, 40), and some groups are special: all zeros, an amax of exactly 448 * 2^k (scale
// exactly a power of two), huge (~2^120) or tiny (~2^-120) values, or many exact zeros.
inline std::vector<uint16_t> random_tokens(int num_tokens, int head_dim, int64_t row_stride,
                                           std::mt19937& rng) {
  std::vector<uint16_t> tokens(size_t(std::max(num_tokens, 1)) * row_stride, 0x7fc0);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> exponent(-40, 40);
  std::uniform_int_distribution<int> kind(0, 11);
  for (int t = 0; t < num_tokens; ++t) {
    uint16_t* row = tokens.data() + size_t(t) * row_stride;
    for (int first = 0; first < head_dim; first += 64) {
      const int k = kind(rng);
      const int e = exponent(rng);
      const float magnitude = k == 0   ? 0.f
                              : k == 1 ? std::ldexp(1.f, 120)
                              : k == 2 ? std::ldexp(1.f, -120)
                                       : std::ldexp(1.f, e);
      for (int i = first; i < first + 64; ++i) {
        const bool zero = k == 3 && (rng() % 2 == 0);
        row[i] = reference::float_to_bf16_bits(zero ? 0.f : normal(rng) * magnitude);
      }
      if (k == 4) {  // amax exactly 448 * 2^e (the others are ~2^e): the rule's exact case
        const float amax = std::ldexp(448.f, e);
        row[first + int(rng() % 64)] = reference::float_to_bf16_bits(rng() % 2 ? amax : -amax);
      }
    }
  }
  return tokens;
}

// num_tokens slots: distinct valid slots of [0, num_slots) (num_tokens <= num_slots), about a
// sixth of them replaced by -1 and a twelfth by other values outside the range.
inline std::vector<int64_t> random_slot_mapping(int num_tokens, int64_t num_slots,
                                                std::mt19937& rng) {
  std::vector<int64_t> all(static_cast<size_t>(num_slots));
  std::iota(all.begin(), all.end(), int64_t(0));
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int64_t> slots(all.begin(), all.begin() + num_tokens);
  const int64_t invalid[] = {num_slots,
                             num_slots + 1,
                             -2,
                             std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max(),
                             int64_t(1) << 40};
  for (int64_t& slot : slots) {
    const unsigned r = rng() % 12;
    if (r < 2) slot = -1;
    if (r == 2) slot = invalid[rng() % std::size(invalid)];
  }
  return slots;
}

}  // namespace flashmla::testing
