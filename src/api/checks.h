// Small helpers every API entry point uses to report errors the same way.
#pragma once

#include <string>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"

namespace flashmla::detail {

// Throws Error(kInvalidArgument) "<fn>: <argument> <what>" unless `ok`.
inline void require(bool ok, const char* fn, const char* argument, const std::string& what) {
  if (!ok) {
    throw Error(Error::Kind::kInvalidArgument, argument,
                std::string(fn) + ": " + argument + " " + what);
  }
}

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(Error::Kind::kCuda, "",
                std::string(what) + " failed: " + cudaGetErrorName(status) + ": " +
                    cudaGetErrorString(status));
  }
}

// After a kernel launch: a launch error always throws; FLASHMLA_DEBUG_SYNC builds also
// synchronise so that faults surface at the kernel that caused them.
inline void check_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), kernel);
#if defined(FLASHMLA_DEBUG_SYNC)
  check_cuda(cudaDeviceSynchronize(), kernel);
#endif
}

}  // namespace flashmla::detail
