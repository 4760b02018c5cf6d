// CUDA error checks and an owning device array, shared by the GPU tests.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace flashmla::testing {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(status) + " " +
                             cudaGetErrorString(status));
  }
}

// Waits for the device and throws on any error, naming the call it follows.
inline void synchronize(const char* after) {
  check_cuda(cudaDeviceSynchronize(), after);
  check_cuda(cudaGetLastError(), after);
}

// cudaMalloc'd array, freed on scope exit. At least one element is allocated, so that get() is
// never null.
template <typename T>
class DeviceBuffer {
 public:
  // `count` elements (at least one), uninitialized.
  explicit DeviceBuffer(size_t count) : count_(std::max<size_t>(count, 1)) { allocate(); }
  // A copy of `host`; size() is host.size(), also when that is 0.
  explicit DeviceBuffer(const std::vector<T>& host) : count_(host.size()) {
    allocate();
    upload(host);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  T* get() const { return data_; }
  size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    check_cuda(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
               "cudaMemcpy H2D");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    check_cuda(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost),
               "cudaMemcpy D2H");
    return host;
  }
  void fill_bytes(int byte) { check_cuda(cudaMemset(data_, byte, count_ * sizeof(T)), "memset"); }

 private:
  void allocate() {
    void* raw = nullptr;
    check_cuda(cudaMalloc(&raw, std::max<size_t>(count_, 1) * sizeof(T)), "cudaMalloc");
    data_ = static_cast<T*>(raw);
  }

  size_t count_;
  T* data_ = nullptr;
};

}  // namespace flashmla::testing
