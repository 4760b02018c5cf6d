// The FP8 KV-cache tools on the host (write_kv_cache_host / dequantize_kv_cache_host, the twins
// that the GPU tests compare the kernels with byte for byte): the round trip stays within the
// e4m3 rounding bound with the scale the rule prescribes, hand-computed tokens give exactly the
// expected bytes, the scale rule's corner cases, and the layout details (MODEL1 pad byte and
// block padding, gaps between tokens and blocks, skipped slots) leave every other byte alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "kernels/common/fp8_convert.h"
#include "kernels/common/kv_cache_token.h"
#include "kv_cache_case.h"
#include "reference/half_convert.h"
#include "reference/kv_cache_reference.h"

namespace flashmla {
namespace {

using reference::bf16_bits_to_float;
using reference::float_to_bf16_bits;
using testing::KVCacheLayout;
using testing::make_dequantize_params;
using testing::make_kv_cache_layout;
using testing::make_write_params;

// The API needs 16-byte aligned kv, cache and out pointers: vectors give that.
static_assert(__STDCPP_DEFAULT_NEW_ALIGNMENT__ >= 16);

constexpr uint8_t kSentinel = 0xa5;
constexpr KVCacheFormat kFp8Formats[] = {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1};
constexpr KVCacheFormat kAllFormats[] = {KVCacheFormat::kBFloat16, KVCacheFormat::kFp8V32,
                                         KVCacheFormat::kFp8Model1};

int nope_dim(KVCacheFormat f) {
  return f == KVCacheFormat::kFp8V32 ? kFp8V32NopeDim : kFp8Model1NopeDim;
}
int tile_size(KVCacheFormat f) {
  return f == KVCacheFormat::kFp8V32 ? kFp8V32TileSize : kFp8Model1TileSize;
}

// The scale rule computed independently of fp8_convert.h: in double, with frexp. (amax is a
// bfloat16, so amax / 448 is never within float rounding of a power of two unless it is one.)
double expected_scale(double amax) {
  const double wanted = std::max(amax / 448.0, 1e-4);
  int exponent = 0;
  const double mantissa = std::frexp(wanted, &exponent);  // wanted = mantissa * 2^exponent
  return std::ldexp(1.0, mantissa == 0.5 ? exponent - 1 : exponent);
}

// Offset of token `slot`'s data row / scale bytes in a cache.
int64_t row_offset(const KVCacheLayout& l, int64_t slot) {
  const int64_t block = slot / l.page_block_size, row = slot % l.page_block_size;
  return block * l.block_stride +
         row * (l.format == KVCacheFormat::kFp8Model1 ? kFp8Model1RowBytes : l.token_stride);
}
int64_t model1_scale_offset(const KVCacheLayout& l, int64_t slot) {
  const int64_t block = slot / l.page_block_size, row = slot % l.page_block_size;
  return block * l.block_stride + int64_t(l.page_block_size) * kFp8Model1RowBytes +
         row * kFp8Model1ScaleRowBytes;
}

// The scale of group g of token `slot` as stored in the cache.
double stored_scale(const KVCacheLayout& l, const std::vector<uint8_t>& cache, int64_t slot,
                    int g) {
  if (l.format == KVCacheFormat::kFp8V32) {
    float scale;
    std::memcpy(&scale, cache.data() + row_offset(l, slot) + kFp8V32ScaleOffset + 4 * g, 4);
    return scale;
  }
  return std::ldexp(1.0, int(cache[model1_scale_offset(l, slot) + g]) - 127);
}

std::vector<uint8_t> write_host(const KVCacheLayout& l, const std::vector<uint16_t>& kv,
                                int64_t kv_stride, const std::vector<int64_t>& slots,
                                uint8_t fill = kSentinel) {
  std::vector<uint8_t> cache(l.bytes(), fill);
  write_kv_cache_host(
      make_write_params(l, kv.data(), kv_stride, int(slots.size()), slots.data(), cache.data()));
  return cache;
}

std::vector<uint16_t> dequantize_host(const KVCacheLayout& l, const std::vector<uint8_t>& cache) {
  std::vector<uint16_t> out(size_t(l.num_slots()) * l.head_dim_qk, 0xdead);
  dequantize_kv_cache_host(make_dequantize_params(l, cache.data(), out.data()));
  return out;
}

TEST(KVCacheHost, RoundTripWithinTheE4m3Bound) {
  for (const KVCacheFormat format : kFp8Formats) {
    SCOPED_TRACE(to_string(format));
    std::mt19937 rng(1234);
    const int d = testing::test_head_dim(format), d_nope = nope_dim(format);
    const KVCacheLayout l = make_kv_cache_layout(format, d, 7, 5, /*token_gap=*/32,
                                                 /*block_gap=*/48);
    const int num_tokens = int(l.num_slots());
    const int64_t kv_stride = d + 24;
    const std::vector<uint16_t> kv = testing::random_tokens(num_tokens, d, kv_stride, rng);
    std::vector<int64_t> slots(num_tokens);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    const std::vector<uint8_t> cache = write_host(l, kv, kv_stride, slots);
    const std::vector<uint16_t> out = dequantize_host(l, cache);

    int64_t subnormal_values = 0, zero_groups = 0;
    for (int t = 0; t < num_tokens; ++t) {
      const uint16_t* x = kv.data() + t * kv_stride;
      const uint16_t* y = out.data() + slots[t] * d;
      for (int first = 0; first < d_nope; first += tile_size(format)) {
        double amax = 0;
        for (int i = first; i < first + tile_size(format); ++i) {
          amax = std::max(amax, std::fabs(double(bf16_bits_to_float(x[i]))));
        }
        zero_groups += amax == 0;
        const double scale = expected_scale(amax);
        ASSERT_EQ(stored_scale(l, cache, slots[t], first / tile_size(format)), scale)
            << "token " << t << " group " << first / tile_size(format) << " amax " << amax;
        for (int i = first; i < first + tile_size(format); ++i) {
          const double v = bf16_bits_to_float(x[i]), got = bf16_bits_to_float(y[i]);
          // e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 of the value for normals
          // (|v / scale| >= 2^-6) and 2^-10 (half the subnormal step 2^-9) below, in units of
          // the scale. float(e4m3) * scale has 4 significant bits, so its bfloat16 rounding is
          // exact and adds nothing.
          const bool subnormal = std::fabs(v) / scale < 0x1p-6;
          subnormal_values += subnormal && v != 0;
          const double bound = subnormal ? 0x1p-10 * scale : 0x1p-4 * std::fabs(v);
          ASSERT_LE(std::fabs(got - v), bound)
              << "token " << t << " value " << i << ": " << v << " -> " << got;
        }
      }
      for (int i = d_nope; i < d; ++i) ASSERT_EQ(y[i], x[i]) << "RoPE value " << i;
    }
    EXPECT_GT(subnormal_values, 0) << "the data should reach e4m3's subnormal range";
    EXPECT_GT(zero_groups, 0) << "the data should have all-zero groups";
  }
}

TEST(KVCacheHost, ScaleRuleCorners) {
  using fp8::quantization_scale;
  EXPECT_EQ(quantization_scale(0.f), 0x1p-13f);  // max(0, 1e-4) rounded up: 2^-13 = 1.22e-4
  EXPECT_EQ(quantization_scale(448.f * 1e-4f), 0x1p-13f);
  EXPECT_EQ(quantization_scale(448.f * 0x1p-13f), 0x1p-13f);  // exactly 2^-13: kept
  EXPECT_EQ(quantization_scale(448.f * 0x1p-14f), 0x1p-13f);  // below the clamp
  EXPECT_EQ(quantization_scale(1.f), 0x1p-8f);                // 1/448 = 2.23e-3 -> 2^-8
  EXPECT_EQ(quantization_scale(448.f), 1.f);                  // exact power of two: kept
  EXPECT_EQ(quantization_scale(450.f), 2.f);                  // just above: the next one
  EXPECT_EQ(quantization_scale(448.f * 0x1p20f), 0x1p20f);
  EXPECT_EQ(quantization_scale(std::numeric_limits<float>::infinity()), 0x1p127f);
  EXPECT_EQ(quantization_scale(std::numeric_limits<float>::max()), 0x1p120f);  // 2^128 / 448
  // group_scale takes bfloat16 magnitude bits: the same rule.
  EXPECT_EQ(kv_cache::group_scale(float_to_bf16_bits(1.f)), 0x1p-8f);
  EXPECT_EQ(kv_cache::group_scale(0), 0x1p-13f);
  // Every scale the rule can give has an exact reciprocal, including 2^127 (-> subnormal).
  for (int e = -13; e <= 127; ++e) {
    const float scale = std::ldexp(1.f, e);
    EXPECT_EQ(kv_cache::exact_reciprocal(scale), 1.f / scale) << "2^" << e;
  }
  // Quantizing with the reciprocal is the division: on every bf16 value and a few scales.
  for (const int e : {-13, -8, 0, 7, 30, 120, 127}) {
    const float scale = std::ldexp(1.f, e), inverse = kv_cache::exact_reciprocal(scale);
    for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
      const float value = bf16_bits_to_float(uint16_t(bits));
      if (std::isnan(value) || std::fabs(value) / scale > 448.f) continue;
      ASSERT_EQ(kv_cache::quantize_value(uint16_t(bits), inverse),
                fp8::float_to_e4m3(value / scale))
          << "bits " << bits << " scale 2^" << e;
    }
  }
}

// One token of a format whose NoPE groups are filled by `group_values(g, i)` (i within the
// group) and RoPE values 0.5 * (i + 1), written to slot 0 of a one-token block.
struct HandToken {
  KVCacheLayout layout;
  std::vector<uint16_t> kv;
  std::vector<uint8_t> cache;
};

template <class GroupValues>
HandToken write_hand_token(KVCacheFormat format, GroupValues group_values) {
  HandToken h;
  const int d = testing::test_head_dim(format);
  h.layout = make_kv_cache_layout(format, d, 1, 1);
  h.kv.assign(d, 0);
  for (int i = 0; i < nope_dim(format); ++i) {
    h.kv[i] = float_to_bf16_bits(group_values(i / tile_size(format), i % tile_size(format)));
  }
  for (int i = nope_dim(format); i < d; ++i) {
    h.kv[i] = float_to_bf16_bits(0.5f * float(i - nope_dim(format) + 1));
  }
  h.cache = write_host(h.layout, h.kv, d, {0});
  return h;
}

// Group 1's values (amax 448, scale 1) and their e4m3 bytes, worked out by hand.
struct ValueByte {
  float value;
  uint8_t byte;
};
constexpr ValueByte kScaleOneValues[] = {
    {448.f, 0x7e},        // the largest finite e4m3: exponent 15, mantissa 6
    {-448.f, 0xfe},       //
    {1.f, 0x38},          // exponent 7 (bias 7)
    {0.5f, 0x30},         //
    {-2.f, 0xc0},         //
    {1.125f, 0x39},       // 1 + 1/8: one mantissa step
    {1.0625f, 0x38},      // halfway between 1 and 1.125: ties to even (1)
    {1.1875f, 0x3a},      // halfway between 1.125 and 1.25: ties to even (1.25)
    {0x1p-6f, 0x08},      // the smallest normal
    {0x1p-9f, 0x01},      // the smallest subnormal
    {3 * 0x1p-9f, 0x03},  //
    {0x1p-11f, 0x00},     // a quarter of the smallest subnormal: rounds to 0
    {0.f, 0x00},          //
    {-0.f, 0x80},         // the sign of zero is kept
};
constexpr int kNumScaleOneValues = int(std::size(kScaleOneValues));

TEST(KVCacheHost, V32HandComputedToken) {
  // Group 0: all 1.0 -> scale 2^-8, 1 / 2^-8 = 256 -> 0x78. Group 1: kScaleOneValues, padded
  // with 1.0 -> scale 1. Group 2: all zeros -> scale 2^-13, bytes 0. Group 3: 2^-7 and
  // 3 * 2^-8 (amax / 448 = 2.6e-5 < 1e-4) -> scale 2^-13: 2^6 -> 0x68, 96 -> 0x6c.
  const HandToken h = write_hand_token(KVCacheFormat::kFp8V32, [](int g, int i) {
    if (g == 0) return 1.f;
    if (g == 1) return i < kNumScaleOneValues ? kScaleOneValues[i].value : 1.f;
    if (g == 2) return 0.f;
    return i % 2 ? 0x1p-7f : 3 * 0x1p-8f;
  });
  ASSERT_EQ(h.cache.size(), size_t(kFp8V32TokenBytes));
  const uint8_t* row = h.cache.data();
  for (int i = 0; i < 128; ++i) EXPECT_EQ(row[i], 0x78) << i;
  for (int i = 0; i < 128; ++i) {
    EXPECT_EQ(row[128 + i], i < kNumScaleOneValues ? kScaleOneValues[i].byte : 0x38) << i;
  }
  for (int i = 0; i < 128; ++i) EXPECT_EQ(row[256 + i], 0x00) << i;
  for (int i = 0; i < 128; ++i) EXPECT_EQ(row[384 + i], i % 2 ? 0x68 : 0x6c) << i;
  // float32 scales, little-endian: 2^-8 = 0x3b800000, 1 = 0x3f800000, 2^-13 = 0x39000000.
  const uint8_t scales[16] = {0, 0, 0x80, 0x3b, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x39, 0, 0, 0, 0x39};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(row[kFp8V32ScaleOffset + i], scales[i]) << i;
  EXPECT_EQ(std::memcmp(row + kFp8V32RopeOffset, h.kv.data() + kFp8V32NopeDim, 128), 0);

  // And back: bfloat16(float(e4m3) * scale).
  uint16_t out[kFp8V32HeadDim];
  reference::dequantize_token_host(KVCacheFormat::kFp8V32, 576, row, 1, 0, kFp8V32TokenBytes, out);
  EXPECT_EQ(bf16_bits_to_float(out[0]), 1.f);
  for (int i = 0; i < kNumScaleOneValues; ++i) {
    const float v = kScaleOneValues[i].value;
    const float expected = v == 1.0625f ? 1.f : v == 1.1875f ? 1.25f : v == 0x1p-11f ? 0.f : v;
    EXPECT_EQ(bf16_bits_to_float(out[128 + i]), expected) << i;
  }
  EXPECT_EQ(out[256], 0);
  EXPECT_EQ(bf16_bits_to_float(out[384]), 3 * 0x1p-8f);
  EXPECT_EQ(bf16_bits_to_float(out[385]), 0x1p-7f);
  for (int i = kFp8V32NopeDim; i < kFp8V32HeadDim; ++i) EXPECT_EQ(out[i], h.kv[i]) << i;
}

TEST(KVCacheHost, Model1HandComputedToken) {
  // e8m0 byte = 127 + log2(scale). Group 0: 1.0 -> 2^-8 (0x77), 0x78. Group 1: scale 1 (0x7f).
  // Group 2: zeros -> 2^-13 (0x72). Group 3: amax 450 -> scale 2: 450 / 2 = 225 -> 224 (0x76).
  // Group 4: 2^20 -> 2^20 / 448 -> 2^12 (0x8b): 2^20 / 2^12 = 256 -> 0x78. Group 5: -3 ->
  // 3 / 448 -> 2^-7 (0x78): -3 / 2^-7 = -384 -> 0xfc. Group 6: like group 1.
  const HandToken h = write_hand_token(KVCacheFormat::kFp8Model1, [](int g, int i) {
    switch (g) {
      case 0:
        return 1.f;
      case 2:
        return 0.f;
      case 3:
        return 450.f;
      case 4:
        return 0x1p20f;
      case 5:
        return -3.f;
      default:
        return i < kNumScaleOneValues ? kScaleOneValues[i].value : 1.f;
    }
  });
  const int64_t padded = kv_cache_min_block_bytes(KVCacheFormat::kFp8Model1, 1, 512);
  ASSERT_EQ(padded, 2 * 576);  // 584 bytes of one token, padded to a multiple of 576
  ASSERT_EQ(h.cache.size(), size_t(padded));
  const uint8_t* row = h.cache.data();
  const uint8_t value_bytes[7] = {0x78, 0, 0x00, 0x76, 0x78, 0xfc, 0};
  for (int g = 0; g < 7; ++g) {
    for (int i = 0; i < 64; ++i) {
      const uint8_t expected = (g == 1 || g == 6)
                                   ? (i < kNumScaleOneValues ? kScaleOneValues[i].byte : 0x38)
                                   : value_bytes[g];
      EXPECT_EQ(row[g * 64 + i], expected) << "group " << g << " value " << i;
    }
  }
  EXPECT_EQ(std::memcmp(row + kFp8Model1RopeOffset, h.kv.data() + kFp8Model1NopeDim, 128), 0);
  const uint8_t scales[8] = {0x77, 0x7f, 0x72, 0x80, 0x8b, 0x78, 0x7f, 0x00};  // + pad byte 0
  for (int i = 0; i < 8; ++i) EXPECT_EQ(row[kFp8Model1RowBytes + i], scales[i]) << i;
  for (int64_t i = kFp8Model1RowBytes + 8; i < padded; ++i) {
    ASSERT_EQ(row[i], kSentinel) << "block padding byte " << i << " was written";
  }

  uint16_t out[kFp8Model1HeadDim];
  reference::dequantize_token_host(KVCacheFormat::kFp8Model1, 512, row, 1, 0, 0, out);
  EXPECT_EQ(bf16_bits_to_float(out[0]), 1.f);
  EXPECT_EQ(bf16_bits_to_float(out[64]), 448.f);
  EXPECT_EQ(out[128], 0);
  EXPECT_EQ(bf16_bits_to_float(out[192]), 448.f);  // 224 * 2
  EXPECT_EQ(bf16_bits_to_float(out[256]), 0x1p20f);
  EXPECT_EQ(bf16_bits_to_float(out[320]), -3.f);
  for (int i = kFp8Model1NopeDim; i < kFp8Model1HeadDim; ++i) EXPECT_EQ(out[i], h.kv[i]) << i;
}

TEST(KVCacheHost, Model1PadBytesAndBlockPaddingAreExact) {
  // page 3: 3 * 584 = 1752 bytes used, padded to 2304; plus a 64-byte gap between blocks.
  std::mt19937 rng(7);
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8Model1, 512, 4, 3, 0, 64);
  ASSERT_EQ(l.block_stride, 2304 + 64);
  const std::vector<int64_t> slots = {0, 1, 2, 6, 8};  // block 0 full, block 2 in part
  const std::vector<uint16_t> kv = testing::random_tokens(int(slots.size()), 512, 512, rng);
  const std::vector<uint8_t> cache = write_host(l, kv, 512, slots);
  for (const int64_t slot : slots) {
    EXPECT_EQ(cache[model1_scale_offset(l, slot) + 7], 0) << "pad byte of slot " << slot;
  }
  // Every byte outside the written rows keeps the sentinel: blocks 1 and 3 entirely, row 1 of
  // block 2, the padding after 3 * 584 bytes and the gap of every block.
  std::vector<bool> written(cache.size(), false);
  for (const int64_t slot : slots) {
    for (int i = 0; i < kFp8Model1RowBytes; ++i) written[row_offset(l, slot) + i] = true;
    for (int i = 0; i < 8; ++i) written[model1_scale_offset(l, slot) + i] = true;
  }
  for (size_t i = 0; i < cache.size(); ++i) {
    if (!written[i]) {
      ASSERT_EQ(cache[i], kSentinel) << "byte " << i << " was written";
    }
  }
}

