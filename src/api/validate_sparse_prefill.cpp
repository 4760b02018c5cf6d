// Host-side validation of SparsePrefillParams: everything that can be checked without reading
// device memory. Every failure names the argument, what was expected and what was got, e.g.
//   sparse_prefill: kv_token_stride must be >= 576, got 512
// kInvalidArgument: the call is wrong whatever the implementation (null, negative, too small).
// kUnsupported: the call is meaningful but this implementation does not handle it (head dims,
// more than 128 heads, alignment and stride multiples the 16-byte loads and stores need).
// Index values live on the GPU and are not read back: the kernel skips any index outside
// [0, num_kv_tokens), so a wrong index can never cause an out-of-bounds read.
#include <cstdint>
#include <limits>

#include "api/param_checks.h"
#include "flashmla/common.h"
#include "flashmla/sparse_prefill.h"

namespace flashmla {

namespace {

using Kind = Error::Kind;

constexpr detail::ParamChecks kCheck("sparse_prefill");
constexpr int64_t kVectorElems = 8;  // q, kv and out rows move in 16-byte vectors
constexpr int64_t kVectorBytes = 16;
// No real allocation spans more; also keeps every element offset far from int64 overflow.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;
constexpr int kMaxHeadsQ = 128;
// Indices are int32: tokens past this could never be selected.
constexpr int64_t kMaxKvTokens = std::numeric_limits<int32_t>::max();

void check_sizes(const SparsePrefillParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  constexpr Kind kUnsupported = Kind::kUnsupported;
  kCheck.require(p.seqlen_q >= 1, kBad, "seqlen_q", ">= 1", p.seqlen_q);
  kCheck.require(p.num_heads_q >= 1, kBad, "num_heads_q", ">= 1", p.num_heads_q);
  static_assert(kMaxHeadsQ == 128);
  kCheck.require(p.num_heads_q <= kMaxHeadsQ, kUnsupported, "num_heads_q", "<= 128", p.num_heads_q);
  kCheck.require(p.head_dim_qk == 576 || p.head_dim_qk == 512, kUnsupported, "head_dim_qk",
                 "576 or 512", p.head_dim_qk);
  kCheck.require(p.head_dim_v == 512, kUnsupported, "head_dim_v", "512", p.head_dim_v);
  kCheck.require_softmax_scale(p.softmax_scale);
  kCheck.require(p.num_kv_tokens >= 1, kBad, "num_kv_tokens", ">= 1", p.num_kv_tokens);
  kCheck.require(p.num_kv_tokens <= kMaxKvTokens, kUnsupported, "num_kv_tokens",
                 "<= 2147483647 (indices are int32)", p.num_kv_tokens);
  kCheck.require(p.topk >= 1, kBad, "topk", ">= 1", p.topk);
}

void check_tensors(const SparsePrefillParams& p) {
  constexpr Kind kBad = Kind::kInvalidArgument;
  kCheck.require_pointer(p.q, "q", kVectorBytes);
  kCheck.require_pointer(p.kv, "kv", kVectorBytes);
  kCheck.require_pointer(p.indices, "indices", 4);
  if (p.topk_length != nullptr) kCheck.require_pointer(p.topk_length, "topk_length", 4);
  if (p.attn_sink != nullptr) kCheck.require_pointer(p.attn_sink, "attn_sink", 4);
  kCheck.require_pointer(p.out, "out", kVectorBytes);
  kCheck.require_pointer(p.max_logits, "max_logits", 4);
  kCheck.require_pointer(p.lse, "lse", 4);

  // The same rules as sparse decode: every stride of a 16-byte-vector tensor is a multiple of 8
  // elements; an out row stride covers a whole row (d_v), a kv token stride a whole token
  // (d_qk), an index row its topk entries, and a row of max_logits / lse its h_q heads.
  const int64_t d_v = p.head_dim_v;
  // With one query token the index row stride is never used.
  const int64_t min_indices_stride = p.seqlen_q > 1 ? p.topk : 0;
  kCheck.require_strides({
      {"q_seq_stride", p.q_seq_stride, 1, kVectorElems},
      {"q_head_stride", p.q_head_stride, 1, kVectorElems},
      {"kv_token_stride", p.kv_token_stride, p.head_dim_qk, kVectorElems},
      {"indices_seq_stride", p.indices_seq_stride, min_indices_stride, 1},
      {"out_seq_stride", p.out_seq_stride, d_v, kVectorElems},
      {"out_head_stride", p.out_head_stride, d_v, kVectorElems},
      {"max_logits_seq_stride", p.max_logits_seq_stride, p.num_heads_q, 1},
      {"lse_seq_stride", p.lse_seq_stride, p.num_heads_q, 1},
  });

  // Extents in bytes (in 128 bits: the products of int sizes and int64 strides cannot
  // overflow), so that every offset the kernel forms stays far below 2^63.
  const auto last = [](int64_t count, int64_t stride) { return __int128(count - 1) * stride; };
  const __int128 q_end =
      last(p.seqlen_q, p.q_seq_stride) + last(p.num_heads_q, p.q_head_stride) + p.head_dim_qk;
  const __int128 kv_end = last(p.num_kv_tokens, p.kv_token_stride) + p.head_dim_qk;
  const __int128 indices_end = last(p.seqlen_q, p.indices_seq_stride) + p.topk;
  const __int128 out_end =
      last(p.seqlen_q, p.out_seq_stride) + last(p.num_heads_q, p.out_head_stride) + d_v;
  const __int128 max_logits_end = last(p.seqlen_q, p.max_logits_seq_stride) + p.num_heads_q;
  const __int128 lse_end = last(p.seqlen_q, p.lse_seq_stride) + p.num_heads_q;
  const char* const kLimit = "at most 2^48 bytes given its shape and strides";
  if (q_end * 2 > kMaxTensorBytes) kCheck.fail_expected(kBad, "q", kLimit, "more");
  if (kv_end * 2 > kMaxTensorBytes) kCheck.fail_expected(kBad, "kv", kLimit, "more");
  if (indices_end * 4 > kMaxTensorBytes) kCheck.fail_expected(kBad, "indices", kLimit, "more");
  if (out_end * 2 > kMaxTensorBytes) kCheck.fail_expected(kBad, "out", kLimit, "more");
  if (max_logits_end * 4 > kMaxTensorBytes)
    kCheck.fail_expected(kBad, "max_logits", kLimit, "more");
  if (lse_end * 4 > kMaxTensorBytes) kCheck.fail_expected(kBad, "lse", kLimit, "more");
}

}  // namespace

void validate_sparse_prefill(const SparsePrefillParams& params) {
  check_sizes(params);  // first: the later checks use the sizes as bounds
  check_tensors(params);
}

}  // namespace flashmla
