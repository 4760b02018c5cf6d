// Random sparse-decode problems on the host, shared by the CPU reference tests and the GPU
// tests, for every cache format: a bfloat16 latent row for every token some valid index selects,
// quantized into the cache with write_kv_cache_host; NaN in every cache row no valid index
// selects (e4m3 0x7f, bfloat16 0x7fc0, float32 NaN scales) and 0xff in the gaps between blocks
// and rows; index lists mixing distinct tokens of the sequence's own (shuffled) pages with -1
// and out-of-range entries, and garbage past topk_length that points at NaN rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "flashmla/sparse_decode.h"
#include "reference/half_convert.h"

namespace flashmla::testing {

// One cache and its index lists (the main one or the extra one) of a case.
struct SparseSourceConfig {
  int topk = 64;
  int page_block_size = 64;
  // Tokens each sequence owns in the cache: random in [min, max]; 0 for both means
  // [topk / 2 + 1, 2 * topk]. Positions past what a sequence owns are -1 (as FlashMLA pads).
  int cache_tokens_min = 0, cache_tokens_max = 0;
  // Empty: no topk_length array. Otherwise one entry per sequence (may be 0, < 0 or > topk).
  std::vector<int32_t> topk_length;
  double invalid_fraction = 0.1;      // listed entries replaced by -1 or an out-of-range index
  double all_invalid_fraction = 0.0;  // query tokens whose listed entries are all invalid
  int unused_blocks = 2;              // pages no sequence owns: NaN rows for the garbage
  int64_t block_gap_bytes = -1;       // 0xff bytes after each block; -1: one token row's worth
  int64_t token_pad_bytes = 0;        // kBFloat16 / kFp8V32: 0xff bytes after each token row
  int64_t indices_seq_pad = 0, indices_batch_pad = 0;  // elements of garbage in the strides
};

enum class SinkMode {
  kNone,      // attn_sink = nullptr
  kMixed,     // per head: ordinary values around a typical lse, +inf and -inf
  kPlusInf,   // every head +inf: out = 0
  kMinusInf,  // every head -inf: out unchanged
};

struct SparseDecodeCase {
  KVCacheFormat format = KVCacheFormat::kFp8V32;
  int head_dim_qk = 0;  // 0: the format's (576 for kBFloat16)
  int batch = 1;
  int seqlen_q = 1;
  int num_heads_q = 16;
  SparseSourceConfig main;
  bool has_extra = false;
  SparseSourceConfig extra;
  SinkMode sink = SinkMode::kNone;
  int64_t q_head_pad = 0, q_seq_pad = 0, q_batch_pad = 0;  // elements (NaN) in q's strides
  float softmax_scale = 0.f;                               // 0: head_dim_qk^-0.5
  uint32_t seed = 0;

  int resolved_head_dim_qk() const {
    if (head_dim_qk != 0) return head_dim_qk;
    return format == KVCacheFormat::kFp8Model1 ? kFp8Model1HeadDim : kFp8V32HeadDim;
  }
};

inline constexpr uint16_t kBf16NaN = 0x7fc0;
inline constexpr uint8_t kE4m3NaN = 0x7f;
inline constexpr uint8_t kGapByte = 0xff;  // NaN as e4m3, e8m0, bfloat16 and float32 alike

// "N(0, 1)-like" values, fast enough for millions of cache values per case: the sum of four
// uniform 16-bit draws of splitmix64, centred and scaled to variance 1 (range +-3.46).
class FastNormal {
 public:
  explicit FastNormal(uint64_t seed) : state_(seed) {}
  float operator()() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const double sum = double(z & 0xffff) + double((z >> 16) & 0xffff) +
                       double((z >> 32) & 0xffff) + double(z >> 48);
    // Four uniforms on [0, 65535]: mean 2 * 65535, variance 4 * 65536^2 / 12.
    return static_cast<float>((sum - 2.0 * 65535.0) * (std::sqrt(3.0) / 65536.0));
  }

