// Host-side validation of SparseDecodeParams: everything that can be checked without reading
// device memory. Every failure names the argument, what was expected and what was got, e.g.
//   sparse_decode: main.page_block_size must be >= 1, got 0
// Index values live on the GPU and are not read back: the kernel skips any index outside
// [0, num_blocks * page_block_size), so a wrong index can never cause an out-of-bounds read.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "flashmla/common.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/sparse_decode.h"

namespace flashmla {

namespace {

using Kind = Error::Kind;

constexpr const char* kFn = "sparse_decode";
constexpr int64_t kVectorElems = 8;  // q and out rows move in 16-byte vectors
constexpr int64_t kVectorBytes = 16;
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;
constexpr int64_t kMaxGridDim = 65535;  // s_q and num_parts are grid dimensions y and z
constexpr int64_t kMaxQueryRows = int64_t(1) << 21;

[[noreturn]] void fail(Kind kind, const std::string& argument, const std::string& message) {
  throw Error(kind, argument, std::string(kFn) + ": " + message);
}

[[noreturn]] void fail_expected(Kind kind, const std::string& argument, const std::string& expected,
                                const std::string& got) {
  fail(kind, argument, argument + " must be " + expected + ", got " + got);
}

std::string str(int64_t value) {
  return std::to_string(value);
}

void require(bool ok, Kind kind, const std::string& argument, const char* expected, int64_t got) {
  if (!ok) fail_expected(kind, argument, expected, str(got));
}

void require_pointer(const void* pointer, const std::string& argument, int64_t alignment) {
  if (pointer == nullptr) {
    fail_expected(Kind::kInvalidArgument, argument, "a non-null device pointer", "null");
  }
  if (reinterpret_cast<uintptr_t>(pointer) % alignment != 0) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "address %p", pointer);
    fail_expected(Kind::kUnsupported, argument, str(alignment) + "-byte aligned", buffer);
  }
}

void check_sizes(const SparseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  const bool known_format = p.kv_format == KVCacheFormat::kBFloat16 ||
                            p.kv_format == KVCacheFormat::kFp8V32 ||
                            p.kv_format == KVCacheFormat::kFp8Model1;
  require(known_format, kUnsupported, "kv_format", "kBFloat16 (0), kFp8V32 (1) or kFp8Model1 (2)",
          int64_t(p.kv_format));
  require(p.batch >= 1, kBad, "batch", ">= 1", p.batch);
  require(p.seqlen_q >= 1, kBad, "seqlen_q", ">= 1", p.seqlen_q);
  require(p.seqlen_q <= kMaxGridDim, kUnsupported, "seqlen_q", "<= 65535", p.seqlen_q);
  require(p.num_heads_q >= 1, kBad, "num_heads_q", ">= 1", p.num_heads_q);
  if (int64_t(p.seqlen_q) * p.num_heads_q > kMaxQueryRows) {
    fail(kUnsupported, "num_heads_q",
         "seqlen_q * num_heads_q must be <= " + str(kMaxQueryRows) + ", got " +
             str(int64_t(p.seqlen_q) * p.num_heads_q));
  }
  const int format_dim = kv_cache_format_head_dim(p.kv_format);
  if (format_dim != 0) {
    if (p.head_dim_qk != format_dim) {
      fail_expected(kUnsupported, "head_dim_qk",
                    str(format_dim) + " for the " + to_string(p.kv_format) + " cache layout",
                    str(p.head_dim_qk));
    }
  } else {
    require(p.head_dim_qk == 576 || p.head_dim_qk == 512, kUnsupported, "head_dim_qk", "576 or 512",
            p.head_dim_qk);
  }
  require(p.head_dim_v == 512, kUnsupported, "head_dim_v", "512", p.head_dim_v);
  if (!(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.f)) {
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "%g", p.softmax_scale);
    fail_expected(kBad, "softmax_scale", "finite and > 0", buffer);
  }
}

