// Random sparse-prefill problems on the host, shared by the CPU reference tests and the GPU
// tests: q and the selected kv rows N(0, 1)-like bfloat16 (FastNormal, as the sparse decode
// cases); NaN in every kv row no valid index selects (including a reserved set of rows that
// nothing valid ever selects) and in the padding of every stride; index lists mixing distinct
// random tokens with duplicates, -1 and out-of-range entries, shuffled over the list, and
// garbage past topk_length that points at the NaN rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "flashmla/sparse_prefill.h"
#include "reference/half_convert.h"
#include "reference/parallel_items.h"
#include "sparse_decode_case.h"  // FastNormal, SinkMode, kBf16NaN, random_*

namespace flashmla::testing {

struct SparsePrefillCase {
  int head_dim_qk = 576;
  int seqlen_q = 1;
  int num_heads_q = 16;
  int64_t num_kv_tokens = 256;
  int topk = 128;
  // topk_length: with random_topk_length, per query token random in [-2, topk + 8] (about one
  // in six 0, one in twelve negative); else, when topk_length is non-empty, query token s gets
  // topk_length[s % size]; else no topk_length array.
  bool random_topk_length = false;
  std::vector<int32_t> topk_length;
  double invalid_fraction = 0.1;      // listed entries that are -1 or out of range
  double duplicate_fraction = 0.03;   // listed entries repeating an earlier valid one
  double all_invalid_fraction = 0.0;  // query tokens whose listed entries are all invalid
  // kv rows that no valid entry selects (NaN rows, the target of the garbage past
  // topk_length): this fraction of num_kv_tokens, rounded down, fewer than num_kv_tokens.
  double nan_row_fraction = 1.0 / 16;
  SinkMode sink = SinkMode::kNone;
  // Elements of padding (NaN, or garbage for the indices) in the strides.
  int64_t q_head_pad = 0, q_seq_pad = 0, kv_token_pad = 0, indices_seq_pad = 0;
  float softmax_scale = 0.f;  // 0: head_dim_qk^-0.5
  uint32_t seed = 0;
};

// Host tensors of one instance. params() points into them, so keep this object alive (and do
// not copy it) while the params are in use.
class SparsePrefillHostData {
 public:
  explicit SparsePrefillHostData(const SparsePrefillCase& c) : c_(c) {
    if (c.seqlen_q < 1 || c.num_heads_q < 1 || c.num_kv_tokens < 1 || c.topk < 1) {
      throw std::invalid_argument("SparsePrefillCase: sizes must be >= 1");
    }
    std::mt19937 rng(c.seed);
    q_head_stride_ = c.head_dim_qk + c.q_head_pad;
    q_seq_stride_ = c.num_heads_q * q_head_stride_ + c.q_seq_pad;
    kv_token_stride_ = c.head_dim_qk + c.kv_token_pad;
    indices_seq_stride_ = c.topk + c.indices_seq_pad;

    fill_q();
    fill_lengths(rng);
    fill_indices(rng);
    fill_kv();
    fill_sink(rng);
  }
  SparsePrefillHostData(const SparsePrefillHostData&) = delete;
  SparsePrefillHostData& operator=(const SparsePrefillHostData&) = delete;

  // Params with HOST pointers to the tensors above; out, max_logits and lse unset.
  SparsePrefillParams params() const {
    SparsePrefillParams p;
    p.seqlen_q = c_.seqlen_q;
    p.num_heads_q = c_.num_heads_q;
    p.head_dim_qk = c_.head_dim_qk;
    p.head_dim_v = 512;
    p.softmax_scale = c_.softmax_scale > 0.f ? c_.softmax_scale
                                             : 1.f / std::sqrt(static_cast<float>(c_.head_dim_qk));
    p.q = q.data();
    p.q_seq_stride = q_seq_stride_;
    p.q_head_stride = q_head_stride_;
    p.kv = kv.data();
    p.num_kv_tokens = c_.num_kv_tokens;
    p.kv_token_stride = kv_token_stride_;
    p.indices = indices.data();
    p.indices_seq_stride = indices_seq_stride_;
    p.topk = c_.topk;
    p.topk_length = topk_length.empty() ? nullptr : topk_length.data();
    p.attn_sink = attn_sink.empty() ? nullptr : attn_sink.data();
    return p;
  }

  const SparsePrefillCase& config() const { return c_; }

