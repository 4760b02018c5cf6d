#include "tensor_checks.h"

#include <algorithm>
#include <limits>

namespace flashmla::torch_binding {

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kInt:
      return "int32";
    case at::kLong:
      return "int64";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(type);
  }
}

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) fail(op, arg, "must be a tensor, got an undefined tensor (None)");
  if (!t.is_cuda()) fail(op, arg, "must be a CUDA tensor, got a tensor on ", t.device().str());
}

void check_same_device(const at::Tensor& t, const char* op, const char* arg,
                       const c10::Device& device) {
  check_cuda(t, op, arg);
  if (t.device() != device) {
    fail(op, arg, "must be on the same device as q (", device.str(), "), got ", t.device().str());
  }
}

void check_dtype(const at::Tensor& t, const char* op, const char* arg, at::ScalarType expected) {
  if (t.scalar_type() != expected) {
    fail(op, arg, "must have dtype ", dtype_name(expected), ", got ", dtype_name(t.scalar_type()));
  }
}

void check_dim(const at::Tensor& t, const char* op, const char* arg, int64_t dim,
               const char* layout) {
  if (t.dim() != dim) {
    fail(op, arg, "must have ", dim, " dimensions ", layout, ", got shape ", t.sizes());
  }
}

void check_size(const at::Tensor& t, const char* op, const char* arg, int64_t dim, int64_t expected,
                const char* why) {
  if (t.size(dim) != expected) {
    fail(op, arg, "must have size ", expected, " in dimension ", dim, " (", why, "), got shape ",
         t.sizes());
  }
}

void check_last_dim_contiguous(const at::Tensor& t, const char* op, const char* arg) {
  if (t.dim() > 0 && t.size(-1) > 1 && t.stride(-1) != 1) {
    fail(op, arg, "must be contiguous in its last dimension (stride 1), got strides ", t.strides());
  }
}

void check_contiguous(const at::Tensor& t, const char* op, const char* arg) {
  if (!t.is_contiguous()) fail(op, arg, "must be contiguous, got strides ", t.strides());
}

int64_t layout_stride(const at::Tensor& t, int64_t dim) {
  if (t.size(dim) != 1) return t.stride(dim);
  // A dimension of size 1 is never stepped over, so its stride is arbitrary (views often leave
  // 1 or 0 there); report the extent of the inner dimensions instead, which every row-alignment
  // rule of the core accepts whenever the inner strides are accepted.
  if (dim + 1 >= t.dim()) return 1;
  return std::max<int64_t>(layout_stride(t, dim + 1) * std::max<int64_t>(t.size(dim + 1), 1), 1);
}

int to_int(int64_t value, const char* op, const char* arg) {
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    fail(op, arg, "must fit in a 32-bit int, got ", value);
  }
  return static_cast<int>(value);
}

void rethrow(const char* op, const flashmla::Error& error) {
  const std::string& arg = error.argument();
  const std::string what = error.what();
  std::string message = c10::str(op, ": ");
  // Name the argument unless the core's message already does.
  if (!arg.empty() && what.find(arg) == std::string::npos) {
    message += c10::str("argument '", arg, "': ");
  }
  message += what;
  switch (error.kind()) {
    case flashmla::Error::Kind::kInvalidArgument:
      C10_THROW_ERROR(ValueError, message);
    case flashmla::Error::Kind::kUnsupported:
      C10_THROW_ERROR(NotImplementedError, message);
    case flashmla::Error::Kind::kCuda:
      break;
  }
  C10_THROW_ERROR(Error, message);
}

}  // namespace flashmla::torch_binding
