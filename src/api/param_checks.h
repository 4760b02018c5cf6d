// How the validate_* functions of the decode and prefill entry points report a bad field: an
// Error naming the argument, whose message reads "<fn>: <argument> must be <expected>, got
// <got>". Strings are built only on failure, so that a valid call (every layer of every step)
// builds none.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>

#include "flashmla/common.h"

namespace flashmla::detail {

inline std::string str(int64_t value) {
  return std::to_string(value);
}

class ParamChecks {
 public:
  using Kind = Error::Kind;

  // `fn` starts every message ("sparse_decode").
  explicit constexpr ParamChecks(const char* fn) : fn_(fn) {}

  // "<fn>: <message>".
  [[noreturn]] void fail(Kind kind, std::string_view argument, const std::string& message) const {
    throw Error(kind, std::string(argument), std::string(fn_) + ": " + message);
  }

  // "<fn>: <argument> must be <expected>, got <got>".
  [[noreturn]] void fail_expected(Kind kind, std::string_view argument, const std::string& expected,
                                  const std::string& got) const {
    fail(kind, argument, std::string(argument) + " must be " + expected + ", got " + got);
  }

  // Integer checks with fixed wording: the got value is formatted only on failure.
  void require(bool ok, Kind kind, std::string_view argument, const char* expected,
               int64_t got) const {
    if (!ok) fail_expected(kind, argument, expected, str(got));
  }

  // Non-null (else kInvalidArgument) and `alignment`-byte aligned (else kUnsupported).
  void require_pointer(const void* pointer, std::string_view argument, int64_t alignment) const {
    if (pointer == nullptr) {
      fail_expected(Kind::kInvalidArgument, argument, "a non-null device pointer", "null");
    }
    if (reinterpret_cast<uintptr_t>(pointer) % alignment != 0) {
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "address %p", pointer);
      fail_expected(Kind::kUnsupported, argument, str(alignment) + "-byte aligned", buffer);
    }
  }

  // softmax_scale: finite and > 0 (else kInvalidArgument).
  void require_softmax_scale(float softmax_scale) const {
    if (!(std::isfinite(softmax_scale) && softmax_scale > 0.f)) {
      char buffer[64];
      std::snprintf(buffer, sizeof(buffer), "%g", softmax_scale);
      fail_expected(Kind::kInvalidArgument, "softmax_scale", "finite and > 0", buffer);
    }
  }

  // A stride in elements: at least `min` (else kInvalidArgument), and a multiple of `multiple`
  // (else kUnsupported: the 16-byte vectors of the kernels need aligned rows).
  struct StrideRule {
    const char* name;
    int64_t value, min, multiple;
  };
  void require_strides(std::initializer_list<StrideRule> rules) const {
    for (const StrideRule& rule : rules) {
      if (rule.value < rule.min) {
        fail_expected(Kind::kInvalidArgument, rule.name, ">= " + str(rule.min), str(rule.value));
      }
      if (rule.value % rule.multiple != 0) {
        fail_expected(Kind::kUnsupported, rule.name,
                      "a multiple of " + str(rule.multiple) + " elements (16-byte aligned rows)",
                      str(rule.value));
      }
    }
  }

 private:
  const char* fn_;
};

}  // namespace flashmla::detail
