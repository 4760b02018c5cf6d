// Host-side validation of DenseDecodeParams: everything that can be checked without reading
// device memory. Every failure names the argument, what was expected and what was got, e.g.
//   dense_decode: head_dim_qk must be 576 or 512, got 320
// kInvalidArgument: the call is wrong whatever the implementation (null, negative, mismatch).
// kUnsupported: the call is meaningful but this implementation does not handle it (head
// dims, page sizes, alignment the TMA loads need).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "flashmla/common.h"
#include "flashmla/dense_decode.h"

namespace flashmla {

namespace {

using Kind = Error::Kind;

constexpr const char* kFn = "dense_decode";
// q, k_cache and out rows are moved with TMA / 16-byte vectors: 8 bf16/fp16 elements.
constexpr int64_t kVectorElems = 8;
constexpr int64_t kVectorBytes = 16;
// TMA descriptors take strides below 2^40 bytes, i.e. 2^39 two-byte elements.
constexpr int64_t kMaxTmaStrideElems = int64_t(1) << 39;
// No real allocation spans more; also keeps every element offset far from int64 overflow.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;
// Query rows per call (s_q * h_q): keeps the kernels' row counts and grids in range.
constexpr int64_t kMaxSeqlenQ = 16384;
constexpr int64_t kMaxQueryRows = int64_t(1) << 21;

[[noreturn]] void fail(Kind kind, const char* argument, const std::string& message) {
  throw Error(kind, argument, std::string(kFn) + ": " + message);
}

// "dense_decode: <argument> must be <expected>, got <got>". Called only on failure, so that
// a valid call (every decoding step of every layer) builds no strings.
[[noreturn]] void fail_expected(Kind kind, const char* argument, const std::string& expected,
                                const std::string& got) {
  fail(kind, argument, std::string(argument) + " must be " + expected + ", got " + got);
}

std::string str(int64_t value) {
  return std::to_string(value);
}

std::string float_str(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

std::string address(const void* pointer) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "address %p", pointer);
  return buffer;
}

// Integer checks with fixed wording: the got value is formatted only on failure.
void require(bool ok, Kind kind, const char* argument, const char* expected, int64_t got) {
  if (!ok) fail_expected(kind, argument, expected, str(got));
}

void check_sizes(const DenseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  const bool known_dtype = p.dtype == ScalarType::kBFloat16 || p.dtype == ScalarType::kFloat16;
  require(known_dtype, kUnsupported, "dtype", "bfloat16 (0) or float16 (1)", int64_t(p.dtype));
  require(p.batch >= 0, kBad, "batch", ">= 0", p.batch);
  require(p.seqlen_q >= 1, kBad, "seqlen_q", ">= 1", p.seqlen_q);
  static_assert(kMaxSeqlenQ == 16384);
  require(p.seqlen_q <= kMaxSeqlenQ, kUnsupported, "seqlen_q", "<= 16384", p.seqlen_q);
  require(p.num_heads_kv >= 1, kBad, "num_heads_kv", ">= 1", p.num_heads_kv);
  require(p.num_heads_q >= 1, kBad, "num_heads_q", ">= 1", p.num_heads_q);
  if (p.num_heads_q % p.num_heads_kv != 0) {
    fail_expected(kBad, "num_heads_q", "a multiple of num_heads_kv (" + str(p.num_heads_kv) + ")",
                  str(p.num_heads_q));
  }
  const int64_t query_rows = int64_t(p.seqlen_q) * p.num_heads_q;
  if (query_rows > kMaxQueryRows) {
    fail(kUnsupported, "num_heads_q",
         "seqlen_q * num_heads_q (query rows) must be <= " + str(kMaxQueryRows) + ", got " +
             str(query_rows));
  }
  require(p.head_dim_qk == 576 || p.head_dim_qk == 512, kUnsupported, "head_dim_qk", "576 or 512",
          p.head_dim_qk);
  require(p.head_dim_v == 512, kUnsupported, "head_dim_v", "512", p.head_dim_v);
  require(p.page_block_size >= 1, kBad, "page_block_size", ">= 1", p.page_block_size);
  if (!(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.f)) {
    fail_expected(kBad, "softmax_scale", "finite and > 0", float_str(p.softmax_scale));
  }
}

// The cache's extent; only checked when there is work (batch >= 1).
void check_cache_sizes(const DenseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  if (p.block_table == nullptr) {
    // Non-paged: one "page" of page_block_size tokens per sequence, k_cache [batch, ...].
    if (p.num_blocks != p.batch) {
      fail_expected(kBad, "num_blocks",
                    "batch (" + str(p.batch) +
                        ") when block_table is null (a non-paged cache [batch, seqlen_k, h_kv, d])",
                    str(p.num_blocks));
    }
    require(p.max_blocks_per_seq == 1, kBad, "max_blocks_per_seq",
            "1 when block_table is null (a non-paged cache)", p.max_blocks_per_seq);
    return;
  }
  require(p.num_blocks >= 1, kBad, "num_blocks", ">= 1", p.num_blocks);
  require(p.max_blocks_per_seq >= 1, kBad, "max_blocks_per_seq", ">= 1", p.max_blocks_per_seq);
}

void check_pointers(const DenseDecodeParams& p) {
  struct PointerRule {
    const char* name;
    const void* pointer;
    int64_t alignment;  // bytes
  };
  const PointerRule rules[] = {
      {"q", p.q, kVectorBytes},
      {"k_cache", p.k_cache, kVectorBytes},
      {"cache_seqlens", p.cache_seqlens, 4},
      {"out", p.out, kVectorBytes},
      {"lse", p.lse, 4},
      {"tile_scheduler_metadata", p.tile_scheduler_metadata, 16},
      {"num_splits", p.num_splits, 4},
      {"workspace", p.workspace, 16},
  };
  // block_table may be null (a non-paged cache) but must be aligned when given.
  if (reinterpret_cast<uintptr_t>(p.block_table) % 4 != 0) {
    fail_expected(Kind::kUnsupported, "block_table", "4-byte aligned", address(p.block_table));
  }
  for (const PointerRule& rule : rules) {
    if (rule.pointer == nullptr) {
      fail_expected(Kind::kInvalidArgument, rule.name, "a non-null device pointer", "null");
    }
    if (reinterpret_cast<uintptr_t>(rule.pointer) % rule.alignment != 0) {
      fail_expected(Kind::kUnsupported, rule.name, str(rule.alignment) + "-byte aligned",
                    address(rule.pointer));
    }
  }
}

void check_strides(const DenseDecodeParams& p) {
  struct StrideRule {
    const char* name;
    int64_t value;     // elements
    int64_t min;       // smallest valid value
    const char* why;   // why `min`
    int64_t multiple;  // the value must be a multiple of this (alignment of every row)
    int64_t max;       // largest supported value
  };
  const int64_t d_v = p.head_dim_v;
  const int64_t s_q = p.seqlen_q;
  const bool paged = p.block_table != nullptr;  // else block_table_batch_stride is unused
  constexpr int64_t kVec = kVectorElems;
  constexpr int64_t kTma = kMaxTmaStrideElems;
  constexpr int64_t kAnyMax = INT64_MAX;
  const char* const kPositive = "";
  const char* const kOutRows = " (head_dim_v) so that rows of out do not overlap";
  const char* const kLseRows = " (seqlen_q) so that rows of lse do not overlap";
  // clang-format off
  const StrideRule rules[] = {
      // name                      value                       min  why        multiple max
      {"q_batch_stride",           p.q_batch_stride,           1,   kPositive, kVec,    kTma},
      {"q_seq_stride",             p.q_seq_stride,             1,   kPositive, kVec,    kTma},
      {"q_head_stride",            p.q_head_stride,            1,   kPositive, kVec,    kTma},
      {"k_block_stride",           p.k_block_stride,           1,   kPositive, kVec,    kTma},
      {"k_token_stride",           p.k_token_stride,           1,   kPositive, kVec,    kTma},
      {"k_head_stride",            p.k_head_stride,            1,   kPositive, kVec,    kTma},
      {"block_table_batch_stride", paged ? p.block_table_batch_stride : 1,
                                                              1,   kPositive, 1,       kAnyMax},
      {"out_batch_stride",         p.out_batch_stride,         d_v, kOutRows,  kVec,    kTma},
      {"out_seq_stride",           p.out_seq_stride,           d_v, kOutRows,  kVec,    kTma},
      {"out_head_stride",          p.out_head_stride,          d_v, kOutRows,  kVec,    kTma},
      {"lse_batch_stride",         p.lse_batch_stride,         s_q, kLseRows,  1,       kAnyMax},
      {"lse_head_stride",          p.lse_head_stride,          s_q, kLseRows,  1,       kAnyMax},
  };
  // clang-format on
  for (const StrideRule& rule : rules) {
    if (rule.value < rule.min) {
      fail_expected(Kind::kInvalidArgument, rule.name, ">= " + str(rule.min) + rule.why,
                    str(rule.value));
    }
    if (rule.value % rule.multiple != 0) {
      fail_expected(Kind::kUnsupported, rule.name,
                    "a multiple of " + str(rule.multiple) + " elements (16-byte aligned rows)",
                    str(rule.value));
    }
    if (rule.value >= rule.max) {
      fail_expected(Kind::kUnsupported, rule.name, "< 2^40 bytes (the TMA stride limit)",
                    str(rule.value) + " elements");
    }
  }
}

// The farthest byte each tensor reaches from its pointer, in 128-bit arithmetic: strides are
// below 2^39 by now, but times num_blocks they could still overflow int64.
void check_extents(const DenseDecodeParams& p) {
  using Wide = __int128;
  struct ExtentRule {
    const char* name;
    Wide last_element;  // offset of the last element, in elements
    int64_t element_bytes;
  };
  const auto last = [](Wide count, int64_t stride) { return (count - 1) * stride; };
  const ExtentRule rules[] = {
      {"q",
       last(p.batch, p.q_batch_stride) + last(p.seqlen_q, p.q_seq_stride) +
           last(p.num_heads_q, p.q_head_stride) + last(p.head_dim_qk, 1),
       2},
      {"k_cache",
       last(p.num_blocks, p.k_block_stride) + last(p.page_block_size, p.k_token_stride) +
           last(p.num_heads_kv, p.k_head_stride) + last(p.head_dim_qk, 1),
       2},
      {"block_table",
       p.block_table == nullptr
           ? Wide(0)
           : last(p.batch, p.block_table_batch_stride) + last(p.max_blocks_per_seq, 1),
       4},
      {"out",
       last(p.batch, p.out_batch_stride) + last(p.seqlen_q, p.out_seq_stride) +
           last(p.num_heads_q, p.out_head_stride) + last(p.head_dim_v, 1),
       2},
      {"lse",
       last(p.batch, p.lse_batch_stride) + last(p.num_heads_q, p.lse_head_stride) +
           last(p.seqlen_q, 1),
       4},
  };
  for (const ExtentRule& rule : rules) {
    const Wide bytes = (rule.last_element + 1) * rule.element_bytes;
    if (bytes > kMaxTensorBytes) {
      fail_expected(Kind::kInvalidArgument, rule.name,
                    "a tensor of at most 2^48 bytes given its shape and strides",
                    bytes > Wide(INT64_MAX) ? std::string("more than 2^63 bytes")
                                            : str(int64_t(bytes)) + " bytes");
    }
  }
}

void check_plan(const DenseDecodeParams& p) {
  require(p.num_parts >= 1, Kind::kInvalidArgument, "num_parts", ">= 1 (from decode_num_parts)",
          p.num_parts);
  const size_t needed = dense_decode_workspace_bytes(p);
  if (p.workspace_bytes < needed) {
    fail_expected(Kind::kInvalidArgument, "workspace_bytes",
                  ">= dense_decode_workspace_bytes() = " + str(int64_t(needed)),
                  str(int64_t(p.workspace_bytes)));
  }
}

}  // namespace

void validate_dense_decode(const DenseDecodeParams& params) {
  // Sizes first: the later checks use them as bounds.
  check_sizes(params);
  if (params.batch == 0) return;  // nothing to do: no tensor is touched
  check_cache_sizes(params);
  check_pointers(params);
  check_strides(params);
  check_extents(params);
  check_plan(params);
}

}  // namespace flashmla
