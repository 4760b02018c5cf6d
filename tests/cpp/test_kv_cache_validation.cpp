// Validation of the FP8 KV-cache tools: valid params are accepted (fake but aligned pointers:
// validation never reads them), and each bad field is rejected with a flashmla::Error that
// names it, of the documented kind, by every entry point (device ones validate before they
// touch the GPU, so this runs without one).
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "api/validate_kv_cache_tools.h"
#include "flashmla/kv_cache_tools.h"

namespace flashmla {
namespace {

using K = Error::Kind;

template <typename T>
T* fake_pointer(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

template <typename T>
T* misalign(T* pointer, int bytes) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(pointer) + bytes);
}

KVCacheWriteParams valid_write(KVCacheFormat format = KVCacheFormat::kFp8V32) {
  KVCacheWriteParams p;
  p.format = format;
  p.head_dim_qk = format == KVCacheFormat::kFp8Model1 ? 512 : 576;
  p.num_tokens = 10;
  p.kv = fake_pointer<const void>(0x7f0000000000);
  p.kv_token_stride = p.head_dim_qk;
  p.slot_mapping = fake_pointer<const int64_t>(0x7f1000000000);
  p.k_cache = fake_pointer<void>(0x7f2000000000);
  p.num_blocks = 100;
  p.page_block_size = 64;
  p.token_stride = kv_cache_min_token_bytes(format, p.head_dim_qk);
  p.block_stride = kv_cache_min_block_bytes(format, p.page_block_size, p.head_dim_qk);
  return p;
}

KVCacheDequantizeParams valid_dequantize(KVCacheFormat format = KVCacheFormat::kFp8V32) {
  const KVCacheWriteParams w = valid_write(format);
  KVCacheDequantizeParams p;
  p.format = w.format;
  p.head_dim_qk = w.head_dim_qk;
  p.k_cache = w.k_cache;
  p.num_blocks = w.num_blocks;
  p.page_block_size = w.page_block_size;
  p.block_stride = w.block_stride;
  p.token_stride = w.token_stride;
  p.out = fake_pointer<void>(0x7f3000000000);
  return p;
}

TEST(KVCacheValidation, AcceptsValidParams) {
  const std::vector<std::function<void(KVCacheWriteParams&)>> variants = {
      [](auto&) {},
      [](auto& p) { p = valid_write(KVCacheFormat::kFp8Model1); },
      [](auto& p) { p = valid_write(KVCacheFormat::kBFloat16); },
      [](auto& p) {
        p = valid_write(KVCacheFormat::kBFloat16);
        p.head_dim_qk = 512, p.kv_token_stride = 512, p.token_stride = 1024,
        p.block_stride = 64 * 1024;
      },
      // FlashMLA's own caches: V3.2 blocks one token apart more than dense; page sizes 1, 53.
      [](auto& p) { p.block_stride = 65 * 656; },
      [](auto& p) { p.page_block_size = 1, p.block_stride = 656; },
      [](auto& p) {
        p = valid_write(KVCacheFormat::kFp8Model1);
        p.page_block_size = 53, p.block_stride = (53 * 584 + 575) / 576 * 576;
      },
      [](auto& p) { p.token_stride = 672, p.block_stride = 63 * 672 + 656 + 16; },
      [](auto& p) { p.kv_token_stride = 0; },  // one row broadcast to every token
      [](auto& p) { p.kv_token_stride = 1024; },
      [](auto& p) { p.num_tokens = 0, p.kv = nullptr, p.slot_mapping = nullptr; },
      [](auto& p) { p.slot_mapping = misalign(p.slot_mapping, 8); },
  };
  for (size_t i = 0; i < variants.size(); ++i) {
    KVCacheWriteParams p = valid_write();
    variants[i](p);
    EXPECT_NO_THROW(detail::validate_kv_cache_write(p, "write_kv_cache")) << "variant " << i;
  }
  EXPECT_NO_THROW(detail::validate_kv_cache_dequantize(valid_dequantize(), "dequantize_kv_cache"));
  EXPECT_NO_THROW(detail::validate_kv_cache_dequantize(valid_dequantize(KVCacheFormat::kFp8Model1),
                                                       "dequantize_kv_cache"));
}

struct Mutation {
  const char* description;
  std::function<void(KVCacheWriteParams&)> mutate;  // the dequantize twin gets the cache fields
  const char* argument;                             // expected Error::argument()
  Error::Kind kind;
  bool write_only = false;  // a field only KVCacheWriteParams has
};

void PrintTo(const Mutation& m, std::ostream* os) {
  *os << m.description;
}

const std::vector<Mutation>& mutations() {
  using F = KVCacheFormat;
  static const std::vector<Mutation> table = {
      // Format and head dim.
      {"format 7", [](auto& p) { p.format = static_cast<F>(7); }, "format", K::kUnsupported},
      {"V3.2 with head_dim 512", [](auto& p) { p.head_dim_qk = 512; }, "head_dim_qk",
       K::kInvalidArgument},
      {"MODEL1 with head_dim 576",
       [](auto& p) { p = valid_write(F::kFp8Model1), p.head_dim_qk = 576; }, "head_dim_qk",
       K::kInvalidArgument},
      {"bfloat16 with head_dim 320",
       [](auto& p) { p = valid_write(F::kBFloat16), p.head_dim_qk = 320; }, "head_dim_qk",
       K::kUnsupported},
      // Sizes.
      {"num_blocks 0", [](auto& p) { p.num_blocks = 0; }, "num_blocks", K::kInvalidArgument},
      {"page_block_size 0", [](auto& p) { p.page_block_size = 0; }, "page_block_size",
       K::kInvalidArgument},
      {"page_block_size -64", [](auto& p) { p.page_block_size = -64; }, "page_block_size",
       K::kInvalidArgument},
      {"num_tokens -1", [](auto& p) { p.num_tokens = -1; }, "num_tokens", K::kInvalidArgument,
       true},
      // Pointers.
      {"k_cache null", [](auto& p) { p.k_cache = nullptr; }, "k_cache", K::kInvalidArgument},
      {"k_cache + 8 bytes", [](auto& p) { p.k_cache = misalign(p.k_cache, 8); }, "k_cache",
       K::kUnsupported},
      {"kv null", [](auto& p) { p.kv = nullptr; }, "kv", K::kInvalidArgument, true},
      {"kv + 2 bytes", [](auto& p) { p.kv = misalign(p.kv, 2); }, "kv", K::kUnsupported, true},
      {"slot_mapping null", [](auto& p) { p.slot_mapping = nullptr; }, "slot_mapping",
       K::kInvalidArgument, true},
      {"slot_mapping + 4 bytes", [](auto& p) { p.slot_mapping = misalign(p.slot_mapping, 4); },
       "slot_mapping", K::kUnsupported, true},
      // Strides.
      {"block_stride one token short", [](auto& p) { p.block_stride -= 656; }, "block_stride",
       K::kInvalidArgument},
      {"block_stride 0", [](auto& p) { p.block_stride = 0; }, "block_stride", K::kInvalidArgument},
      {"MODEL1 block_stride without the padding",
       [](auto& p) { p = valid_write(F::kFp8Model1), p.page_block_size = 1, p.block_stride = 592; },
       "block_stride", K::kInvalidArgument},
      {"block_stride + 8", [](auto& p) { p.block_stride += 8; }, "block_stride", K::kUnsupported},
      {"token_stride 640", [](auto& p) { p.token_stride = 640; }, "token_stride",
       K::kInvalidArgument},
      {"bfloat16 token_stride 1024 for 576",
       [](auto& p) { p = valid_write(F::kBFloat16), p.token_stride = 1024; }, "token_stride",
       K::kInvalidArgument},
      {"token_stride 664", [](auto& p) { p.token_stride = 664, p.block_stride = 64 * 672; },
       "token_stride", K::kUnsupported},
      {"token_stride: rows overlap the next block", [](auto& p) { p.token_stride = 672; },
       "token_stride", K::kInvalidArgument},
      {"kv_token_stride -576", [](auto& p) { p.kv_token_stride = -576; }, "kv_token_stride",
       K::kInvalidArgument, true},
      {"kv_token_stride 580", [](auto& p) { p.kv_token_stride = 580; }, "kv_token_stride",
       K::kUnsupported, true},
      // Extents beyond any allocation.
      {"k_cache spans > 2^48 bytes", [](auto& p) { p.block_stride = int64_t(1) << 42; }, "k_cache",
       K::kInvalidArgument},
      {"kv spans > 2^48 bytes", [](auto& p) { p.kv_token_stride = int64_t(1) << 46; }, "kv",
       K::kInvalidArgument, true},
  };
  return table;
}

void expect_error(const std::function<void()>& call, const Mutation& m, const char* fn) {
  try {
    call();
    ADD_FAILURE() << fn << ", " << m.description << ": accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), m.argument) << fn << ", " << m.description << ": " << e.what();
    EXPECT_EQ(e.kind(), m.kind) << fn << ", " << m.description << ": " << e.what();
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(std::string(fn) + ": " + m.argument + " must be ", 0), 0u) << what;
  }
}

