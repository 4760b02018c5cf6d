// How much unused dynamic shared memory the combine asks for, so that the blocks its early
// (programmatic dependent) launch places on the first SMs the decode kernel frees are no more
// per SM than an ordinary launch would place: ceil(blocks / SMs).
#pragma once

#include <algorithm>
#include <cstdint>

#include "api/device_limits.h"

namespace flashmla::kernels {

// 0 where ceil(blocks / SMs) blocks of `threads` threads, with `static_shared` bytes of shared
// memory of their own, reach an SM's block, thread or shared-memory limit anyway; else the
// largest request with which that many blocks, and no more, fit in an SM's shared memory.
inline int combine_spread_shared_bytes(int64_t blocks, int threads, int static_shared,
                                       const detail::DeviceLimits& limits) {
  const int64_t per_sm = (blocks + limits.sm_count - 1) / limits.sm_count;
  const int fit =
      std::min({limits.blocks_per_sm, limits.threads_per_sm / threads,
                limits.shared_per_sm / (static_shared + limits.shared_reserved_per_block)});
  if (per_sm >= fit) return 0;
  const int64_t share = limits.shared_per_sm / per_sm - limits.shared_reserved_per_block;
  return int(std::max<int64_t>(
      std::min<int64_t>(share, limits.shared_per_block_optin) - static_shared, 0));
}

}  // namespace flashmla::kernels
