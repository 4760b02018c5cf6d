// Host-side validation of SparseDecodeParams: everything that can be checked without reading
// device memory. Every failure names the argument, what was expected and what was got, e.g.
//   sparse_decode: main.page_block_size must be >= 1, got 0
// Index values live on the GPU and are not read back: the kernel skips any index outside
// [0, num_blocks * page_block_size), so a wrong index can never cause an out-of-bounds read.
#include <cstdint>
#include <string>

#include "api/param_checks.h"
#include "flashmla/common.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/sparse_decode.h"

namespace flashmla {

namespace {

using Kind = Error::Kind;

using detail::str;

constexpr detail::ParamChecks kCheck("sparse_decode");
constexpr int64_t kVectorElems = 8;  // q and out rows move in 16-byte vectors
constexpr int64_t kVectorBytes = 16;
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;
constexpr int64_t kMaxGridDim = 65535;  // s_q and num_parts are grid dimensions y and z
constexpr int64_t kMaxQueryRows = int64_t(1) << 21;

void check_sizes(const SparseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  const bool known_format = p.kv_format == KVCacheFormat::kBFloat16 ||
                            p.kv_format == KVCacheFormat::kFp8V32 ||
                            p.kv_format == KVCacheFormat::kFp8Model1;
  kCheck.require(known_format, kUnsupported, "kv_format",
                 "kBFloat16 (0), kFp8V32 (1) or kFp8Model1 (2)", int64_t(p.kv_format));
  kCheck.require(p.batch >= 1, kBad, "batch", ">= 1", p.batch);
  kCheck.require(p.seqlen_q >= 1, kBad, "seqlen_q", ">= 1", p.seqlen_q);
  kCheck.require(p.seqlen_q <= kMaxGridDim, kUnsupported, "seqlen_q", "<= 65535", p.seqlen_q);
  kCheck.require(p.num_heads_q >= 1, kBad, "num_heads_q", ">= 1", p.num_heads_q);
  if (int64_t(p.seqlen_q) * p.num_heads_q > kMaxQueryRows) {
    kCheck.fail(kUnsupported, "num_heads_q",
                "seqlen_q * num_heads_q must be <= " + str(kMaxQueryRows) + ", got " +
                    str(int64_t(p.seqlen_q) * p.num_heads_q));
  }
  const int format_dim = kv_cache_format_head_dim(p.kv_format);
  if (format_dim != 0) {
    if (p.head_dim_qk != format_dim) {
      kCheck.fail_expected(kUnsupported, "head_dim_qk",
                           str(format_dim) + " for the " + to_string(p.kv_format) + " cache layout",
                           str(p.head_dim_qk));
    }
  } else {
    kCheck.require(p.head_dim_qk == 576 || p.head_dim_qk == 512, kUnsupported, "head_dim_qk",
                   "576 or 512", p.head_dim_qk);
  }
  kCheck.require(p.head_dim_v == 512, kUnsupported, "head_dim_v", "512", p.head_dim_v);
  kCheck.require_softmax_scale(p.softmax_scale);
}

// One token source ("main" or "extra"): sizes, layout strides, pointers, extent.
void check_source(const SparseDecodeParams& p, const SparseTokenSource& source,
                  const std::string& name) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  kCheck.require_pointer(source.k_cache, name + ".k_cache", kVectorBytes);
  kCheck.require_pointer(source.indices, name + ".indices", 4);
  if (source.topk_length != nullptr) {
    kCheck.require_pointer(source.topk_length, name + ".topk_length", 4);
  }
  kCheck.require(source.num_blocks >= 1, kBad, name + ".num_blocks", ">= 1", source.num_blocks);
  kCheck.require(source.page_block_size >= 1, kBad, name + ".page_block_size", ">= 1",
                 source.page_block_size);
  kCheck.require(source.topk >= 1, kBad, name + ".topk", ">= 1", source.topk);
  kCheck.require(source.indices_batch_stride >= 0, kBad, name + ".indices_batch_stride", ">= 0",
                 source.indices_batch_stride);
  kCheck.require(source.indices_seq_stride >= 0, kBad, name + ".indices_seq_stride", ">= 0",
                 source.indices_seq_stride);

