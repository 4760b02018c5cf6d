// Argument checks shared by the PyTorch operators. Every failure raises c10::ValueError (a Python
// ValueError) whose message reads "<operation>: <argument> <what was expected>, got <what came>".
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include "flashmla/common.h"

namespace flashmla::torch_binding {

template <typename... Args>
[[noreturn]] void fail(const char* op, const char* arg, const Args&... details) {
  C10_THROW_ERROR(ValueError, c10::str(op, ": ", arg, " ", details...));
}

// The name Python uses for a dtype: "bfloat16", "float16", "float32", "int32", ...
std::string dtype_name(at::ScalarType type);

// `t` is a defined CUDA tensor.
void check_cuda(const at::Tensor& t, const char* op, const char* arg);
// `t` is a defined CUDA tensor on `device` (the device of q).
void check_same_device(const at::Tensor& t, const char* op, const char* arg,
                       const c10::Device& device);
void check_dtype(const at::Tensor& t, const char* op, const char* arg, at::ScalarType expected);
// `layout` documents the expected shape, e.g. "[batch, seqlen_q, num_heads_q, head_dim]".
void check_dim(const at::Tensor& t, const char* op, const char* arg, int64_t dim,
               const char* layout);
// Size of dimension `dim` equals `expected`; `why` says where the expectation comes from.
void check_size(const at::Tensor& t, const char* op, const char* arg, int64_t dim, int64_t expected,
                const char* why);
// The last dimension has stride 1 (trivially true when it has a single element).
void check_last_dim_contiguous(const at::Tensor& t, const char* op, const char* arg);
void check_contiguous(const at::Tensor& t, const char* op, const char* arg);
// Stride of dimension `dim` in elements, with size-1 dimensions (whose stride is arbitrary) given
// the extent of the dimensions inside them, so that they pass the core's stride rules.
int64_t layout_stride(const at::Tensor& t, int64_t dim);
// A size or count that the C++ API stores as int.
int to_int(int64_t value, const char* op, const char* arg);

// Rethrows a flashmla::Error as the matching PyTorch error (Python ValueError for invalid
// arguments, NotImplementedError for unsupported features or GPUs, RuntimeError for CUDA
// failures), keeping the name of the offending argument in the message.
[[noreturn]] void rethrow(const char* op, const flashmla::Error& error);

// Runs `body` (a call into the C++ core) and translates any flashmla::Error it throws.
template <typename Body>
decltype(auto) translate_errors(const char* op, Body&& body) {
  try {
    return std::forward<Body>(body)();
  } catch (const flashmla::Error& error) {
    rethrow(op, error);
  }
}

}  // namespace flashmla::torch_binding