 private:
  uint64_t state_;
};

// An invalid index-list entry for a list over `rows` rows: -1 most often, else out of range
// above or large negative.
inline int32_t random_invalid_index(int64_t rows, std::mt19937& rng) {
  const int64_t choices[] = {-1,
                             -1,
                             -1,
                             rows,
                             rows + 1,
                             rows + 12345,
                             std::numeric_limits<int32_t>::max(),
                             std::numeric_limits<int32_t>::min(),
                             -123456,
                             -2};
  const int64_t value = choices[std::uniform_int_distribution<int>(0, 9)(rng)];
  return static_cast<int32_t>(std::clamp<int64_t>(value, std::numeric_limits<int32_t>::min(),
                                                  std::numeric_limits<int32_t>::max()));
}

// attn_sink per head as `mode` says (empty for kNone). Ordinary values of kMixed are drawn from
// N(typical_lse, spread^2) around a typical lse, so that the factor exp(lse) / (exp(lse) +
// exp(sink)) is neither 0 nor 1.
inline std::vector<float> random_attn_sink(SinkMode mode, int num_heads, float typical_lse,
                                           float spread, std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 3);
  std::normal_distribution<float> around_lse(typical_lse, spread);
  constexpr float inf = std::numeric_limits<float>::infinity();
  std::vector<float> sink;
  switch (mode) {
    case SinkMode::kNone:
      break;
    case SinkMode::kMixed:
      sink.resize(num_heads);
      for (auto& v : sink) {
        const int k = kind(rng);
        v = k == 0 ? inf : k == 1 ? -inf : around_lse(rng);
      }
      break;
    case SinkMode::kPlusInf:
      sink.assign(num_heads, inf);
      break;
    case SinkMode::kMinusInf:
      sink.assign(num_heads, -inf);
      break;
  }
  return sink;
}

// The cache bytes, index lists and lengths of one token source.
class SparseSourceHostData {
 public:
  SparseSourceHostData() = default;
  SparseSourceHostData(const SparseSourceHostData&) = delete;
  SparseSourceHostData& operator=(const SparseSourceHostData&) = delete;

