// bf16/fp16 <-> float conversions used by the reference and the tests: exhaustive round trips
// and round-to-nearest-even at every midpoint between neighbouring 16-bit values.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "reference/half_convert.h"

namespace flashmla::reference {
namespace {

bool is_nan_bits(ScalarType type, uint16_t bits) {
  const uint16_t magnitude = bits & 0x7fff;
  return type == ScalarType::kFloat16 ? magnitude > 0x7c00 : magnitude > 0x7f80;
}

class HalfConvert : public ::testing::TestWithParam<ScalarType> {};

TEST_P(HalfConvert, EveryValueRoundTrips) {
  const ScalarType type = GetParam();
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = half_bits_to_float(type, uint16_t(bits));
    const uint16_t back = float_to_half_bits(type, value);
    if (is_nan_bits(type, uint16_t(bits))) {
      ASSERT_TRUE(std::isnan(value)) << std::hex << bits;
      ASSERT_TRUE(is_nan_bits(type, back)) << std::hex << bits;
    } else {
      ASSERT_EQ(back, bits) << std::hex << bits;
    }
  }
}

// Between two neighbouring finite values (both exact in float, and so is their midpoint):
// the midpoint goes to the one with an even mantissa, anything nearer goes to the nearer.
TEST_P(HalfConvert, RoundsToNearestEven) {
  const ScalarType type = GetParam();
  const uint16_t largest_finite = type == ScalarType::kFloat16 ? 0x7bff : 0x7f7f;
  for (uint32_t low = 0; low <= largest_finite; ++low) {
    const uint16_t high = uint16_t(low + 1);
    const double a = half_bits_to_float(type, uint16_t(low));
    const double b = half_bits_to_float(type, high);  // inf after the largest finite value
    const double gap = std::isinf(b) ? a - half_bits_to_float(type, uint16_t(low - 1)) : b - a;
    const float midpoint = static_cast<float>(a + gap / 2);
    const uint16_t even = (low & 1) ? high : uint16_t(low);
    for (const float sign : {1.f, -1.f}) {
      const uint16_t sign_bit = sign < 0 ? 0x8000 : 0;
      ASSERT_EQ(float_to_half_bits(type, sign * midpoint), even | sign_bit) << std::hex << low;
      const float below = std::nextafter(midpoint, 0.f);
      const float above = std::nextafter(midpoint, std::numeric_limits<float>::infinity());
      ASSERT_EQ(float_to_half_bits(type, sign * below), low | sign_bit) << std::hex << low;
      ASSERT_EQ(float_to_half_bits(type, sign * above), high | sign_bit) << std::hex << low;
    }
  }
}

TEST_P(HalfConvert, SpecialValues) {
  const ScalarType type = GetParam();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(half_bits_to_float(type, float_to_half_bits(type, inf)), inf);
  EXPECT_EQ(half_bits_to_float(type, float_to_half_bits(type, -inf)), -inf);
  EXPECT_TRUE(std::isnan(half_bits_to_float(type, float_to_half_bits(type, std::nanf("")))));
  EXPECT_EQ(float_to_half_bits(type, -0.f), 0x8000);
  EXPECT_EQ(float_to_half_bits(type, std::numeric_limits<float>::max()),
            type == ScalarType::kFloat16 ? 0x7c00 : 0x7f80);
  // The smallest float subnormal is far below both types' smallest value: rounds to 0.
  EXPECT_EQ(float_to_half_bits(type, std::numeric_limits<float>::denorm_min()), 0);
}

INSTANTIATE_TEST_SUITE_P(Types, HalfConvert,
                         ::testing::Values(ScalarType::kBFloat16, ScalarType::kFloat16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(HalfConvertKnownBits, Fp16) {
  EXPECT_EQ(float_to_fp16_bits(1.f), 0x3c00);
  EXPECT_EQ(float_to_fp16_bits(65504.f), 0x7bff);
  EXPECT_EQ(float_to_fp16_bits(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16_bits(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(fp16_bits_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_bits_to_float(0x03ff), 0x3ffp-24f);
  EXPECT_EQ(fp16_bits_to_float(0xc000), -2.f);
}

TEST(HalfConvertKnownBits, Bf16) {
  EXPECT_EQ(float_to_bf16_bits(1.f), 0x3f80);
  EXPECT_EQ(float_to_bf16_bits(-2.f), 0xc000);
  EXPECT_EQ(bf16_bits_to_float(0x0001), std::bit_cast<float>(0x00010000u));  // subnormal
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie to even
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie to even
}

}  // namespace
}  // namespace flashmla::reference
