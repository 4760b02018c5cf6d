// CPU reference of sparse MLA decode. Two-pass softmax in double over the valid tokens of each
// query; the loop order only serves speed at GPU-test sizes (b = 64, h_q = 128, top-k 2048, or
// top-k 16384 for a few queries, in seconds):
//  - work is split into items of one query token (sequence i, position s) and its heads, so
//    that the K rows of that token's index lists are dequantized once and reused by all heads;
//  - dot products are computed for 8 heads at once with q stored transposed ([d][8]), which
//    gives 8 independent accumulators per K element (vectorisable without reassociating any
//    sum, so the result does not depend on the compiler);
//  - items run on several threads; when there are fewer query tokens than threads, the heads
//    of a token are split over several items (each then dequantizes the rows again).
#include "reference/sparse_decode_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "reference/half_convert.h"
#include "reference/kv_cache_reference.h"
#include "reference/parallel_items.h"

namespace flashmla::reference {

namespace {

constexpr int kHeadBlock = 8;  // heads whose dot products share one pass over a K row

[[noreturn]] void fail(const std::string& argument, const std::string& message) {
  throw Error(Error::Kind::kInvalidArgument, argument,
              "sparse_decode_reference: " + argument + " " + message);
}

bool is_known_format(KVCacheFormat format) {
  return format == KVCacheFormat::kBFloat16 || format == KVCacheFormat::kFp8V32 ||
         format == KVCacheFormat::kFp8Model1;
}

bool has_extra(const SparseDecodeParams& p) {
  return p.extra.k_cache != nullptr;
}

void check_source(const SparseTokenSource& s, const std::string& name) {
  if (s.k_cache == nullptr) fail(name + ".k_cache", "must not be null");
  if (s.indices == nullptr) fail(name + ".indices", "must not be null");
  if (s.topk < 1) fail(name + ".topk", "must be >= 1, got " + std::to_string(s.topk));
  if (s.page_block_size < 1) {
    fail(name + ".page_block_size", "must be >= 1, got " + std::to_string(s.page_block_size));
  }
  if (s.num_blocks < 0) {
    fail(name + ".num_blocks", "must be >= 0, got " + std::to_string(s.num_blocks));
  }
}

// Everything the reference itself relies on; the device-side limits (alignment, strides,
// supported head counts, ...) are validate_sparse_decode's business, not the reference's.
void check_inputs(const SparseDecodeParams& p, const float* out, const float* lse) {
  if (!is_known_format(p.kv_format)) fail("kv_format", "is not a known KVCacheFormat");
  if (p.batch < 1) fail("batch", "must be >= 1, got " + std::to_string(p.batch));
  if (p.seqlen_q < 1) fail("seqlen_q", "must be >= 1, got " + std::to_string(p.seqlen_q));
  if (p.num_heads_q < 1) {
    fail("num_heads_q", "must be >= 1, got " + std::to_string(p.num_heads_q));
  }
  const int format_dim = kv_cache_format_head_dim(p.kv_format);
  if (format_dim != 0 ? p.head_dim_qk != format_dim : p.head_dim_qk < 1) {
    fail("head_dim_qk", std::string("does not fit the ") + to_string(p.kv_format) +
                            " cache format, got " + std::to_string(p.head_dim_qk));
  }
  if (p.head_dim_v < 1 || p.head_dim_v > p.head_dim_qk) {
    fail("head_dim_v", "must be in [1, head_dim_qk], got " + std::to_string(p.head_dim_v));
  }
  if (p.q == nullptr) fail("q", "must not be null");
  if (out == nullptr) fail("out", "must not be null");
  if (lse == nullptr) fail("lse", "must not be null");
  check_source(p.main, "main");
  if (has_extra(p)) check_source(p.extra, "extra");
}

// Index-list entries of sequence i that count: min(topk, topk_length[i]), at least 0.
int listed_length(const SparseTokenSource& s, int batch_idx) {
  if (s.topk_length == nullptr) return s.topk;
  return std::clamp<int>(s.topk_length[batch_idx], 0, s.topk);
}

// A query token's heads [first_head, first_head + num_heads).
struct WorkItem {
  int batch_idx;
  int query_idx;
  int first_head;
  int num_heads;
};

// Per-thread buffers, reused across items.
struct Scratch {
  std::vector<float> keys;      // [tokens][head_dim_qk], dequantized
  std::vector<uint16_t> row;    // one dequantized row, bfloat16 bits
  std::vector<double> q_t;      // [head blocks][head_dim_qk][kHeadBlock]
  std::vector<double> weights;  // [head blocks][tokens][kHeadBlock]: logits, then weights
  std::vector<double> acc;      // [head blocks * kHeadBlock][head_dim_v]
  std::vector<double> acc_abs;  // like acc, of w * |v| (only when out_abs is requested)
};

class ItemComputer {
 public:
  ItemComputer(const SparseDecodeParams& p, float* out, float* lse, float* out_abs,
               float* max_logit)
      : p_(p), out_(out), lse_(lse), out_abs_(out_abs), max_logit_(max_logit) {}

