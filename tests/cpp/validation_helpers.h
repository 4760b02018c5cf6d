// What the validation tests of dense and sparse decoding and sparse prefill share: fake (never
// dereferenced) pointers, the checks on the Error a bad field raises, and test names made from the
// cases.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
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

// A bad field for a validate_* function: how to break valid params, and the Error expected.
template <typename Params>
struct ParamsMutation {
  const char* description;
  std::function<void(Params&)> mutate;
  const char* argument;             // expected Error::argument()
  std::optional<Error::Kind> kind;  // unset: either kind is a fair description
};

template <typename Params>
void PrintTo(const ParamsMutation<Params>& m, std::ostream* os) {
  *os << m.description;
}

// `validate` rejects `valid` broken by the mutation with the Error it describes, whose message
// starts with `prefix` ("sparse_decode: ").
template <typename Params, typename Validate>
void expect_rejected(const ParamsMutation<Params>& mutation, Params valid, Validate validate,
                     const char* prefix) {
  mutation.mutate(valid);
  try {
    validate(valid);
    FAIL() << mutation.description << ": accepted";
  } catch (const Error& e) {
    expect_error_names(e, mutation.description, mutation.argument, prefix);
    if (mutation.kind) {
      EXPECT_EQ(e.kind(), *mutation.kind) << mutation.description << ": " << e.what();
    }
  }
}

// The test name of a mutation: <argument>__<what is wrong>_<index>.
template <typename Params>
std::string mutation_test_name(const ParamsMutation<Params>& mutation, size_t index) {
  return test_name(std::string(mutation.argument) + "__" + mutation.description, index);
}

}  // namespace flashmla::testing
