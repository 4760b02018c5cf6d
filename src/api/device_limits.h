// Per-SM resource limits of a device, queried once per device (internal; see common.h for the
// public device queries).
#pragma once

namespace flashmla::detail {

struct DeviceLimits {
  int sm_count = 0;
  int threads_per_sm = 0;
  int blocks_per_sm = 0;
  int shared_per_sm = 0;              // bytes
  int shared_reserved_per_block = 0;  // bytes the system takes from every resident block
  int shared_per_block_optin = 0;     // the most a block may ask for, static + dynamic
};

const DeviceLimits& device_limits(int device);

}  // namespace flashmla::detail