  // Builds everything; `rng` drives the structure, values come from FastNormal(value_seed).
  void build(const SparseSourceConfig& c, KVCacheFormat format, int head_dim_qk, int batch,
             int seqlen_q, std::mt19937& rng, uint64_t value_seed) {
    c_ = c;
    format_ = format;
    head_dim_qk_ = head_dim_qk;
    batch_ = batch;
    seqlen_q_ = seqlen_q;
    const int page = c.page_block_size;

    // Strides of the cache (bytes) and of the index lists (elements).
    token_stride_ = kv_cache_min_token_bytes(format, head_dim_qk) +
                    (format == KVCacheFormat::kFp8Model1 ? 0 : c.token_pad_bytes);
    const int64_t dense_block = format == KVCacheFormat::kFp8Model1
                                    ? kv_cache_min_block_bytes(format, page, head_dim_qk)
                                    : int64_t(page) * token_stride_;
    const int64_t gap =
        c.block_gap_bytes >= 0 ? c.block_gap_bytes : kv_cache_min_token_bytes(format, head_dim_qk);
    block_stride_ = dense_block + gap;
    indices_seq_stride_ = c.topk + c.indices_seq_pad;
    indices_batch_stride_ = int64_t(seqlen_q) * indices_seq_stride_ + c.indices_batch_pad;

    // Pages: a random permutation of all blocks, the first ones handed out in order.
    int lo = c.cache_tokens_min, hi = c.cache_tokens_max;
    if (lo == 0 && hi == 0) lo = c.topk / 2 + 1, hi = 2 * c.topk;
    std::uniform_int_distribution<int> owned(lo, std::max(lo, hi));
    cache_tokens.resize(batch);
    int total_pages = 0;
    for (auto& n : cache_tokens) n = owned(rng), total_pages += pages_for(n);
    num_blocks_ = std::max(1, total_pages + c.unused_blocks);
    std::vector<int32_t> pages(num_blocks_);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    block_tables.assign(batch, {});
    int next_page = 0;
    for (int i = 0; i < batch; ++i) {
      for (int p = 0; p < pages_for(cache_tokens[i]); ++p) {
        block_tables[i].push_back(pages[next_page++]);
      }
    }
    unused_pages.assign(pages.begin() + next_page, pages.end());

    topk_length = c.topk_length;
    if (!topk_length.empty() && int(topk_length.size()) != batch) {
      throw std::invalid_argument("SparseSourceConfig::topk_length needs one entry a sequence");
    }
    fill_indices(rng);

    // Cache: 0xff everywhere (gaps, padding), NaN rows in every slot, then the selected rows.
    cache.assign(size_t(num_blocks_) * block_stride_, kGapByte);
    for (int64_t slot = 0; slot < num_slots(); ++slot) write_nan_row(slot);
    std::vector<int64_t> slots;
    for (int64_t slot = 0; slot < num_slots(); ++slot) {
      if (selected[slot]) slots.push_back(slot);
    }
    FastNormal normal(value_seed);
    std::uniform_int_distribution<int> kind(0, 9);
    std::uniform_int_distribution<int> exponent(-6, 3);
    std::vector<uint16_t> rows(slots.size() * head_dim_qk);
    std::vector<float> group_factor(head_dim_qk);
    for (size_t r = 0; r < slots.size(); ++r) {
      // Most rows N(0, 1); some tiny (scales near the 1e-4 clamp), some large, some with a
      // different magnitude in every 64-value group (distinct scales within a row).
      const int row_kind = kind(rng);
      for (int d = 0; d < head_dim_qk; d += 64) {
        const float f = row_kind == 0   ? 0.01f
                        : row_kind == 1 ? 4.f
                        : row_kind == 2 ? std::ldexp(1.f, exponent(rng))
                                        : 1.f;
        for (int e = d; e < std::min(d + 64, head_dim_qk); ++e) group_factor[e] = f;
      }
      for (int d = 0; d < head_dim_qk; ++d) {
        rows[r * head_dim_qk + d] = reference::float_to_bf16_bits(normal() * group_factor[d]);
      }
    }
    write_rows(rows.data(), slots);
  }

  // Sizes and strides.
  int num_blocks() const { return num_blocks_; }
  int64_t num_slots() const { return int64_t(num_blocks_) * c_.page_block_size; }
  int64_t block_stride() const { return block_stride_; }
  int64_t token_stride() const { return token_stride_; }
  int topk() const { return c_.topk; }
  const SparseSourceConfig& config() const { return c_; }

  // The slot of token t of sequence i (t < cache_tokens[i]).
  int64_t slot_of(int i, int t) const {
    return int64_t(block_tables[i][t / c_.page_block_size]) * c_.page_block_size +
           t % c_.page_block_size;
  }
  // The index list of query token (i, s): topk entries.
  int32_t* index_row(int i, int s) {
    return &indices[size_t(i) * indices_batch_stride_ + size_t(s) * indices_seq_stride_];
  }

  // Quantizes `values` (rounded to bfloat16; head_dim_qk of them) into `slot`.
  void set_token(int64_t slot, const std::vector<float>& values) {
    std::vector<uint16_t> bits(head_dim_qk_);
    for (int d = 0; d < head_dim_qk_; ++d) bits[d] = reference::float_to_bf16_bits(values[d]);
    write_rows(bits.data(), {slot});
    selected[slot] = 1;
  }

  // Overwrites `slot` with a NaN row: what an unselected row holds.
  void poison_slot(int64_t slot) {
    write_nan_row(slot);
    selected[slot] = 0;
  }

