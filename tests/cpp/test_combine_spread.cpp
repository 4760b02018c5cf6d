// The combine's spreading request (kernels/common/combine_spread.h): with it, ceil(blocks /
// SMs) blocks fit in an SM's shared memory and one more does not, for every grid size where
// that count is below the SM's block and thread limits; none is asked for elsewhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

#include "kernels/common/combine_spread.h"

namespace flashmla {
namespace {

detail::DeviceLimits h100_limits() {
  detail::DeviceLimits limits;
  limits.sm_count = 132;
  limits.threads_per_sm = 2048;
  limits.blocks_per_sm = 32;
  limits.shared_per_sm = 233472;
  limits.shared_reserved_per_block = 1024;
  limits.shared_per_block_optin = 232448;
  return limits;
}

TEST(CombineSpread, ExactlyTheOrdinaryCountFitsPerSm) {
  const detail::DeviceLimits limits = h100_limits();
  for (int threads : {128, 256, 1024}) {
    for (int static_shared : {0, 16384}) {
      const int fit =
          std::min({limits.blocks_per_sm, limits.threads_per_sm / threads,
                    limits.shared_per_sm / (static_shared + limits.shared_reserved_per_block)});
      for (int64_t blocks = 1; blocks <= int64_t(fit + 2) * limits.sm_count; ++blocks) {
        const int bytes =
            kernels::combine_spread_shared_bytes(blocks, threads, static_shared, limits);
        const int64_t per_sm = (blocks + limits.sm_count - 1) / limits.sm_count;
        if (per_sm >= fit) {
          EXPECT_EQ(bytes, 0) << blocks << " blocks of " << threads;
          continue;
        }
        ASSERT_GT(bytes, 0) << blocks << " blocks of " << threads;
        const int64_t per_block = bytes + static_shared + limits.shared_reserved_per_block;
        EXPECT_LE(bytes + static_shared, limits.shared_per_block_optin);
        EXPECT_LE(per_sm * per_block, limits.shared_per_sm) << blocks << " blocks";
        EXPECT_GT((per_sm + 1) * per_block, limits.shared_per_sm) << blocks << " blocks";
      }
    }
  }
}

TEST(CombineSpread, KnownGrids) {
  const detail::DeviceLimits limits = h100_limits();
  // Sparse decode b 2 (h_q 128, s_q 2): 128 four-warp blocks, one a SM.
  EXPECT_EQ(kernels::combine_spread_shared_bytes(128, 128, 0, limits), 232448);
  // Two a SM: 114 KB a block with its reserved KB.
  EXPECT_EQ(kernels::combine_spread_shared_bytes(200, 128, 0, limits), 233472 / 2 - 1024);
  // Dense b 1: a block of 8 warps a row, 16 KB of its own.
  EXPECT_EQ(kernels::combine_spread_shared_bytes(128, 256, 16384, limits), 232448 - 16384);
  // b 128 rows: more blocks than an SM holds anyway.
  EXPECT_EQ(kernels::combine_spread_shared_bytes(4096, 256, 0, limits), 0);
}

}  // namespace
}  // namespace flashmla