  void run(const WorkItem& item, Scratch& s) const {
    const int d_qk = p_.head_dim_qk;
    const int d_v = p_.head_dim_v;
    const int blocks = (item.num_heads + kHeadBlock - 1) / kHeadBlock;

    // The valid tokens, main list first, in list order, dequantized once for every head.
    s.keys.clear();
    s.row.resize(d_qk);
    gather_keys(p_.main, item, s);
    if (has_extra(p_)) gather_keys(p_.extra, item, s);
    const int64_t tokens = static_cast<int64_t>(s.keys.size() / d_qk);

    s.q_t.assign(size_t(blocks) * d_qk * kHeadBlock, 0.0);
    for (int r = 0; r < item.num_heads; ++r) {
      const uint16_t* q_row =
          static_cast<const uint16_t*>(p_.q) + item.batch_idx * p_.q_batch_stride +
          item.query_idx * p_.q_seq_stride + (item.first_head + r) * p_.q_head_stride;
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
    // exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)) (0 for sink = +inf).
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
      const int head = item.first_head + r;
      const int64_t out_offset =
          ((int64_t(item.batch_idx) * p_.seqlen_q + item.query_idx) * p_.num_heads_q + head) * d_v;
      const double* acc = &s.acc[size_t(r) * d_v];  // blocks are contiguous: r indexes directly
      for (int d = 0; d < d_v; ++d) out_[out_offset + d] = static_cast<float>(acc[d]);
      if (want_abs) {
        const double* acc_abs = &s.acc_abs[size_t(r) * d_v];
        for (int d = 0; d < d_v; ++d) out_abs_[out_offset + d] = static_cast<float>(acc_abs[d]);
      }
      const int64_t lse_offset =
          (int64_t(item.batch_idx) * p_.num_heads_q + head) * p_.seqlen_q + item.query_idx;
      lse_[lse_offset] = static_cast<float>(head_lse[r]);
      if (max_logit_ != nullptr) max_logit_[lse_offset] = static_cast<float>(head_max[r]);
    }
  }

  static constexpr int kMaxItemHeads = 256;  // items never hold more heads (see make_items)

 private:
  // Appends the dequantized rows of the valid entries of `source`'s index list of this query
  // token to s.keys. Rows of invalid entries are never touched.
  void gather_keys(const SparseTokenSource& source, const WorkItem& item, Scratch& s) const {
    const int d_qk = p_.head_dim_qk;
    const int len = listed_length(source, item.batch_idx);
    const int32_t* indices = source.indices + item.batch_idx * source.indices_batch_stride +
                             item.query_idx * source.indices_seq_stride;
    const int64_t slots = int64_t(source.num_blocks) * source.page_block_size;
    const auto* cache = static_cast<const uint8_t*>(source.k_cache);
    for (int j = 0; j < len; ++j) {
      const int64_t index = indices[j];
      if (index < 0 || index >= slots) continue;
      const int64_t block = index / source.page_block_size;
      const int row = static_cast<int>(index % source.page_block_size);
      dequantize_token_host(p_.kv_format, d_qk, cache + block * source.block_stride,
                            source.page_block_size, row, source.token_stride, s.row.data());
      const size_t at = s.keys.size();
      s.keys.resize(at + d_qk);
      for (int d = 0; d < d_qk; ++d) s.keys[at + d] = bf16_bits_to_float(s.row[d]);
    }
  }

  const SparseDecodeParams& p_;
  float* out_;
  float* lse_;
  float* out_abs_;    // optional
  float* max_logit_;  // optional
};

// One item per query token when there are enough of them; otherwise the heads of each token
// are split (in multiples of kHeadBlock) so that every thread gets work.
std::vector<WorkItem> make_items(const SparseDecodeParams& p, int threads) {
  const int64_t query_tokens = int64_t(p.batch) * p.seqlen_q;
  const int64_t groups = std::max<int64_t>(1, (threads + query_tokens - 1) / query_tokens);
  int heads_per_item = static_cast<int>((p.num_heads_q + groups - 1) / groups);
  heads_per_item = (heads_per_item + kHeadBlock - 1) / kHeadBlock * kHeadBlock;
  heads_per_item = std::min(heads_per_item, ItemComputer::kMaxItemHeads);
  std::vector<WorkItem> items;
  for (int i = 0; i < p.batch; ++i) {
    for (int s = 0; s < p.seqlen_q; ++s) {
      for (int h = 0; h < p.num_heads_q; h += heads_per_item) {
        items.push_back({i, s, h, std::min(heads_per_item, p.num_heads_q - h)});
      }
    }
  }
  return items;
}

// Multiply-adds of the whole problem (an upper bound: invalid entries are counted too).
double total_macs(const SparseDecodeParams& p) {
  double listed = 0;
  for (int i = 0; i < p.batch; ++i) {
    listed += listed_length(p.main, i);
    if (has_extra(p)) listed += listed_length(p.extra, i);
  }
  return listed * p.seqlen_q * p.num_heads_q * (p.head_dim_qk + p.head_dim_v);
}

}  // namespace

void sparse_decode_reference(const SparseDecodeParams& params, float* out, float* lse,
                             float* out_abs, float* max_logit) {
  check_inputs(params, out, lse);
  const double by_work = std::max(1.0, total_macs(params) / kMinMacsPerThread);
  const int wanted = static_cast<int>(std::min<double>(usable_threads(), by_work));
  const std::vector<WorkItem> items = make_items(params, wanted);
  const int threads = static_cast<int>(std::min<size_t>(wanted, items.size()));
  run_items<Scratch>(ItemComputer(params, out, lse, out_abs, max_logit), items, threads);
}

}  // namespace flashmla::reference
