// CPU reference of dense MLA decode. Straightforward two-pass softmax in double; the only
// cleverness is in the loop order, so that it stays usable for GPU-test sizes (b = 8,
// s_k = 8K, h_q = 128 takes seconds, not minutes):
//  - work is split into items of up to 32 query rows that share one (sequence, KV head);
//  - K rows are converted to float one tile of tokens at a time and reused by every row of
//    the item, so the cache is read and converted only twice per item;
//  - dot products are computed for 8 rows at once with q stored transposed ([d][8]), which
//    gives 8 independent accumulators per K element (vectorisable without reassociating any
//    sum, so the result does not depend on the compiler);
//  - items run on several threads.
#include "reference/dense_decode_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "reference/half_convert.h"
#include "reference/parallel_items.h"

namespace flashmla::reference {

namespace {

constexpr int kRowBlock = 8;       // rows whose dot products share one pass over a K row
constexpr int kItemRowBlocks = 4;  // row blocks per work item (they share each K tile)
constexpr int kTileTokens = 128;   // tokens converted to float at a time

[[noreturn]] void fail(const char* argument, const std::string& message) {
  throw Error(Error::Kind::kInvalidArgument, argument,
              std::string("dense_decode_reference: ") + argument + " " + message);
}

// Keys query j of a sequence of `seqlen` tokens attends: t < attended_tokens (bottom-right
// aligned causal mask; ignored for a single query token).
int64_t attended_tokens(const DenseDecodeParams& p, int64_t seqlen, int query_idx) {
  if (!p.causal || p.seqlen_q == 1) return seqlen;
  return std::clamp<int64_t>(seqlen - p.seqlen_q + query_idx + 1, 0, seqlen);
}

int64_t pages_needed(int64_t seqlen, int page_block_size) {
  return (seqlen + page_block_size - 1) / page_block_size;
}

// Everything the reference itself relies on; the device-side limits (alignment, supported
// head dims, ...) are validate_dense_decode's business, not the reference's.
void check_inputs(const DenseDecodeParams& p, const float* out, const float* lse) {
  if (p.dtype != ScalarType::kBFloat16 && p.dtype != ScalarType::kFloat16) {
    fail("dtype", "must be bfloat16 or float16");
  }
  if (p.batch < 0) fail("batch", "must be >= 0, got " + std::to_string(p.batch));
  if (p.seqlen_q < 1) fail("seqlen_q", "must be >= 1, got " + std::to_string(p.seqlen_q));
  if (p.num_heads_kv < 1) {
    fail("num_heads_kv", "must be >= 1, got " + std::to_string(p.num_heads_kv));
  }
  if (p.num_heads_q < 1 || p.num_heads_q % p.num_heads_kv != 0) {
    fail("num_heads_q",
         "must be a positive multiple of num_heads_kv, got " + std::to_string(p.num_heads_q));
  }
  if (p.head_dim_qk < 1) fail("head_dim_qk", "must be >= 1");
  if (p.head_dim_v < 1 || p.head_dim_v > p.head_dim_qk) {
    fail("head_dim_v", "must be in [1, head_dim_qk], got " + std::to_string(p.head_dim_v));
  }
  if (p.page_block_size < 1) fail("page_block_size", "must be >= 1");
  if (p.batch == 0) return;  // nothing to compute: no pointer is read
  const bool paged = p.block_table != nullptr;
  if (!paged) {
    // Non-paged cache: k_cache is [batch, page_block_size, h_kv, d_qk].
    if (p.num_blocks != p.batch) {
      fail("num_blocks", "must be batch (" + std::to_string(p.batch) +
                             ") when block_table is null (non-paged cache), got " +
                             std::to_string(p.num_blocks));
    }
    if (p.max_blocks_per_seq != 1) {
      fail("max_blocks_per_seq", "must be 1 when block_table is null (non-paged cache), got " +
                                     std::to_string(p.max_blocks_per_seq));
    }
  }
  if (p.q == nullptr) fail("q", "must not be null");
  if (p.k_cache == nullptr) fail("k_cache", "must not be null");
  if (p.cache_seqlens == nullptr) fail("cache_seqlens", "must not be null");
  if (out == nullptr) fail("out", "must not be null");
  if (lse == nullptr) fail("lse", "must not be null");
  for (int i = 0; i < p.batch; ++i) {
    const int64_t seqlen = p.cache_seqlens[i];
    if (seqlen < 0) {
      fail("cache_seqlens",
           "must be >= 0, got " + std::to_string(seqlen) + " at index " + std::to_string(i));
    }
    if (!paged) {
      if (seqlen > p.page_block_size) {
        fail("cache_seqlens", "[" + std::to_string(i) + "] = " + std::to_string(seqlen) +
                                  " exceeds the non-paged cache's page_block_size (" +
                                  std::to_string(p.page_block_size) + ")");
      }
      continue;
    }
    const int64_t pages = pages_needed(seqlen, p.page_block_size);
    if (pages > p.max_blocks_per_seq) {
      fail("block_table", "has " + std::to_string(p.max_blocks_per_seq) + " columns but sequence " +
                              std::to_string(i) + " needs " + std::to_string(pages));
    }
    for (int64_t c = 0; c < pages; ++c) {
      const int32_t block = p.block_table[i * p.block_table_batch_stride + c];
      if (block < 0 || block >= p.num_blocks) {
        fail("block_table", "entry [" + std::to_string(i) + ", " + std::to_string(c) +
                                "] = " + std::to_string(block) + " is outside [0, num_blocks)");
      }
    }
  }
}

// A run of query rows (r = query_idx * group + head_in_group) sharing one KV head.
struct WorkItem {
  int batch_idx;
  int kv_head;
  int first_row;
  int num_rows;
};

// Per-thread buffers, reused across items.
struct Scratch {
  std::vector<double> q_t;      // [row blocks][head_dim_qk][kRowBlock]
  std::vector<double> scores;   // [row blocks][tokens][kRowBlock]: logits, then weights
  std::vector<double> acc;      // [row blocks][kRowBlock][head_dim_v]
  std::vector<double> acc_abs;  // like acc, of w * |v| (only when out_abs is requested)
  std::vector<float> keys;      // [kTileTokens][columns]
};

class ItemComputer {
 public:
  ItemComputer(const DenseDecodeParams& p, float* out, float* lse, float* out_abs, float* max_logit)
      : p_(p), out_(out), lse_(lse), out_abs_(out_abs), max_logit_(max_logit) {}

