// Device queries and the supported-GPU check.
#include <mutex>
#include <string>
#include <unordered_map>

#include "api/checks.h"
#include "flashmla/common.h"

namespace flashmla {

void check_device_supported(int device) {
  cudaDeviceProp prop{};
  detail::check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  if (prop.major != 9 || prop.minor != 0) {
    throw Error(Error::Kind::kUnsupported, "device",
                std::string("flashmla: GPU ") + std::to_string(device) + " (" + prop.name +
                    ", compute capability " + std::to_string(prop.major) + "." +
                    std::to_string(prop.minor) +
                    ") is not supported: these kernels need compute capability 9.0 (Hopper: "
                    "H100, H200, H800, H20)");
  }
}

int device_sm_count(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  int count = 0;
  detail::check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
                     "cudaDeviceGetAttribute(MultiProcessorCount)");
  cache[device] = count;
  return count;
}

}  // namespace flashmla
