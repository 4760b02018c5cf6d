// Division by a runtime divisor fixed for a whole launch (a page size) as a multiply-high, an
// add and a shift (Granlund & Montgomery, "Division by invariant integers using
// multiplication", 1994, section 4), instead of the ~20-instruction dependent chain nvcc emits
// for a 32-bit division. The divisor is prepared on the host once per launch.
#pragma once

#include <cstdint>

#include "kernels/common/host_device.h"

namespace flashmla {

struct FastDivisor {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;  // floor(2^32 (2^shift - divisor) / divisor) + 1
  uint32_t shift = 0;       // ceil(log2(divisor))

  FastDivisor() = default;
  // 1 <= d < 2^31.
  explicit FastDivisor(uint32_t d) : divisor(d) {
    while ((uint64_t(1) << shift) < d) ++shift;
    multiplier = uint32_t(((uint64_t(1) << shift) - d) * (uint64_t(1) << 32) / d + 1);
  }

  // n / divisor for 0 <= n < 2^31 (so that the add cannot overflow).
  FLASHMLA_HD_INLINE uint32_t quotient(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(n, multiplier);
#else
    const uint32_t high = uint32_t((uint64_t(n) * multiplier) >> 32);
#endif
    return (high + n) >> shift;
  }
};

}  // namespace flashmla