TEST(KVCacheHost, SkippedSlotsLeaveTheCacheUnchanged) {
  for (const KVCacheFormat format : kAllFormats) {
    SCOPED_TRACE(to_string(format));
    std::mt19937 rng(99);
    const int d = testing::test_head_dim(format);
    const KVCacheLayout l = make_kv_cache_layout(format, d, 3, 4, 16, 32);
    const int64_t n = l.num_slots();
    const std::vector<int64_t> invalid = {
        -1, n, n + 5, -2, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
    const std::vector<uint16_t> kv = testing::random_tokens(12, d, d, rng);
    const std::vector<uint8_t> untouched(l.bytes(), kSentinel);
    EXPECT_EQ(write_host(l, kv, d, invalid), untouched) << "no slot is valid: nothing is written";

    // A mix: the same bytes as writing only the valid tokens.
    const std::vector<int64_t> mixed = {5, -1, 0, n, 11, -1, 3, -7};
    std::vector<uint16_t> valid_kv;
    std::vector<int64_t> valid_slots;
    for (size_t t = 0; t < mixed.size(); ++t) {
      if (mixed[t] < 0 || mixed[t] >= n) continue;
      valid_kv.insert(valid_kv.end(), kv.begin() + t * d, kv.begin() + (t + 1) * d);
      valid_slots.push_back(mixed[t]);
    }
    const std::vector<uint8_t> cache = write_host(l, kv, d, mixed);
    EXPECT_EQ(cache, write_host(l, valid_kv, d, valid_slots));
    EXPECT_NE(cache, untouched);
  }
}

TEST(KVCacheHost, ZeroTokensIsANoOp) {
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8V32, 576, 2, 2);
  std::vector<uint8_t> cache(l.bytes(), kSentinel);
  // Empty kv and slot_mapping may be null.
  write_kv_cache_host(make_write_params(l, nullptr, 576, 0, nullptr, cache.data()));
  EXPECT_EQ(cache, std::vector<uint8_t>(l.bytes(), kSentinel));
}