  void run(const WorkItem& item, Scratch& s) const {
    const int group = p_.num_heads_q / p_.num_heads_kv;
    const int d_qk = p_.head_dim_qk;
    const int d_v = p_.head_dim_v;
    const int blocks = (item.num_rows + kRowBlock - 1) / kRowBlock;
    const int64_t seqlen = p_.cache_seqlens[item.batch_idx];

    int64_t limit[kItemRowBlocks * kRowBlock] = {};
    int64_t max_limit = 0;
    s.q_t.assign(size_t(blocks) * d_qk * kRowBlock, 0.0);
    for (int r = 0; r < item.num_rows; ++r) {
      const int row = item.first_row + r;
      limit[r] = attended_tokens(p_, seqlen, row / group);
      max_limit = std::max(max_limit, limit[r]);
      const uint16_t* q_row =
          q_row_ptr(item.batch_idx, row / group, item.kv_head * group + row % group);
      double* q_t = &s.q_t[size_t(r / kRowBlock) * d_qk * kRowBlock + r % kRowBlock];
      for (int d = 0; d < d_qk; ++d) q_t[size_t(d) * kRowBlock] = to_float(q_row[d]);
    }

    // Pass 1: scaled logits of every row against tokens [0, max_limit).
    const double scale = p_.softmax_scale;
    s.scores.assign(size_t(blocks) * max_limit * kRowBlock, 0.0);
    for (int64_t t0 = 0; t0 < max_limit; t0 += kTileTokens) {
      const int tile = static_cast<int>(std::min<int64_t>(kTileTokens, max_limit - t0));
      load_keys(item, t0, tile, d_qk, s.keys);
      for (int b = 0; b < blocks; ++b) {
        const double* q_t = &s.q_t[size_t(b) * d_qk * kRowBlock];
        for (int tt = 0; tt < tile; ++tt) {
          const float* key = &s.keys[size_t(tt) * d_qk];
          double dot[kRowBlock] = {};
          for (int d = 0; d < d_qk; ++d) {
            const double k = key[d];
            for (int r = 0; r < kRowBlock; ++r) dot[r] += q_t[d * kRowBlock + r] * k;
          }
          double* logits = &s.scores[(size_t(b) * max_limit + t0 + tt) * kRowBlock];
          for (int r = 0; r < kRowBlock; ++r) logits[r] = scale * dot[r];
        }
      }
    }

    // Softmax per row: logits become normalised weights (0 past the row's causal limit, and
    // for the padding rows of the last block, whose limit stays 0).
    double row_lse[kItemRowBlocks * kRowBlock];
    double row_max[kItemRowBlocks * kRowBlock];
    for (int r = 0; r < blocks * kRowBlock; ++r) {
      double* scores = &s.scores[size_t(r / kRowBlock) * max_limit * kRowBlock + r % kRowBlock];
      const auto at = [&](int64_t t) -> double& { return scores[t * kRowBlock]; };
      if (limit[r] == 0) {
        row_lse[r] = std::numeric_limits<double>::infinity();
        row_max[r] = -std::numeric_limits<double>::infinity();
        for (int64_t t = 0; t < max_limit; ++t) at(t) = 0.0;
        continue;
      }
      double max_logit = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < limit[r]; ++t) max_logit = std::max(max_logit, at(t));
      double sum = 0.0;
      for (int64_t t = 0; t < limit[r]; ++t) sum += std::exp(at(t) - max_logit);
      row_lse[r] = max_logit + std::log(sum);
      row_max[r] = max_logit;
      for (int64_t t = 0; t < limit[r]; ++t) at(t) = std::exp(at(t) - max_logit) / sum;
      for (int64_t t = limit[r]; t < max_limit; ++t) at(t) = 0.0;
    }

