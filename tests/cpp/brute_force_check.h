// How the sparse reference tests compare the CPU reference's float results (rounded from
// double) with a long-double brute force: one float rounding plus double accumulation error.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <vector>

namespace flashmla::testing {

inline bool close_to_brute_force(float got, long double want) {
  if (std::isinf(want)) return got == static_cast<float>(want);
  return std::fabs(got - want) <= 1.5e-7L * std::fabs(want) + 1e-12L;
}

// Adds a failure for each element of `got` not close to `want`, while `failures` (shared by
// the tensors of one comparison) stays below 10.
inline void expect_close_to_brute_force(const char* name, const std::vector<float>& got,
                                        const std::vector<long double>& want, int& failures) {
  ASSERT_EQ(got.size(), want.size()) << name;
  for (size_t e = 0; e < want.size() && failures < 10; ++e) {
    if (!close_to_brute_force(got[e], want[e])) {
      ADD_FAILURE() << name << "[" << e << "] = " << got[e] << ", brute force " << double(want[e]);
      ++failures;
    }
  }
}

}  // namespace flashmla::testing
