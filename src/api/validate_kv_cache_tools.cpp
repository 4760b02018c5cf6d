// Host-side validation of KVCacheWriteParams and KVCacheDequantizeParams: everything that can
// be checked without reading device memory (slot values live on the device: the kernels skip
// invalid ones instead). Wording and error kinds follow validate_dense_decode.cpp:
// kInvalidArgument for calls that are wrong whatever the implementation (null, negative,
// format/size mismatch, overlapping rows), kUnsupported for what this implementation does not
// handle (other head dims of bfloat16 caches, alignment the 16-byte accesses need).
#include "api/validate_kv_cache_tools.h"

#include <cstdio>
#include <string>

#include "flashmla/common.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla::detail {

namespace {

using Kind = Error::Kind;
using Wide = __int128;  // products of sizes and strides, which could overflow int64

// No real allocation spans more; also keeps every byte offset far from int64 overflow.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;

std::string str(int64_t value) {
  return std::to_string(value);
}

// "<fn>: <argument> must be <expected>, got <got>". Called only on failure, so that a valid
// call (every decoding step) builds no strings.
[[noreturn]] void fail_expected(const char* fn, Kind kind, const char* argument,
                                const std::string& expected, const std::string& got) {
  throw Error(kind, argument,
              std::string(fn) + ": " + argument + " must be " + expected + ", got " + got);
}

void require(bool ok, const char* fn, Kind kind, const char* argument, const char* expected,
             int64_t got) {
  if (!ok) fail_expected(fn, kind, argument, expected, str(got));
}

void require_pointer(const char* fn, const char* argument, const void* pointer, int64_t alignment) {
  if (pointer == nullptr) {
    fail_expected(fn, Kind::kInvalidArgument, argument, "a non-null pointer", "null");
  }
  if (reinterpret_cast<uintptr_t>(pointer) % alignment != 0) {
    char got[48];
    std::snprintf(got, sizeof(got), "address %p", pointer);
    fail_expected(fn, Kind::kUnsupported, argument, str(alignment) + "-byte aligned", got);
  }
}

// A byte stride between rows moved with 16-byte accesses.
void require_vector_multiple(const char* fn, const char* argument, int64_t bytes) {
  if (bytes % kKVCacheVectorBytes != 0) {
    fail_expected(fn, Kind::kUnsupported, argument,
                  "a multiple of " + str(kKVCacheVectorBytes) + " bytes (16-byte aligned rows)",
                  str(bytes));
  }
}

void require_extent(const char* fn, const char* argument, Wide bytes) {
  if (bytes > kMaxTensorBytes) {
    fail_expected(fn, Kind::kInvalidArgument, argument,
                  "at most 2^48 bytes given its shape and strides",
                  bytes > Wide(INT64_MAX) ? std::string("more than 2^63 bytes")
                                          : str(int64_t(bytes)) + " bytes");
  }
}

void check_format(const char* fn, KVCacheFormat format, int head_dim_qk) {
  switch (format) {
    case KVCacheFormat::kBFloat16:
      require(head_dim_qk == 576 || head_dim_qk == 512, fn, Kind::kUnsupported, "head_dim_qk",
              "576 or 512 (bfloat16 cache)", head_dim_qk);
      return;
    case KVCacheFormat::kFp8V32:
    case KVCacheFormat::kFp8Model1: {
      const int needed = kv_cache_format_head_dim(format);
      if (head_dim_qk != needed) {
        fail_expected(fn, Kind::kInvalidArgument, "head_dim_qk",
                      str(needed) + " (the " + to_string(format) + " format)", str(head_dim_qk));
      }
      return;
    }
  }
  fail_expected(fn, Kind::kUnsupported, "format", "bfloat16 (0), fp8_v32 (1) or fp8_model1 (2)",
                str(int64_t(format)));
}

// The cache fields both params structs share.
struct CacheFields {
  KVCacheFormat format;
  int head_dim_qk;
  const void* k_cache;
  int num_blocks;
  int page_block_size;
  int64_t block_stride;
  int64_t token_stride;
};

void check_cache(const char* fn, const CacheFields& c) {
  check_format(fn, c.format, c.head_dim_qk);
  require(c.num_blocks >= 1, fn, Kind::kInvalidArgument, "num_blocks", ">= 1", c.num_blocks);
  require(c.page_block_size >= 1, fn, Kind::kInvalidArgument, "page_block_size", ">= 1",
          c.page_block_size);
  require_pointer(fn, "k_cache", c.k_cache, kKVCacheVectorBytes);

  const int64_t min_block = kv_cache_min_block_bytes(c.format, c.page_block_size, c.head_dim_qk);
  if (c.block_stride < min_block) {
    fail_expected(fn, Kind::kInvalidArgument, "block_stride",
                  ">= " + str(min_block) + " bytes (one page block of " + str(c.page_block_size) +
                      " tokens in the " + to_string(c.format) + " format)",
                  str(c.block_stride));
  }
  require_vector_multiple(fn, "block_stride", c.block_stride);

  if (c.format != KVCacheFormat::kFp8Model1) {  // MODEL1 fixes its rows inside the block
    const int64_t token_bytes = kv_cache_min_token_bytes(c.format, c.head_dim_qk);
    if (c.token_stride < token_bytes) {
      fail_expected(
          fn, Kind::kInvalidArgument, "token_stride",
          ">= " + str(token_bytes) + " bytes (one token in the " + to_string(c.format) + " format)",
          str(c.token_stride));
    }
    require_vector_multiple(fn, "token_stride", c.token_stride);
    // Rows of one block must not reach into the next one: two tokens would share bytes.
    const Wide block_extent = Wide(c.page_block_size - 1) * c.token_stride + token_bytes;
    if (block_extent > c.block_stride) {
      fail_expected(fn, Kind::kInvalidArgument, "token_stride",
                    "small enough that the " + str(c.page_block_size) +
                        " rows of a block fit in block_stride (" + str(c.block_stride) + " bytes)",
                    str(c.token_stride));
    }
  }
  require_extent(fn, "k_cache", Wide(c.num_blocks) * c.block_stride);
}

}  // namespace