    // Pass 2: weighted sum of the V rows (the first d_v columns of K).
    s.acc.assign(size_t(blocks) * kRowBlock * d_v, 0.0);
    const bool want_abs = out_abs_ != nullptr;
    if (want_abs) s.acc_abs.assign(size_t(blocks) * kRowBlock * d_v, 0.0);
    for (int64_t t0 = 0; t0 < max_limit; t0 += kTileTokens) {
      const int tile = static_cast<int>(std::min<int64_t>(kTileTokens, max_limit - t0));
      load_keys(item, t0, tile, d_v, s.keys);
      for (int b = 0; b < blocks; ++b) {
        for (int tt = 0; tt < tile; ++tt) {
          const float* value = &s.keys[size_t(tt) * d_v];
          const double* weights = &s.scores[(size_t(b) * max_limit + t0 + tt) * kRowBlock];
          for (int r = 0; r < kRowBlock; ++r) {
            const double w = weights[r];
            if (w == 0.0) continue;  // masked, padding, or underflowed: adds nothing
            double* acc = &s.acc[(size_t(b) * kRowBlock + r) * d_v];
            for (int d = 0; d < d_v; ++d) acc[d] += w * value[d];
            if (want_abs) {
              double* acc_abs = &s.acc_abs[(size_t(b) * kRowBlock + r) * d_v];
              for (int d = 0; d < d_v; ++d) acc_abs[d] += w * std::fabs(value[d]);
            }
          }
        }
      }
    }

    for (int r = 0; r < item.num_rows; ++r) {
      const int row = item.first_row + r;
      const int query_idx = row / group;
      const int head = item.kv_head * group + row % group;
      const double* acc = &s.acc[size_t(r) * d_v];  // blocks are contiguous: r indexes directly
      const int64_t out_offset =
          ((int64_t(item.batch_idx) * p_.seqlen_q + query_idx) * p_.num_heads_q + head) * d_v;
      float* o = out_ + out_offset;
      for (int d = 0; d < d_v; ++d) o[d] = static_cast<float>(acc[d]);
      const int64_t lse_offset =
          (int64_t(item.batch_idx) * p_.num_heads_q + head) * p_.seqlen_q + query_idx;
      lse_[lse_offset] = static_cast<float>(row_lse[r]);
      if (want_abs) {
        const double* acc_abs = &s.acc_abs[size_t(r) * d_v];
        float* o_abs = out_abs_ + out_offset;
        for (int d = 0; d < d_v; ++d) o_abs[d] = static_cast<float>(acc_abs[d]);
      }
      if (max_logit_ != nullptr) max_logit_[lse_offset] = static_cast<float>(row_max[r]);
    }
  }