  // The source with HOST pointers to the data above.
  SparseTokenSource source() const {
    SparseTokenSource s;
    s.k_cache = cache.data();
    s.num_blocks = num_blocks_;
    s.page_block_size = c_.page_block_size;
    s.block_stride = block_stride_;
    s.token_stride = token_stride_;
    s.indices = indices.data();
    s.indices_batch_stride = indices_batch_stride_;
    s.indices_seq_stride = indices_seq_stride_;
    s.topk = c_.topk;
    s.topk_length = topk_length.empty() ? nullptr : topk_length.data();
    return s;
  }

  std::vector<uint8_t> cache;         // num_blocks * block_stride bytes
  std::vector<int32_t> indices;       // [b, s_q, topk] with the padded strides
  std::vector<int32_t> topk_length;   // empty when the case has none
  std::vector<uint8_t> selected;      // per slot: 1 when some valid listed entry selects it
  std::vector<int32_t> cache_tokens;  // tokens each sequence owns
  std::vector<std::vector<int32_t>> block_tables;  // pages of each sequence, in order
  std::vector<int32_t> unused_pages;               // pages no sequence owns

 private:
  int pages_for(int tokens) const {
    return (std::max(tokens, 0) + c_.page_block_size - 1) / c_.page_block_size;
  }

  int listed_length(int i) const {
    return topk_length.empty() ? c_.topk : std::clamp(topk_length[i], 0, c_.topk);
  }

  // Writes NaN into every value of `slot`'s row (and MODEL1 scale row), in the format's
  // own encodings: e4m3 0x7f, bfloat16 0x7fc0, float32 / e8m0 NaN scales.
  void write_nan_row(int64_t slot) {
    const int page = c_.page_block_size;
    uint8_t* block = &cache[size_t(slot / page) * block_stride_];
    const int row = static_cast<int>(slot % page);
    switch (format_) {
      case KVCacheFormat::kBFloat16:
        fill_bf16_nan(block + row * token_stride_, head_dim_qk_);
        break;
      case KVCacheFormat::kFp8V32: {
        uint8_t* token = block + row * token_stride_;
        std::memset(token, kE4m3NaN, kFp8V32NopeDim);
        const float nan = std::numeric_limits<float>::quiet_NaN();
        for (int g = 0; g < kFp8V32NumScales; ++g) {
          std::memcpy(token + kFp8V32ScaleOffset + 4 * g, &nan, 4);
        }
        fill_bf16_nan(token + kFp8V32RopeOffset, kRopeDim);
        break;
      }
      case KVCacheFormat::kFp8Model1: {
        uint8_t* token = block + int64_t(row) * kFp8Model1RowBytes;
        std::memset(token, kE4m3NaN, kFp8Model1NopeDim);
        fill_bf16_nan(token + kFp8Model1RopeOffset, kRopeDim);
        uint8_t* scales =
            block + int64_t(page) * kFp8Model1RowBytes + int64_t(row) * kFp8Model1ScaleRowBytes;
        std::memset(scales, 0xff, kFp8Model1NumScales);  // e8m0 NaN
        break;
      }
    }
  }

  static void fill_bf16_nan(uint8_t* at, int count) {
    for (int e = 0; e < count; ++e) std::memcpy(at + 2 * e, &kBf16NaN, 2);
  }

  // An invalid entry: -1 most often, else out of range above or large negative.
  int32_t invalid_index(std::mt19937& rng) const { return random_invalid_index(num_slots(), rng); }

  // Garbage past topk_length: a slot of a page nobody owns (a NaN row: reading it would show),
  // or an invalid entry.
  int32_t garbage_index(std::mt19937& rng) const {
    if (!unused_pages.empty() && std::uniform_int_distribution<int>(0, 3)(rng) != 0) {
      const int32_t page =
          unused_pages[std::uniform_int_distribution<size_t>(0, unused_pages.size() - 1)(rng)];
      return page * c_.page_block_size +
             std::uniform_int_distribution<int>(0, c_.page_block_size - 1)(rng);
    }
    return invalid_index(rng);
  }

