// The arithmetic both sparse CPU references (decode and prefill) share: the heads of one query
// token attending, in double, to a list of gathered token rows (two-pass softmax with the
// attention sink). Each reference gathers its rows (from a paged, possibly quantized cache or
// from a plain kv tensor) and lays the results out its own way.
#pragma once

#include <cstdint>
#include <vector>

namespace flashmla::reference {

// Heads whose dot products share one pass over a row: q is stored transposed ([d][8]), which
// gives 8 independent accumulators per row element (vectorisable without reassociating any
// sum, so the result does not depend on the compiler).
constexpr int kHeadBlock = 8;
// Heads of one query token that one call handles at most.
constexpr int kMaxAttentionHeads = 256;

// The input rows and the per-thread buffers, reused across calls; also holds the results.
struct GatheredRowsAttention {
  std::vector<float> keys;  // input: [tokens][head_dim_qk], the rows in list order

  // Results, per head r < num_heads:
  std::vector<double> acc;        // [r][head_dim_v]: sum over tokens of w * v
  std::vector<double> acc_abs;    // like acc, of w * |v| (only when asked for)
  std::vector<double> lse;        // [r]: +inf with no token
  std::vector<double> max_logit;  // [r]: the largest scaled logit, -inf with no token

  // Working space.
  std::vector<double> q_t;      // [head blocks][head_dim_qk][kHeadBlock]
  std::vector<double> weights;  // [head blocks][tokens][kHeadBlock]: logits, then weights
};

// Attention of `num_heads` (<= kMaxAttentionHeads) heads of one query token over the rows of
// a.keys (their first head_dim_v columns are V): head r's q row (bfloat16 bits) starts at
// q + r * q_head_stride, its sink (when attn_sink is non-null) is attn_sink[r]. w, the weight
// of a row in acc, is its softmax weight times exp(lse) / (exp(lse) + exp(sink)); lse and
// max_logit leave the sink out. With no rows: acc 0, lse +inf, max_logit -inf.
void attend_gathered_rows(const uint16_t* q, int64_t q_head_stride, int num_heads, int head_dim_qk,
                          int head_dim_v, double softmax_scale, const float* attn_sink,
                          bool want_abs, GatheredRowsAttention& a);

// How many heads each work item of a reference holds: all of a query token's when there are at
// least `threads` query tokens; otherwise split (in multiples of kHeadBlock) so that every
// thread gets work.
int heads_per_work_item(int64_t query_tokens, int num_heads, int threads);

}  // namespace flashmla::reference
