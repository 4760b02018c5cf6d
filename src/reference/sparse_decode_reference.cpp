// CPU reference of sparse MLA decode. Two-pass softmax in double over the valid tokens of each
// query; the loop order only serves speed at GPU-test sizes (b = 64, h_q = 128, top-k 2048, or
// top-k 16384 for a few queries, in seconds):
//  - work is split into items of one query token (sequence i, position s) and its heads, so
//    that the K rows of that token's index lists are dequantized once and reused by all heads;
//  - the heads attend to those rows in blocks of 8 (gathered_rows_attention.h, shared with the
//    sparse prefill reference);
//  - items run on several threads; when there are fewer query tokens than threads, the heads
//    of a token are split over several items (each then dequantizes the rows again).
#include "reference/sparse_decode_reference.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "reference/gathered_rows_attention.h"
#include "reference/half_convert.h"
#include "reference/kv_cache_reference.h"
#include "reference/parallel_items.h"

namespace flashmla::reference {

namespace {

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

// A query token's heads [first_head, first_head + num_heads), at most kMaxAttentionHeads.
struct WorkItem {
  int batch_idx;
  int query_idx;
  int first_head;
  int num_heads;
};

// Per-thread buffers, reused across items.
struct Scratch {
  GatheredRowsAttention attention;  // its keys: [tokens][head_dim_qk], dequantized
  std::vector<uint16_t> row;        // one dequantized row, bfloat16 bits
};

class ItemComputer {
 public:
  ItemComputer(const SparseDecodeParams& p, float* out, float* lse, float* out_abs,
               float* max_logit)
      : p_(p), out_(out), lse_(lse), out_abs_(out_abs), max_logit_(max_logit) {}

  void run(const WorkItem& item, Scratch& s) const {
    const int d_qk = p_.head_dim_qk;
    const int d_v = p_.head_dim_v;
    GatheredRowsAttention& a = s.attention;

    // The valid tokens, main list first, in list order, dequantized once for every head.
    a.keys.clear();
    s.row.resize(d_qk);
    gather_keys(p_.main, item, s);
    if (has_extra(p_)) gather_keys(p_.extra, item, s);

    const uint16_t* q = static_cast<const uint16_t*>(p_.q) + item.batch_idx * p_.q_batch_stride +
                        item.query_idx * p_.q_seq_stride + item.first_head * p_.q_head_stride;
    const float* sink = p_.attn_sink != nullptr ? p_.attn_sink + item.first_head : nullptr;
    const bool want_abs = out_abs_ != nullptr;
    attend_gathered_rows(q, p_.q_head_stride, item.num_heads, d_qk, d_v, p_.softmax_scale, sink,
                         want_abs, a);

    for (int r = 0; r < item.num_heads; ++r) {
      const int head = item.first_head + r;
      const int64_t out_offset =
          ((int64_t(item.batch_idx) * p_.seqlen_q + item.query_idx) * p_.num_heads_q + head) * d_v;
      const double* acc = &a.acc[size_t(r) * d_v];
      for (int d = 0; d < d_v; ++d) out_[out_offset + d] = static_cast<float>(acc[d]);
      if (want_abs) {
        const double* acc_abs = &a.acc_abs[size_t(r) * d_v];
        for (int d = 0; d < d_v; ++d) out_abs_[out_offset + d] = static_cast<float>(acc_abs[d]);
      }
      const int64_t lse_offset =
          (int64_t(item.batch_idx) * p_.num_heads_q + head) * p_.seqlen_q + item.query_idx;
      lse_[lse_offset] = static_cast<float>(a.lse[r]);
      if (max_logit_ != nullptr) max_logit_[lse_offset] = static_cast<float>(a.max_logit[r]);
    }
  }

 private:
  // Appends the dequantized rows of the valid entries of `source`'s index list of this query
  // token to s.attention.keys. Rows of invalid entries are never touched.
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
      std::vector<float>& keys = s.attention.keys;
      const size_t at = keys.size();
      keys.resize(at + d_qk);
      for (int d = 0; d < d_qk; ++d) keys[at + d] = bf16_bits_to_float(s.row[d]);
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
  const int heads_per_item =
      heads_per_work_item(int64_t(p.batch) * p.seqlen_q, p.num_heads_q, threads);
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
