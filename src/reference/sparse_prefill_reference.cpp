// CPU reference of sparse MLA prefill. Two-pass softmax in double over the valid tokens of each
// query token; the loop order only serves speed at GPU-test sizes (thousands of query tokens,
// h_q = 128, top-k up to 8192), as in the sparse decode reference:
//  - work is split into items of one query token and its heads, so that the K rows of that
//    token's index list are converted once and reused by all heads;
//  - dot products are computed for 8 heads at once with q stored transposed ([d][8]), which
//    gives 8 independent accumulators per K element (vectorisable without reassociating any
//    sum, so the result does not depend on the compiler);
//  - items run on several threads; when there are fewer query tokens than threads, the heads
//    of a token are split over several items (each then converts the rows again).
#include "reference/sparse_prefill_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "reference/half_convert.h"
#include "reference/parallel_items.h"

namespace flashmla::reference {

namespace {

constexpr int kHeadBlock = 8;  // heads whose dot products share one pass over a K row

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

// A query token's heads [first_head, first_head + num_heads).
struct WorkItem {
  int query_idx;
  int first_head;
  int num_heads;
};

// Per-thread buffers, reused across items.
struct Scratch {
  std::vector<float> keys;      // [tokens][head_dim_qk]
  std::vector<double> q_t;      // [head blocks][head_dim_qk][kHeadBlock]
  std::vector<double> weights;  // [head blocks][tokens][kHeadBlock]: logits, then weights
  std::vector<double> acc;      // [head blocks * kHeadBlock][head_dim_v]
  std::vector<double> acc_abs;  // like acc, of w * |v| (only when out_abs is requested)
};

class ItemComputer {
 public:
  ItemComputer(const SparsePrefillParams& p, float* out, float* max_logits, float* lse,
               float* out_abs)
      : p_(p), out_(out), max_logits_(max_logits), lse_(lse), out_abs_(out_abs) {}