class KVCacheValidationRejects : public ::testing::TestWithParam<Mutation> {};

TEST_P(KVCacheValidationRejects, NamesTheArgument) {
  const Mutation& m = GetParam();
  KVCacheWriteParams w = valid_write();
  m.mutate(w);
  expect_error([&] { detail::validate_kv_cache_write(w, "write_kv_cache"); }, m, "write_kv_cache");
  // The public entry points, host and device (validation comes before any CUDA call).
  expect_error([&] { write_kv_cache_host(w); }, m, "write_kv_cache_host");
  expect_error([&] { write_kv_cache(w, nullptr); }, m, "write_kv_cache");
  if (m.write_only) return;
  KVCacheDequantizeParams d = valid_dequantize();
  d.format = w.format;
  d.head_dim_qk = w.head_dim_qk;
  d.k_cache = w.k_cache;
  d.num_blocks = w.num_blocks;
  d.page_block_size = w.page_block_size;
  d.block_stride = w.block_stride;
  d.token_stride = w.token_stride;
  expect_error([&] { dequantize_kv_cache_host(d); }, m, "dequantize_kv_cache_host");
  expect_error([&] { dequantize_kv_cache(d, nullptr); }, m, "dequantize_kv_cache");
}

INSTANTIATE_TEST_SUITE_P(Mutations, KVCacheValidationRejects, ::testing::ValuesIn(mutations()),
                         [](const auto& info) {
                           std::string name = info.param.description;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name + "_" + std::to_string(info.index);
                         });

TEST(KVCacheValidation, DequantizeOutput) {
  const Mutation null_out{"out null", {}, "out", K::kInvalidArgument};
  KVCacheDequantizeParams p = valid_dequantize();
  p.out = nullptr;
  expect_error([&] { dequantize_kv_cache_host(p); }, null_out, "dequantize_kv_cache_host");
  const Mutation misaligned_out{"out + 4 bytes", {}, "out", K::kUnsupported};
  p.out = misalign(valid_dequantize().out, 4);
  expect_error([&] { dequantize_kv_cache(p, nullptr); }, misaligned_out, "dequantize_kv_cache");
}

TEST(KVCacheValidation, MessagesSayWhatWasExpectedAndGot) {
  KVCacheWriteParams p = valid_write();
  p.head_dim_qk = 512;
  try {
    write_kv_cache_host(p);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "write_kv_cache_host: head_dim_qk must be 576 (the fp8_v32 format), got 512");
  }
  p = valid_write();
  p.block_stride = 656;
  try {
    write_kv_cache_host(p);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "write_kv_cache_host: block_stride must be >= 41984 bytes (one page block of 64 "
                 "tokens in the fp8_v32 format), got 656");
  }
}

}  // namespace
}  // namespace flashmla