  void fill_indices(std::mt19937& rng) {
    indices.assign(size_t(batch_) * indices_batch_stride_, 0);
    for (auto& e : indices) e = garbage_index(rng);  // also the stride padding
    selected.assign(num_slots(), 0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::vector<int32_t> tokens;
    for (int i = 0; i < batch_; ++i) {
      const int len = listed_length(i);
      for (int s = 0; s < seqlen_q_; ++s) {
        int32_t* row = index_row(i, s);
        const bool all_invalid = unit(rng) < c_.all_invalid_fraction;
        // Distinct random tokens of the sequence (partial Fisher-Yates), -1 past its end.
        tokens.resize(cache_tokens[i]);
        std::iota(tokens.begin(), tokens.end(), 0);
        const int picked = std::min<int>(len, cache_tokens[i]);
        for (int j = 0; j < picked; ++j) {
          std::swap(tokens[j],
                    tokens[std::uniform_int_distribution<int>(j, cache_tokens[i] - 1)(rng)]);
        }
        for (int j = 0; j < len; ++j) {
          if (all_invalid || unit(rng) < c_.invalid_fraction) {
            row[j] = invalid_index(rng);
          } else if (j < picked) {
            const int64_t slot = slot_of(i, tokens[j]);
            row[j] = static_cast<int32_t>(slot);
            selected[slot] = 1;
          } else {
            row[j] = -1;
          }
        }
        for (int j = len; j < c_.topk; ++j) row[j] = garbage_index(rng);
      }
    }
  }

  // Quantizes rows[r] into slots[r] with write_kv_cache_host. The writer needs 16-byte
  // multiples as strides (the device moves rows in 16-byte vectors); for the odd strides the
  // CPU tests use, the rows go through a staging cache with aligned strides, then are copied.
  void write_rows(const uint16_t* rows, const std::vector<int64_t>& slots) {
    if (slots.empty()) return;
    const bool aligned = block_stride_ % 16 == 0 && token_stride_ % 16 == 0;
    const int page = c_.page_block_size;
    const int64_t row_bytes = kv_cache_min_token_bytes(format_, head_dim_qk_);
    const int64_t staging_token = (row_bytes + 15) / 16 * 16;
    const int64_t staging_block = format_ == KVCacheFormat::kFp8Model1
                                      ? kv_cache_min_block_bytes(format_, page, head_dim_qk_)
                                      : page * staging_token;
    std::vector<uint8_t> staging(aligned ? 0 : size_t(num_blocks_) * staging_block);
    KVCacheWriteParams w;
    w.format = format_;
    w.head_dim_qk = head_dim_qk_;
    w.num_tokens = static_cast<int>(slots.size());
    w.kv = rows;
    w.kv_token_stride = head_dim_qk_;
    w.slot_mapping = slots.data();
    w.k_cache = aligned ? cache.data() : staging.data();
    w.num_blocks = num_blocks_;
    w.page_block_size = page;
    w.block_stride = aligned ? block_stride_ : staging_block;
    w.token_stride = aligned ? token_stride_ : staging_token;
    write_kv_cache_host(w);
    if (aligned) return;
    for (int64_t slot : slots) {
      const int64_t block = slot / page, row = slot % page;
      const uint8_t* from = &staging[block * staging_block];
      uint8_t* to = &cache[block * block_stride_];
      std::memcpy(to + row * token_stride_, from + row * w.token_stride, row_bytes);
      if (format_ == KVCacheFormat::kFp8Model1) {
        const int64_t scales = int64_t(page) * kFp8Model1RowBytes + row * kFp8Model1ScaleRowBytes;
        std::memcpy(to + scales, from + scales, kFp8Model1ScaleRowBytes);
      }
    }
  }

  SparseSourceConfig c_;
  KVCacheFormat format_ = KVCacheFormat::kFp8V32;
  int head_dim_qk_ = 0;
  int batch_ = 0;
  int seqlen_q_ = 0;
  int num_blocks_ = 0;
  int64_t block_stride_ = 0, token_stride_ = 0;
  int64_t indices_batch_stride_ = 0, indices_seq_stride_ = 0;
};

// Host tensors of one instance. params() points into them, so keep this object alive (and do
// not copy it) while the params are in use.
class SparseDecodeHostData {
 public:
  explicit SparseDecodeHostData(const SparseDecodeCase& c)
      : c_(c), d_qk_(c.resolved_head_dim_qk()) {
    std::mt19937 rng(c.seed);
    const int b = c.batch;
    q_head_stride_ = d_qk_ + c.q_head_pad;
    q_seq_stride_ = c.num_heads_q * q_head_stride_ + c.q_seq_pad;
    q_batch_stride_ = c.seqlen_q * q_seq_stride_ + c.q_batch_pad;

    FastNormal normal(uint64_t(c.seed) * 3 + 1);
    q.assign(size_t(b) * q_batch_stride_, kBf16NaN);
    for (int i = 0; i < b; ++i) {
      for (int s = 0; s < c.seqlen_q; ++s) {
        for (int h = 0; h < c.num_heads_q; ++h) {
          uint16_t* row = q_row(i, s, h);
          for (int d = 0; d < d_qk_; ++d) row[d] = reference::float_to_bf16_bits(normal());
        }
      }
    }

    main.build(c.main, c.format, d_qk_, b, c.seqlen_q, rng, uint64_t(c.seed) * 3 + 2);
    if (c.has_extra) {
      extra.build(c.extra, c.format, d_qk_, b, c.seqlen_q, rng, uint64_t(c.seed) * 3 + 3);
    }

    // Ordinary sink values around a typical lse (log of a few hundred tokens).
    attn_sink = random_attn_sink(c.sink, c.num_heads_q, 4.f, 3.f, rng);
  }
  SparseDecodeHostData(const SparseDecodeHostData&) = delete;
  SparseDecodeHostData& operator=(const SparseDecodeHostData&) = delete;

