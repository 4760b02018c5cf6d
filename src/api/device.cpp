// Device queries and the supported-GPU check.
#include <mutex>
#include <string>
#include <unordered_map>

#include "api/checks.h"
#include "api/device_limits.h"
#include "flashmla/common.h"

namespace flashmla {

namespace {

struct DeviceInfo {
  int major = 0, minor = 0;
  detail::DeviceLimits limits;
  std::string name;
};

// Device properties are constant for the life of the process; querying them on every call
// would cost host time on every decoding step of every layer.
const DeviceInfo& device_info(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  cudaDeviceProp prop{};
  detail::check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  DeviceInfo info;
  info.major = prop.major;
  info.minor = prop.minor;
  info.limits.sm_count = prop.multiProcessorCount;
  info.limits.threads_per_sm = prop.maxThreadsPerMultiProcessor;
  info.limits.blocks_per_sm = prop.maxBlocksPerMultiProcessor;
  info.limits.shared_per_sm = int(prop.sharedMemPerMultiprocessor);
  info.limits.shared_reserved_per_block = int(prop.reservedSharedMemPerBlock);
  info.limits.shared_per_block_optin = int(prop.sharedMemPerBlockOptin);
  info.name = prop.name;
  return cache.emplace(device, std::move(info)).first->second;
}

}  // namespace

void check_device_supported(int device) {
  const DeviceInfo& info = device_info(device);
  if (info.major != 9 || info.minor != 0) {
    throw Error(Error::Kind::kUnsupported, "device",
                std::string("flashmla: GPU ") + std::to_string(device) + " (" + info.name +
                    ", compute capability " + std::to_string(info.major) + "." +
                    std::to_string(info.minor) +
                    ") is not supported: these kernels need compute capability 9.0 (Hopper: "
                    "H100, H200, H800, H20)");
  }
}

int device_sm_count(int device) {
  return device_info(device).limits.sm_count;
}

const detail::DeviceLimits& detail::device_limits(int device) {
  return device_info(device).limits;
}

}  // namespace flashmla