TEST(KVCacheHost, BFloat16CacheIsACopy) {
  for (const int d : {576, 512}) {
    std::mt19937 rng(d);
    const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kBFloat16, d, 3, 5, 32, 16);
    std::vector<int64_t> slots(size_t(l.num_slots()));
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    const std::vector<uint16_t> kv = testing::random_tokens(int(slots.size()), d, d + 8, rng);
    const std::vector<uint8_t> cache = write_host(l, kv, d + 8, slots);
    const std::vector<uint16_t> out = dequantize_host(l, cache);
    for (size_t t = 0; t < slots.size(); ++t) {
      ASSERT_EQ(std::memcmp(out.data() + slots[t] * d, kv.data() + t * (d + 8), size_t(d) * 2), 0)
          << "token " << t;
      ASSERT_EQ(std::memcmp(cache.data() + row_offset(l, slots[t]), kv.data() + t * (d + 8),
                            size_t(d) * 2),
                0);
    }
    // The 32-byte gaps between rows and the 16-byte gap after each block are untouched.
    for (int64_t slot = 0; slot < l.num_slots(); ++slot) {
      if (slot % l.page_block_size == l.page_block_size - 1) continue;  // no gap after it
      for (int i = 2 * d; i < 2 * d + 32; ++i) ASSERT_EQ(cache[row_offset(l, slot) + i], kSentinel);
    }
    for (int b = 0; b < l.num_blocks; ++b) {
      for (int64_t i = l.block_stride - 16; i < l.block_stride; ++i) {
        ASSERT_EQ(cache[b * l.block_stride + i], kSentinel);
      }
    }
  }
}