void validate_kv_cache_write(const KVCacheWriteParams& p, const char* fn) {
  check_cache(fn, {p.format, p.head_dim_qk, p.k_cache, p.num_blocks, p.page_block_size,
                   p.block_stride, p.token_stride});
  require(p.num_tokens >= 0, fn, Kind::kInvalidArgument, "num_tokens", ">= 0", p.num_tokens);
  require(p.kv_token_stride >= 0, fn, Kind::kInvalidArgument, "kv_token_stride", ">= 0",
          p.kv_token_stride);
  if (p.kv_token_stride % (kKVCacheVectorBytes / 2) != 0) {
    fail_expected(fn, Kind::kUnsupported, "kv_token_stride",
                  "a multiple of 8 elements (16-byte aligned rows)", str(p.kv_token_stride));
  }
  if (p.num_tokens == 0) return;  // a no-op: empty kv and slot_mapping may be null
  require_pointer(fn, "kv", p.kv, kKVCacheVectorBytes);
  require_pointer(fn, "slot_mapping", p.slot_mapping, 8);
  require_extent(fn, "kv", (Wide(p.num_tokens - 1) * p.kv_token_stride + p.head_dim_qk) * 2);
}

void validate_kv_cache_dequantize(const KVCacheDequantizeParams& p, const char* fn) {
  check_cache(fn, {p.format, p.head_dim_qk, p.k_cache, p.num_blocks, p.page_block_size,
                   p.block_stride, p.token_stride});
  require_pointer(fn, "out", p.out, kKVCacheVectorBytes);
  require_extent(fn, "out", Wide(p.num_blocks) * p.page_block_size * p.head_dim_qk * 2);
}

}  // namespace flashmla::detail
