// What the validation tests of dense and sparse decoding share: fake (never dereferenced)
// pointers, the checks on the Error a bad field raises, and test names made from the cases.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>

#include "flashmla/common.h"

namespace flashmla::testing {

template <typename T>
T* fake_pointer(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

template <typename T>
T* misalign(const T* pointer, int bytes) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(pointer) + bytes);
}

// The Error names `argument` (as argument() and in its message) and its message starts with
// `prefix` ("dense_decode: ").
inline void expect_error_names(const Error& e, const char* description, const char* argument,
                               const char* prefix) {
  EXPECT_EQ(e.argument(), argument) << description << ": " << e.what();
  EXPECT_NE(std::string(e.what()).find(argument), std::string::npos) << e.what();
  EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0u) << e.what();
}

// A parameterized test's name: `name` with every non-alphanumeric character replaced by '_',
// then "_<index>" (names stay unique and valid).
inline std::string test_name(std::string name, size_t index) {
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + "_" + std::to_string(index);
}

}  // namespace flashmla::testing