TEST(KVCacheHost, NaNValuesStoreTheE4m3NaNOfTheirSign) {
  // Defined so that host and device agree (a GPU multiply would drop the sign of a NaN).
  std::vector<uint16_t> kv(576, float_to_bf16_bits(1.f));
  kv[3] = 0x7fc0;    // NaN
  kv[200] = 0xffc1;  // -NaN with a payload
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8V32, 576, 1, 1);
  const std::vector<uint8_t> cache = write_host(l, kv, 576, {0});
  EXPECT_EQ(cache[3], 0x7f);
  EXPECT_EQ(cache[200], 0xff);
  // A NaN amax gives the smallest scale (2^-13), so the group's other values saturate (1.0 ->
  // 448); groups without a NaN are unaffected (1.0 -> scale 2^-8, 0x78).
  EXPECT_EQ(cache[0], 0x7e);
  EXPECT_EQ(cache[128], 0x7e);  // group 1 has the -NaN
  EXPECT_EQ(cache[300], 0x78);
  const uint8_t two_to_minus_13[4] = {0, 0, 0, 0x39};
  EXPECT_EQ(std::memcmp(cache.data() + kFp8V32ScaleOffset, two_to_minus_13, 4), 0);
}

TEST(KVCacheHost, LastWriteOfASlotWins) {
  // Documented host behaviour for duplicate slots (the device leaves it unspecified).
  std::mt19937 rng(3);
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8V32, 576, 1, 2);
  const std::vector<uint16_t> kv = testing::random_tokens(2, 576, 576, rng);
  const std::vector<uint16_t> second(kv.begin() + 576, kv.end());
  EXPECT_EQ(write_host(l, kv, 576, {1, 1}), write_host(l, second, 576, {1}));
}

}  // namespace
}  // namespace flashmla
