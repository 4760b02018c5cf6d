// Common types of the public C++ API: element types, errors, device checks.
// No PyTorch and no CuTe in the public headers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace flashmla {

enum class ScalarType : int32_t {
  kBFloat16 = 0,
  kFloat16 = 1,
};

inline const char* to_string(ScalarType type) {
  switch (type) {
    case ScalarType::kBFloat16:
      return "bfloat16";
    case ScalarType::kFloat16:
      return "float16";
  }
  return "unknown";
}

// Every error the library raises. `argument()` names the offending argument (empty when the
// error is not about one argument, e.g. a CUDA failure).
class Error : public std::runtime_error {
 public:
  enum class Kind { kInvalidArgument, kUnsupported, kCuda };
  Error(Kind kind, std::string argument, const std::string& message)
      : std::runtime_error(message), kind_(kind), argument_(std::move(argument)) {}
  Kind kind() const { return kind_; }
  const std::string& argument() const { return argument_; }

 private:
  Kind kind_;
  std::string argument_;
};

// Throws Error(kUnsupported) naming the GPU unless `device` is a compute capability 9.0 GPU.
void check_device_supported(int device);

// Number of streaming multiprocessors of `device` (cached per device).
int device_sm_count(int device);

}  // namespace flashmla