  // Element (s, h, 0) of q; row t of kv; the index list of query token s (topk entries).
  uint16_t* q_row(int64_t s, int h) {
    return &q[size_t(s) * q_seq_stride_ + size_t(h) * q_head_stride_];
  }
  uint16_t* kv_row(int64_t t) { return &kv[size_t(t) * kv_token_stride_]; }
  int32_t* index_row(int64_t s) { return &indices[size_t(s) * indices_seq_stride_]; }

  // Entries of query token s's list that count: min(topk, topk_length[s]), at least 0.
  int listed_length(int64_t s) const {
    return topk_length.empty() ? c_.topk : std::clamp(topk_length[s], 0, c_.topk);
  }
  // Valid entries of query token s (duplicates counted).
  int valid_count(int64_t s) const {
    const int32_t* row = &indices[size_t(s) * indices_seq_stride_];
    int count = 0;
    for (int j = 0; j < listed_length(s); ++j) count += row[j] >= 0 && row[j] < c_.num_kv_tokens;
    return count;
  }

  // Sets kv row t to `values` (rounded to bfloat16; head_dim_qk of them) and marks it selected.
  void set_kv_row(int64_t t, const std::vector<float>& values) {
    uint16_t* row = kv_row(t);
    for (int d = 0; d < c_.head_dim_qk; ++d) row[d] = reference::float_to_bf16_bits(values[d]);
    selected[t] = 1;
  }

  std::vector<uint16_t> q;           // [s_q, h_q, d_qk] bfloat16 bits, padding NaN
  std::vector<uint16_t> kv;          // [s_kv, d_qk] bfloat16 bits; NaN rows and padding
  std::vector<int32_t> indices;      // [s_q, topk] with the padded stride
  std::vector<int32_t> topk_length;  // [s_q]; empty when the case has none
  std::vector<float> attn_sink;      // [h_q]; empty: none
  std::vector<uint8_t> selected;     // per kv row: 1 when some valid listed entry selects it
  std::vector<int64_t> nan_rows;     // rows reserved to stay NaN (never validly selected)

