// FastDivisor (the kernels' page-size division) against the / operator: every divisor up to
// 4096 and FlashMLA's test page sizes, on the numerators near every multiple, the ends of the
// 31-bit range and random values; the host path runs the same arithmetic as the device one.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/common/fast_divisor.h"

namespace flashmla {
namespace {

void check_divisor(uint32_t d, std::mt19937& rng) {
  const FastDivisor divisor(d);
  ASSERT_EQ(divisor.divisor, d);
  const uint32_t max_n = (uint32_t(1) << 31) - 1;
  std::vector<uint32_t> numerators = {0, 1, d - 1, d, d + 1, max_n, max_n - 1, max_n - d};
  // Around the largest multiples below 2^31 and a few small ones.
  const uint32_t top = max_n / d * d;
  for (uint32_t m : {top, top - d, d * 2, d * 3}) {
    numerators.push_back(m - 1);
    numerators.push_back(m);
    numerators.push_back(m + 1 <= max_n ? m + 1 : m);
  }
  std::uniform_int_distribution<uint32_t> any(0, max_n);
  for (int i = 0; i < 64; ++i) numerators.push_back(any(rng));
  for (uint32_t n : numerators) {
    if (n > max_n) continue;
    ASSERT_EQ(divisor.quotient(n), n / d) << "n " << n << " d " << d;
  }
}

TEST(FastDivisor, MatchesDivisionForSmallDivisors) {
  std::mt19937 rng(7);
  for (uint32_t d = 1; d <= 4096; ++d) check_divisor(d, rng);
}

TEST(FastDivisor, MatchesDivisionForLargeDivisors) {
  std::mt19937 rng(11);
  for (uint32_t d : {65535u, 65536u, 65537u, 1000003u, (1u << 24) + 1, (1u << 30) - 1, 1u << 30,
                     (1u << 30) + 1, (1u << 31) - 1}) {
    check_divisor(d, rng);
  }
}

TEST(FastDivisor, EveryNumeratorForTestPageSizes) {
  // FlashMLA's test page sizes: every numerator of the first 2^20.
  for (uint32_t d : {1u, 2u, 53u, 61u, 64u, 69u, 256u, 576u}) {
    const FastDivisor divisor(d);
    for (uint32_t n = 0; n < (1u << 20); ++n)
      ASSERT_EQ(divisor.quotient(n), n / d) << n << " " << d;
  }
}

}  // namespace
}  // namespace flashmla