// One token source ("main" or "extra"): sizes, layout strides, pointers, extent.
void check_source(const SparseDecodeParams& p, const SparseTokenSource& source,
                  const std::string& name) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  require_pointer(source.k_cache, name + ".k_cache", kVectorBytes);
  require_pointer(source.indices, name + ".indices", 4);
  if (source.topk_length != nullptr) require_pointer(source.topk_length, name + ".topk_length", 4);
  require(source.num_blocks >= 1, kBad, name + ".num_blocks", ">= 1", source.num_blocks);
  require(source.page_block_size >= 1, kBad, name + ".page_block_size", ">= 1",
          source.page_block_size);
  require(source.topk >= 1, kBad, name + ".topk", ">= 1", source.topk);
  require(source.indices_batch_stride >= 0, kBad, name + ".indices_batch_stride", ">= 0",
          source.indices_batch_stride);
  require(source.indices_seq_stride >= 0, kBad, name + ".indices_seq_stride", ">= 0",
          source.indices_seq_stride);

  const int64_t min_block =
      kv_cache_min_block_bytes(p.kv_format, source.page_block_size, p.head_dim_qk);
  if (source.block_stride < min_block) {
    fail_expected(kBad, name + ".block_stride",
                  ">= " + str(min_block) + " bytes (one page block of the " +
                      to_string(p.kv_format) + " layout)",
                  str(source.block_stride));
  }
  if (source.block_stride % kVectorBytes != 0) {
    fail_expected(kUnsupported, name + ".block_stride", "a multiple of 16 bytes",
                  str(source.block_stride));
  }
  if (p.kv_format != KVCacheFormat::kFp8Model1) {
    const int64_t min_token = kv_cache_min_token_bytes(p.kv_format, p.head_dim_qk);
    if (source.token_stride < min_token) {
      fail_expected(kBad, name + ".token_stride", ">= " + str(min_token) + " bytes (one token)",
                    str(source.token_stride));
    }
    if (source.token_stride % kVectorBytes != 0) {
      fail_expected(kUnsupported, name + ".token_stride", "a multiple of 16 bytes",
                    str(source.token_stride));
    }
    // Tokens of a block must not run into the next block.
    const int64_t block_span =
        (int64_t(source.page_block_size) - 1) * source.token_stride + min_token;
    if (block_span > source.block_stride) {
      fail_expected(kBad, name + ".block_stride",
                    ">= (page_block_size - 1) * token_stride + " + str(min_token) + " = " +
                        str(block_span) + " bytes",
                    str(source.block_stride));
    }
  }
  const __int128 cache_bytes = __int128(source.num_blocks - 1) * source.block_stride + min_block;
  if (cache_bytes > kMaxTensorBytes) {
    fail_expected(kBad, name + ".k_cache", "at most 2^48 bytes given its shape and strides",
                  "more");
  }
  const __int128 index_extent = __int128(p.batch - 1) * source.indices_batch_stride +
                                __int128(p.seqlen_q - 1) * source.indices_seq_stride + source.topk;
  if (index_extent * 4 > kMaxTensorBytes) {
    fail_expected(kBad, name + ".indices", "at most 2^48 bytes given its shape and strides",
                  "more");
  }
}

void check_tensors(const SparseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  require_pointer(p.q, "q", kVectorBytes);
  require_pointer(p.out, "out", kVectorBytes);
  require_pointer(p.lse, "lse", 4);
  if (p.attn_sink != nullptr) require_pointer(p.attn_sink, "attn_sink", 4);

  struct StrideRule {
    const char* name;
    int64_t value, min, multiple;
  };
  const int64_t d_v = p.head_dim_v;
  const StrideRule rules[] = {
      {"q_batch_stride", p.q_batch_stride, 1, kVectorElems},
      {"q_seq_stride", p.q_seq_stride, 1, kVectorElems},
      {"q_head_stride", p.q_head_stride, 1, kVectorElems},
      {"out_batch_stride", p.out_batch_stride, d_v, kVectorElems},
      {"out_seq_stride", p.out_seq_stride, d_v, kVectorElems},
      {"out_head_stride", p.out_head_stride, d_v, kVectorElems},
      {"lse_batch_stride", p.lse_batch_stride, p.seqlen_q, 1},
      {"lse_head_stride", p.lse_head_stride, p.seqlen_q, 1},
  };
  for (const StrideRule& rule : rules) {
    if (rule.value < rule.min) {
      fail_expected(kBad, rule.name, ">= " + str(rule.min), str(rule.value));
    }
    if (rule.value % rule.multiple != 0) {
      fail_expected(kUnsupported, rule.name,
                    "a multiple of " + str(rule.multiple) + " elements (16-byte aligned rows)",
                    str(rule.value));
    }
  }
  const auto last = [](int64_t count, int64_t stride) { return __int128(count - 1) * stride; };
  const __int128 q_end = last(p.batch, p.q_batch_stride) + last(p.seqlen_q, p.q_seq_stride) +
                         last(p.num_heads_q, p.q_head_stride) + p.head_dim_qk;
  const __int128 out_end = last(p.batch, p.out_batch_stride) + last(p.seqlen_q, p.out_seq_stride) +
                           last(p.num_heads_q, p.out_head_stride) + p.head_dim_v;
  if (q_end * 2 > kMaxTensorBytes) fail_expected(kBad, "q", "at most 2^48 bytes", "more");
  if (out_end * 2 > kMaxTensorBytes) fail_expected(kBad, "out", "at most 2^48 bytes", "more");
}

void check_plan(const SparseDecodeParams& p) {
  require_pointer(p.tile_scheduler_metadata, "tile_scheduler_metadata", 16);
  require_pointer(p.num_splits, "num_splits", 4);
  require_pointer(p.workspace, "workspace", 16);
  require(p.num_parts >= 1, Kind::kInvalidArgument, "num_parts",
          ">= 1 (from sparse_decode_num_parts)", p.num_parts);
  require(p.num_parts <= kMaxGridDim, Kind::kUnsupported, "num_parts", "<= 65535", p.num_parts);
  const size_t needed = sparse_decode_workspace_bytes(p);
  if (p.workspace_bytes < needed) {
    fail_expected(Kind::kInvalidArgument, "workspace_bytes",
                  ">= sparse_decode_workspace_bytes() = " + str(int64_t(needed)),
                  str(int64_t(p.workspace_bytes)));
  }
}

}  // namespace

void validate_sparse_decode(const SparseDecodeParams& params) {
  check_sizes(params);  // first: the later checks use the sizes as bounds
  check_tensors(params);
  check_source(params, params.main, "main");
  if (params.extra.k_cache != nullptr || params.extra.indices != nullptr ||
      params.extra.topk_length != nullptr) {
    check_source(params, params.extra, "extra");
  }
  check_plan(params);
}

}  // namespace flashmla