 private:
  // The seed of the FastNormal stream of row `row` of tensor `tensor`: hashed, so that the
  // streams (consecutive multiples of one constant) do not overlap.
  static uint64_t stream_seed(uint32_t seed, int tensor, int64_t row) {
    uint64_t z =
        (uint64_t(seed) << 33) ^ (uint64_t(tensor) << 32) ^ uint64_t(row) * 0x2545f4914f6cdd1dull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // q: one FastNormal stream per query token, so that the rows are generated in parallel and
  // the same whatever the thread count (s_q * h_q * d_qk reaches billions).
  void fill_q() {
    const SparsePrefillCase& c = c_;
    q.assign(size_t(c.seqlen_q) * q_seq_stride_, kBf16NaN);
    constexpr int64_t kRowsPerItem = 64;
    struct Item {
      int64_t first, count;
    };
    std::vector<Item> items;
    for (int64_t s = 0; s < c.seqlen_q; s += kRowsPerItem) {
      items.push_back({s, std::min<int64_t>(kRowsPerItem, c.seqlen_q - s)});
    }
    struct NoScratch {};
    struct Filler {
      SparsePrefillHostData* data;
      void run(const Item& item, NoScratch& /*scratch*/) const {
        const SparsePrefillCase& c = data->c_;
        for (int64_t s = item.first; s < item.first + item.count; ++s) {
          FastNormal normal(stream_seed(c.seed, 0, s));
          for (int h = 0; h < c.num_heads_q; ++h) {
            uint16_t* row = data->q_row(s, h);
            for (int d = 0; d < c.head_dim_qk; ++d)
              row[d] = reference::float_to_bf16_bits(normal());
          }
        }
      }
    };
    const double values = double(c.seqlen_q) * c.num_heads_q * c.head_dim_qk;
    const int threads = values < 1e7 ? 1 : reference::usable_threads();
    reference::run_items<NoScratch>(Filler{this}, items, std::min<int>(threads, int(items.size())));
  }

  void fill_lengths(std::mt19937& rng) {
    const SparsePrefillCase& c = c_;
    topk_length.clear();
    if (c.random_topk_length) {
      topk_length.resize(c.seqlen_q);
      std::uniform_int_distribution<int> kind(0, 11);
      std::uniform_int_distribution<int> length(1, c.topk + 8);
      for (auto& len : topk_length) {
        const int k = kind(rng);
        len = k < 2 ? 0 : k == 2 ? -std::uniform_int_distribution<int>(1, 2)(rng) : length(rng);
      }
    } else if (!c.topk_length.empty()) {
      topk_length.resize(c.seqlen_q);
      for (int s = 0; s < c.seqlen_q; ++s) topk_length[s] = c.topk_length[s % c.topk_length.size()];
    }
  }

  // An invalid entry: -1 most often, else out of range above or large negative.
  int32_t invalid_index(std::mt19937& rng) const {
    return random_invalid_index(c_.num_kv_tokens, rng);
  }

  // Garbage past topk_length and in the stride padding: a NaN row (reading it would show), or
  // an invalid entry.
  int32_t garbage_index(std::mt19937& rng) const {
    if (!nan_rows.empty() && std::uniform_int_distribution<int>(0, 3)(rng) != 0) {
      return static_cast<int32_t>(
          nan_rows[std::uniform_int_distribution<size_t>(0, nan_rows.size() - 1)(rng)]);
    }
    return invalid_index(rng);
  }

  void fill_indices(std::mt19937& rng) {
    const SparsePrefillCase& c = c_;
    const int64_t s_kv = c.num_kv_tokens;
    // Rows reserved to stay NaN, and the pool of the others (a permutation, kept shuffled by
    // the partial Fisher-Yates draws of every query token).
    std::vector<int64_t> pool(s_kv);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    const int64_t reserved =
        std::min<int64_t>(s_kv - 1, static_cast<int64_t>(double(s_kv) * c.nan_row_fraction));
    nan_rows.assign(pool.end() - reserved, pool.end());
    pool.resize(s_kv - reserved);
    const int64_t pool_size = static_cast<int64_t>(pool.size());

    indices.assign(size_t(c.seqlen_q) * indices_seq_stride_, 0);
    selected.assign(s_kv, 0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::vector<int32_t> valid;
    for (int64_t s = 0; s < c.seqlen_q; ++s) {
      int32_t* row = index_row(s);
      const int len = listed_length(s);
      const bool all_invalid = unit(rng) < c.all_invalid_fraction;
      int64_t drawn = 0;
      valid.clear();
      for (int j = 0; j < len; ++j) {
        const double u = unit(rng);
        if (all_invalid || u < c.invalid_fraction) {
          row[j] = invalid_index(rng);
        } else if (!valid.empty() && u < c.invalid_fraction + c.duplicate_fraction) {
          row[j] = valid[std::uniform_int_distribution<size_t>(0, valid.size() - 1)(rng)];
        } else if (drawn < pool_size) {
          std::swap(pool[drawn],
                    pool[std::uniform_int_distribution<int64_t>(drawn, pool_size - 1)(rng)]);
          row[j] = static_cast<int32_t>(pool[drawn++]);
          valid.push_back(row[j]);
          selected[row[j]] = 1;
        } else {
          row[j] = -1;  // more entries than rows: padding, as FlashMLA's callers do
        }
      }
      // Valid and invalid entries spread over the whole list.
      std::shuffle(row, row + len, rng);
      for (int64_t j = len; j < indices_seq_stride_; ++j) row[j] = garbage_index(rng);
    }
  }

  // kv: NaN everywhere, then N(0, 1)-like values in every selected row (FastNormal, one stream
  // per row).
  void fill_kv() {
    const SparsePrefillCase& c = c_;
    kv.assign(size_t(c.num_kv_tokens) * kv_token_stride_, kBf16NaN);
    for (int64_t t = 0; t < c.num_kv_tokens; ++t) {
      if (!selected[t]) continue;
      FastNormal normal(stream_seed(c.seed, 1, t));
      uint16_t* row = kv_row(t);
      for (int d = 0; d < c.head_dim_qk; ++d) row[d] = reference::float_to_bf16_bits(normal());
    }
  }

  // Ordinary sink values around a typical lse (log of the listed tokens).
  void fill_sink(std::mt19937& rng) {
    const SparsePrefillCase& c = c_;
    const double typical = std::log(double(std::min<int64_t>(c.topk, c.num_kv_tokens))) + 0.5;
    attn_sink = random_attn_sink(c.sink, c.num_heads_q, static_cast<float>(typical), 2.f, rng);
  }

  SparsePrefillCase c_;
  int64_t q_head_stride_ = 0, q_seq_stride_ = 0, kv_token_stride_ = 0, indices_seq_stride_ = 0;
};

}  // namespace flashmla::testing
