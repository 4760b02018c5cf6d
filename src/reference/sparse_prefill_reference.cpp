// CPU reference of sparse MLA prefill. Two-pass softmax in double over the valid tokens of each
// query token; the loop order only serves speed at GPU-test sizes (thousands of query tokens,
// h_q = 128, top-k up to 8192), as in the sparse decode reference:
//  - work is split into items of one query token and its heads, so that the K rows of that
//    token's index list are converted once and reused by all heads;
//  - the heads attend to those rows in blocks of 8 (gathered_rows_attention.h, shared with the
//    sparse decode reference);
//  - items run on several threads; when there are fewer query tokens than threads, the heads
//    of a token are split over several items (each then converts the rows again).
#include "reference/sparse_prefill_reference.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "reference/gathered_rows_attention.h"
#include "reference/half_convert.h"
#include "reference/parallel_items.h"

namespace flashmla::reference {

namespace {

[[noreturn]] void fail(const std::string& argument, const std::string& message) {
  throw Error(Error::Kind::kInvalidArgument, argument,
              "sparse_prefill_reference: " + argument + " " + message);
}

// Everything the reference itself relies on; the device-side limits (alignment, strides,
// supported head counts and dims, ...) are validate_sparse_prefill's business.
void check_inputs(const SparsePrefillParams& p, const float* out, const float* max_logits,
                  const float* lse) {
  const auto at_least_one = [](const char* argument, int64_t value) {
    if (value < 1) fail(argument, "must be >= 1, got " + std::to_string(value));
  };
  at_least_one("seqlen_q", p.seqlen_q);
  at_least_one("num_heads_q", p.num_heads_q);
  at_least_one("head_dim_qk", p.head_dim_qk);
  if (p.head_dim_v < 1 || p.head_dim_v > p.head_dim_qk) {
    fail("head_dim_v", "must be in [1, head_dim_qk], got " + std::to_string(p.head_dim_v));
  }
  at_least_one("num_kv_tokens", p.num_kv_tokens);
  at_least_one("topk", p.topk);
  if (p.q == nullptr) fail("q", "must not be null");
  if (p.kv == nullptr) fail("kv", "must not be null");
  if (p.indices == nullptr) fail("indices", "must not be null");
  if (out == nullptr) fail("out", "must not be null");
  if (max_logits == nullptr) fail("max_logits", "must not be null");
  if (lse == nullptr) fail("lse", "must not be null");
}

// Index-list entries of query token s that count: min(topk, topk_length[s]), at least 0.
int listed_length(const SparsePrefillParams& p, int64_t s) {
  if (p.topk_length == nullptr) return p.topk;
  return std::clamp<int>(p.topk_length[s], 0, p.topk);
}

// A query token's heads [first_head, first_head + num_heads), at most kMaxAttentionHeads.
struct WorkItem {
  int query_idx;
  int first_head;
  int num_heads;
};

class ItemComputer {
 public:
  ItemComputer(const SparsePrefillParams& p, float* out, float* max_logits, float* lse,
               float* out_abs)
      : p_(p), out_(out), max_logits_(max_logits), lse_(lse), out_abs_(out_abs) {}

  void run(const WorkItem& item, GatheredRowsAttention& a) const {
    const int d_qk = p_.head_dim_qk;
    const int d_v = p_.head_dim_v;

    // The valid tokens, in list order, converted once for every head.
    gather_keys(item, a.keys);

    const uint16_t* q = static_cast<const uint16_t*>(p_.q) + item.query_idx * p_.q_seq_stride +
                        item.first_head * p_.q_head_stride;
    const float* sink = p_.attn_sink != nullptr ? p_.attn_sink + item.first_head : nullptr;
    const bool want_abs = out_abs_ != nullptr;
    attend_gathered_rows(q, p_.q_head_stride, item.num_heads, d_qk, d_v, p_.softmax_scale, sink,
                         want_abs, a);

    for (int r = 0; r < item.num_heads; ++r) {
      const int64_t row = int64_t(item.query_idx) * p_.num_heads_q + item.first_head + r;
      const double* acc = &a.acc[size_t(r) * d_v];
      float* out = out_ + row * d_v;
      for (int d = 0; d < d_v; ++d) out[d] = static_cast<float>(acc[d]);
      if (want_abs) {
        const double* acc_abs = &a.acc_abs[size_t(r) * d_v];
        float* out_abs = out_abs_ + row * d_v;
        for (int d = 0; d < d_v; ++d) out_abs[d] = static_cast<float>(acc_abs[d]);
      }
      max_logits_[row] = static_cast<float>(a.max_logit[r]);
      lse_[row] = static_cast<float>(a.lse[r]);
    }
  }

 private:
  // The rows of the valid entries of this query token's index list, as floats, into keys.
  // Rows of invalid entries are never touched.
  void gather_keys(const WorkItem& item, std::vector<float>& keys) const {
    const int d_qk = p_.head_dim_qk;
    const int len = listed_length(p_, item.query_idx);
    const int32_t* indices = p_.indices + item.query_idx * p_.indices_seq_stride;
    const auto* kv = static_cast<const uint16_t*>(p_.kv);
    keys.clear();
    for (int j = 0; j < len; ++j) {
      const int64_t index = indices[j];
      if (index < 0 || index >= p_.num_kv_tokens) continue;
      const uint16_t* row = kv + index * p_.kv_token_stride;
      const size_t at = keys.size();
      keys.resize(at + d_qk);
      for (int d = 0; d < d_qk; ++d) keys[at + d] = bf16_bits_to_float(row[d]);
    }
  }

  const SparsePrefillParams& p_;
  float* out_;
  float* max_logits_;
  float* lse_;
  float* out_abs_;  // optional
};

// One item per query token when there are enough of them; otherwise the heads of each token
// are split (in multiples of kHeadBlock) so that every thread gets work.
std::vector<WorkItem> make_items(const SparsePrefillParams& p, int threads) {
  const int heads_per_item = heads_per_work_item(p.seqlen_q, p.num_heads_q, threads);
  std::vector<WorkItem> items;
  for (int s = 0; s < p.seqlen_q; ++s) {
    for (int h = 0; h < p.num_heads_q; h += heads_per_item) {
      items.push_back({s, h, std::min(heads_per_item, p.num_heads_q - h)});
    }
  }
  return items;
}

// Multiply-adds of the whole problem (an upper bound: invalid entries are counted too).
double total_macs(const SparsePrefillParams& p) {
  double listed = 0;
  for (int s = 0; s < p.seqlen_q; ++s) listed += listed_length(p, s);
  return listed * p.num_heads_q * (p.head_dim_qk + p.head_dim_v);
}

}  // namespace

void sparse_prefill_reference(const SparsePrefillParams& params, float* out, float* max_logits,
                              float* lse, float* out_abs) {
  check_inputs(params, out, max_logits, lse);
  const double by_work = std::max(1.0, total_macs(params) / kMinMacsPerThread);
  const int wanted = static_cast<int>(std::min<double>(usable_threads(), by_work));
  const std::vector<WorkItem> items = make_items(params, wanted);
  const int threads = static_cast<int>(std::min<size_t>(wanted, items.size()));
  run_items<GatheredRowsAttention>(ItemComputer(params, out, max_logits, lse, out_abs), items,
                                   threads);
}

}  // namespace flashmla::reference