  // Element (i, s, h, 0) of q.
  uint16_t* q_row(int i, int s, int h) {
    return &q[size_t(i) * q_batch_stride_ + size_t(s) * q_seq_stride_ + size_t(h) * q_head_stride_];
  }

  // Params with HOST pointers to the tensors above; out, lse, plan and workspace unset.
  SparseDecodeParams params() const {
    SparseDecodeParams p;
    p.kv_format = c_.format;
    p.batch = c_.batch;
    p.seqlen_q = c_.seqlen_q;
    p.num_heads_q = c_.num_heads_q;
    p.head_dim_qk = d_qk_;
    p.head_dim_v = 512;
    p.softmax_scale =
        c_.softmax_scale > 0.f ? c_.softmax_scale : 1.f / std::sqrt(static_cast<float>(d_qk_));
    p.q = q.data();
    p.q_batch_stride = q_batch_stride_;
    p.q_seq_stride = q_seq_stride_;
    p.q_head_stride = q_head_stride_;
    p.main = main.source();
    if (c_.has_extra) p.extra = extra.source();
    p.attn_sink = attn_sink.empty() ? nullptr : attn_sink.data();
    return p;
  }

  const SparseDecodeCase& config() const { return c_; }
  int head_dim_qk() const { return d_qk_; }

  std::vector<uint16_t> q;  // [b, s_q, h_q, d_qk] bfloat16 bits, padded strides hold NaN
  SparseSourceHostData main;
  SparseSourceHostData extra;    // built only when the case has an extra source
  std::vector<float> attn_sink;  // empty: none

 private:
  SparseDecodeCase c_;
  int d_qk_ = 0;
  int64_t q_head_stride_ = 0, q_seq_stride_ = 0, q_batch_stride_ = 0;
};

}  // namespace flashmla::testing