  void run(const WorkItem& item, Scratch& s) const {
    const int d_qk = p_.head_dim_qk;
    const int d_v = p_.head_dim_v;
    const int blocks = (item.num_heads + kHeadBlock - 1) / kHeadBlock;

    // The valid tokens, in list order, converted once for every head.
    gather_keys(item, s);
    const int64_t tokens = static_cast<int64_t>(s.keys.size() / d_qk);

    s.q_t.assign(size_t(blocks) * d_qk * kHeadBlock, 0.0);
    for (int r = 0; r < item.num_heads; ++r) {
      const uint16_t* q_row = static_cast<const uint16_t*>(p_.q) +
                              item.query_idx * p_.q_seq_stride +
                              (item.first_head + r) * p_.q_head_stride;
      double* q_t = &s.q_t[size_t(r / kHeadBlock) * d_qk * kHeadBlock + r % kHeadBlock];
      for (int d = 0; d < d_qk; ++d) q_t[size_t(d) * kHeadBlock] = bf16_bits_to_float(q_row[d]);
    }

    // Pass 1: scaled logits of every head against every token.
    const double scale = p_.softmax_scale;
    s.weights.assign(size_t(blocks) * tokens * kHeadBlock, 0.0);
    for (int b = 0; b < blocks; ++b) {
      const double* q_t = &s.q_t[size_t(b) * d_qk * kHeadBlock];
      for (int64_t t = 0; t < tokens; ++t) {
        const float* key = &s.keys[size_t(t) * d_qk];
        double dot[kHeadBlock] = {};
        for (int d = 0; d < d_qk; ++d) {
          const double k = key[d];
          for (int r = 0; r < kHeadBlock; ++r) dot[r] += q_t[d * kHeadBlock + r] * k;
        }
        double* logits = &s.weights[(size_t(b) * tokens + t) * kHeadBlock];
        for (int r = 0; r < kHeadBlock; ++r) logits[r] = scale * dot[r];
      }
    }

    // Softmax per head: logits become weights, including the sink factor
    // exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)) (0 for sink = +inf, 1 for
    // sink = -inf).
    double head_lse[kMaxItemHeads];
    double head_max[kMaxItemHeads];
    for (int r = 0; r < blocks * kHeadBlock; ++r) {
      double* w = &s.weights[size_t(r / kHeadBlock) * tokens * kHeadBlock + r % kHeadBlock];
      const auto at = [&](int64_t t) -> double& { return w[t * kHeadBlock]; };
      head_max[r] = -std::numeric_limits<double>::infinity();
      if (tokens == 0 || r >= item.num_heads) {
        head_lse[r] = std::numeric_limits<double>::infinity();
        for (int64_t t = 0; t < tokens; ++t) at(t) = 0.0;
        continue;
      }
      for (int64_t t = 0; t < tokens; ++t) head_max[r] = std::max(head_max[r], at(t));
      double sum = 0.0;
      for (int64_t t = 0; t < tokens; ++t) sum += std::exp(at(t) - head_max[r]);
      head_lse[r] = head_max[r] + std::log(sum);
      double factor = 1.0;
      if (p_.attn_sink != nullptr) {
        const double sink = p_.attn_sink[item.first_head + r];
        factor = 1.0 / (1.0 + std::exp(sink - head_lse[r]));
      }
      for (int64_t t = 0; t < tokens; ++t) at(t) = factor * (std::exp(at(t) - head_max[r]) / sum);
    }

    // Pass 2: weighted sum of the V rows (the first d_v columns of K).
    const bool want_abs = out_abs_ != nullptr;
    s.acc.assign(size_t(blocks) * kHeadBlock * d_v, 0.0);
    if (want_abs) s.acc_abs.assign(s.acc.size(), 0.0);
    for (int b = 0; b < blocks; ++b) {
      for (int64_t t = 0; t < tokens; ++t) {
        const float* value = &s.keys[size_t(t) * d_qk];
        const double* weights = &s.weights[(size_t(b) * tokens + t) * kHeadBlock];
        for (int r = 0; r < kHeadBlock; ++r) {
          const double w = weights[r];
          if (w == 0.0) continue;  // padding head, sink +inf, or underflowed: adds nothing
          double* acc = &s.acc[(size_t(b) * kHeadBlock + r) * d_v];
          for (int d = 0; d < d_v; ++d) acc[d] += w * value[d];
          if (want_abs) {
            double* acc_abs = &s.acc_abs[(size_t(b) * kHeadBlock + r) * d_v];
            for (int d = 0; d < d_v; ++d) acc_abs[d] += w * std::fabs(value[d]);
          }
        }
      }
    }

    for (int r = 0; r < item.num_heads; ++r) {
      const int64_t row = int64_t(item.query_idx) * p_.num_heads_q + item.first_head + r;
      const double* acc = &s.acc[size_t(r) * d_v];  // blocks are contiguous: r indexes directly
      float* out = out_ + row * d_v;
      for (int d = 0; d < d_v; ++d) out[d] = static_cast<float>(acc[d]);
      if (want_abs) {
        const double* acc_abs = &s.acc_abs[size_t(r) * d_v];
        float* out_abs = out_abs_ + row * d_v;
        for (int d = 0; d < d_v; ++d) out_abs[d] = static_cast<float>(acc_abs[d]);
      }
      max_logits_[row] = static_cast<float>(head_max[r]);
      lse_[row] = static_cast<float>(head_lse[r]);
    }
  }

  static constexpr int kMaxItemHeads = 256;  // items never hold more heads (see make_items)

 private:
  // The rows of the valid entries of this query token's index list, as floats, into s.keys.
  // Rows of invalid entries are never touched.
  void gather_keys(const WorkItem& item, Scratch& s) const {
    const int d_qk = p_.head_dim_qk;
    const int len = listed_length(p_, item.query_idx);
    const int32_t* indices = p_.indices + item.query_idx * p_.indices_seq_stride;
    const auto* kv = static_cast<const uint16_t*>(p_.kv);
    s.keys.clear();
    for (int j = 0; j < len; ++j) {
      const int64_t index = indices[j];
      if (index < 0 || index >= p_.num_kv_tokens) continue;
      const uint16_t* row = kv + index * p_.kv_token_stride;
      const size_t at = s.keys.size();
      s.keys.resize(at + d_qk);
      for (int d = 0; d < d_qk; ++d) s.keys[at + d] = bf16_bits_to_float(row[d]);
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
  const int64_t query_tokens = p.seqlen_q;
  const int64_t groups = std::max<int64_t>(1, (threads + query_tokens - 1) / query_tokens);
  int heads_per_item = static_cast<int>((p.num_heads_q + groups - 1) / groups);
  heads_per_item = (heads_per_item + kHeadBlock - 1) / kHeadBlock * kHeadBlock;
  heads_per_item = std::min(heads_per_item, ItemComputer::kMaxItemHeads);
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
  run_items<Scratch>(ItemComputer(params, out, max_logits, lse, out_abs), items, threads);
}

}  // namespace flashmla::reference