  const int64_t min_block =
      kv_cache_min_block_bytes(p.kv_format, source.page_block_size, p.head_dim_qk);
  if (source.block_stride < min_block) {
    kCheck.fail_expected(kBad, name + ".block_stride",
                         ">= " + str(min_block) + " bytes (one page block of the " +
                             to_string(p.kv_format) + " layout)",
                         str(source.block_stride));
  }
  if (source.block_stride % kVectorBytes != 0) {
    kCheck.fail_expected(kUnsupported, name + ".block_stride", "a multiple of 16 bytes",
                         str(source.block_stride));
  }
  if (p.kv_format != KVCacheFormat::kFp8Model1) {
    const int64_t min_token = kv_cache_min_token_bytes(p.kv_format, p.head_dim_qk);
    if (source.token_stride < min_token) {
      kCheck.fail_expected(kBad, name + ".token_stride",
                           ">= " + str(min_token) + " bytes (one token)", str(source.token_stride));
    }
    if (source.token_stride % kVectorBytes != 0) {
      kCheck.fail_expected(kUnsupported, name + ".token_stride", "a multiple of 16 bytes",
                           str(source.token_stride));
    }
    // Tokens of a block must not run into the next block.
    const int64_t block_span =
        (int64_t(source.page_block_size) - 1) * source.token_stride + min_token;
    if (block_span > source.block_stride) {
      kCheck.fail_expected(kBad, name + ".block_stride",
                           ">= (page_block_size - 1) * token_stride + " + str(min_token) + " = " +
                               str(block_span) + " bytes",
                           str(source.block_stride));
    }
  }
  const __int128 cache_bytes = __int128(source.num_blocks - 1) * source.block_stride + min_block;
  if (cache_bytes > kMaxTensorBytes) {
    kCheck.fail_expected(kBad, name + ".k_cache", "at most 2^48 bytes given its shape and strides",
                         "more");
  }
  const __int128 index_extent = __int128(p.batch - 1) * source.indices_batch_stride +
                                __int128(p.seqlen_q - 1) * source.indices_seq_stride + source.topk;
  if (index_extent * 4 > kMaxTensorBytes) {
    kCheck.fail_expected(kBad, name + ".indices", "at most 2^48 bytes given its shape and strides",
                         "more");
  }
}

void check_tensors(const SparseDecodeParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  kCheck.require_pointer(p.q, "q", kVectorBytes);
  kCheck.require_pointer(p.out, "out", kVectorBytes);
  kCheck.require_pointer(p.lse, "lse", 4);
  if (p.attn_sink != nullptr) kCheck.require_pointer(p.attn_sink, "attn_sink", 4);

  const int64_t d_v = p.head_dim_v;
  kCheck.require_strides({
      {"q_batch_stride", p.q_batch_stride, 1, kVectorElems},
      {"q_seq_stride", p.q_seq_stride, 1, kVectorElems},
      {"q_head_stride", p.q_head_stride, 1, kVectorElems},
      {"out_batch_stride", p.out_batch_stride, d_v, kVectorElems},
      {"out_seq_stride", p.out_seq_stride, d_v, kVectorElems},
      {"out_head_stride", p.out_head_stride, d_v, kVectorElems},
      {"lse_batch_stride", p.lse_batch_stride, p.seqlen_q, 1},
      {"lse_head_stride", p.lse_head_stride, p.seqlen_q, 1},
  });

  const auto last = [](int64_t count, int64_t stride) { return __int128(count - 1) * stride; };
  const __int128 q_end = last(p.batch, p.q_batch_stride) + last(p.seqlen_q, p.q_seq_stride) +
                         last(p.num_heads_q, p.q_head_stride) + p.head_dim_qk;
  const __int128 out_end = last(p.batch, p.out_batch_stride) + last(p.seqlen_q, p.out_seq_stride) +
                           last(p.num_heads_q, p.out_head_stride) + p.head_dim_v;
  if (q_end * 2 > kMaxTensorBytes) kCheck.fail_expected(kBad, "q", "at most 2^48 bytes", "more");
  if (out_end * 2 > kMaxTensorBytes) {
    kCheck.fail_expected(kBad, "out", "at most 2^48 bytes", "more");
  }
}

void check_plan(const SparseDecodeParams& p) {
  kCheck.require_pointer(p.tile_scheduler_metadata, "tile_scheduler_metadata", 16);
  kCheck.require_pointer(p.num_splits, "num_splits", 4);
  kCheck.require_pointer(p.workspace, "workspace", 16);
  kCheck.require(p.num_parts >= 1, Kind::kInvalidArgument, "num_parts",
                 ">= 1 (from sparse_decode_num_parts)", p.num_parts);
  kCheck.require(p.num_parts <= kMaxGridDim, Kind::kUnsupported, "num_parts", "<= 65535",
                 p.num_parts);
  const size_t needed = sparse_decode_workspace_bytes(p);
  if (p.workspace_bytes < needed) {
    kCheck.fail_expected(Kind::kInvalidArgument, "workspace_bytes",
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