 private:
  float to_float(uint16_t bits) const { return half_bits_to_float(p_.dtype, bits); }

  const uint16_t* q_row_ptr(int batch_idx, int query_idx, int head) const {
    return static_cast<const uint16_t*>(p_.q) + batch_idx * p_.q_batch_stride +
           query_idx * p_.q_seq_stride + head * p_.q_head_stride;
  }

  // Converts the first `columns` entries of tokens [t0, t0 + count) of this item's sequence
  // and KV head into keys[count][columns]. Reads only rows of tokens below the length.
  void load_keys(const WorkItem& item, int64_t t0, int count, int columns,
                 std::vector<float>& keys) const {
    keys.resize(size_t(count) * columns);
    const auto* cache = static_cast<const uint16_t*>(p_.k_cache);
    // Non-paged (no table): sequence i is block i and every token is below page_block_size.
    const int32_t* table = p_.block_table == nullptr
                               ? nullptr
                               : p_.block_table + item.batch_idx * p_.block_table_batch_stride;
    for (int tt = 0; tt < count; ++tt) {
      const int64_t t = t0 + tt;
      const int64_t block = table == nullptr ? item.batch_idx : table[t / p_.page_block_size];
      const uint16_t* row = cache + block * p_.k_block_stride +
                            (t % p_.page_block_size) * p_.k_token_stride +
                            int64_t(item.kv_head) * p_.k_head_stride;
      float* dst = &keys[size_t(tt) * columns];
      if (p_.dtype == ScalarType::kBFloat16) {
        for (int d = 0; d < columns; ++d) dst[d] = bf16_bits_to_float(row[d]);
      } else {
        for (int d = 0; d < columns; ++d) dst[d] = fp16_bits_to_float(row[d]);
      }
    }
  }

  const DenseDecodeParams& p_;
  float* out_;
  float* lse_;
  float* out_abs_;    // optional
  float* max_logit_;  // optional
};

}  // namespace

void dense_decode_reference(const DenseDecodeParams& params, float* out, float* lse, float* out_abs,
                            float* max_logit) {
  check_inputs(params, out, lse);
  if (params.batch == 0) return;
  const int rows = params.seqlen_q * (params.num_heads_q / params.num_heads_kv);
  // Big items share each converted K tile among more rows; small ones give every thread
  // work when there are few (sequence, KV head) pairs (e.g. one long sequence).
  constexpr int kBigItemRows = kItemRowBlocks * kRowBlock;
  const int64_t big_items =
      int64_t(params.batch) * params.num_heads_kv * ((rows + kBigItemRows - 1) / kBigItemRows);
  const int item_rows = big_items >= usable_threads() ? kBigItemRows : kRowBlock;
  std::vector<WorkItem> items;
  double macs = 0;
  for (int i = 0; i < params.batch; ++i) {
    for (int h = 0; h < params.num_heads_kv; ++h) {
      for (int r = 0; r < rows; r += item_rows) {
        items.push_back({i, h, r, std::min(item_rows, rows - r)});
      }
    }
    macs += double(rows) * params.num_heads_kv * params.cache_seqlens[i] *
            (params.head_dim_qk + params.head_dim_v);
  }
  // Several threads when the work is large enough to pay for them.
  const double by_work = std::max(1.0, macs / kMinMacsPerThread);
  const int threads =
      static_cast<int>(std::min<double>({double(usable_threads()), double(items.size()), by_work}));
  run_items<Scratch>(ItemComputer(params, out, lse, out_abs, max_logit), items, threads);
}

void round_output_to_dtype(const DenseDecodeParams& params, const float* out, uint16_t* out_bits,
                           int64_t count) {
  floats_to_half_bits(params.dtype, out, out_bits, static_cast<size_t>(count));
}

}  // namespace flashmla::reference
