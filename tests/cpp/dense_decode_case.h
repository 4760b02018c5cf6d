// Random dense-decode problems on the host, shared by the CPU reference tests and the GPU
// tests: a paged KV cache with shuffled pages (or a non-paged one, [batch, s_k_max, h_kv, d]),
// NaN in every cache row and padding element the operation must not read, and garbage in the
// unused block-table entries.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashmla/dense_decode.h"
#include "reference/half_convert.h"

namespace flashmla::testing {

struct DenseDecodeCase {
  ScalarType dtype = ScalarType::kBFloat16;
  int head_dim_qk = 576;
  int head_dim_v = 512;
  int num_heads_q = 1;
  int num_heads_kv = 1;
  int seqlen_q = 1;
  bool causal = false;
  std::vector<int32_t> seqlens;  // one per sequence: the batch
  int page_block_size = 64;
  // Non-paged cache: no block table, k_cache [batch, page_block_size, h_kv, d_qk] where
  // page_block_size is s_k_max (0: the longest length; rows past each length are NaN);
  // num_blocks = batch, max_blocks_per_seq = 1, extra_blocks and extra_table_columns unused.
  bool non_paged = false;
  int extra_blocks = 2;         // pages no sequence uses (all NaN)
  int extra_table_columns = 1;  // block-table entries past every sequence's need (garbage)
  // Extra elements (NaN) after each row / head / token / ...: strides larger than dense.
  int64_t q_head_pad = 0, q_seq_pad = 0, q_batch_pad = 0;
  int64_t k_head_pad = 0, k_token_pad = 0, k_block_pad = 0;
  int64_t table_pad = 0;
  float softmax_scale = 0.f;  // 0: head_dim_qk^-0.5
  uint32_t seed = 0;

  int batch() const { return static_cast<int>(seqlens.size()); }
};

// A non-paged case's capacity: page_block_size, or the longest length when that is 0 (at least 1).
inline int non_paged_capacity(const DenseDecodeCase& c) {
  if (c.page_block_size > 0) return c.page_block_size;
  int longest = 1;
  for (int32_t len : c.seqlens) longest = std::max<int>(longest, len);
  return longest;
}

inline uint16_t nan_bits(ScalarType dtype) {
  return dtype == ScalarType::kFloat16 ? uint16_t{0x7e00} : uint16_t{0x7fc0};
}

// Host tensors of one instance. params() points into them, so keep this object alive (and
// do not copy it) while the params are in use.
class DenseDecodeHostData {
 public:
  explicit DenseDecodeHostData(const DenseDecodeCase& c) : c_(c) {
    if (c_.non_paged) c_.page_block_size = non_paged_capacity(c);
    std::mt19937 rng(c.seed);
    const int b = c.batch();
    // Dense-plus-padding strides, innermost first.
    q_head_stride_ = c.head_dim_qk + c.q_head_pad;
    q_seq_stride_ = c.num_heads_q * q_head_stride_ + c.q_seq_pad;
    q_batch_stride_ = c.seqlen_q * q_seq_stride_ + c.q_batch_pad;
    k_head_stride_ = c.head_dim_qk + c.k_head_pad;
    k_token_stride_ = c.num_heads_kv * k_head_stride_ + c.k_token_pad;
    k_block_stride_ = c_.page_block_size * k_token_stride_ + c.k_block_pad;
    cache_seqlens = c.seqlens;

    if (c.non_paged) {
      // Sequence i owns block i; no table.
      for (int32_t len : c.seqlens) {
        if (len > c_.page_block_size) {
          throw std::invalid_argument("DenseDecodeCase: non-paged length " + std::to_string(len) +
                                      " > page_block_size " + std::to_string(c_.page_block_size));
        }
      }
      num_blocks_ = b;
      max_blocks_per_seq_ = 1;
      table_stride_ = 0;
    } else {
      make_paged_table(rng);
    }

    // NaN everywhere, then N(0, 1) values (rounded to the dtype) where data belongs.
    const uint16_t nan = nan_bits(c.dtype);
    std::normal_distribution<float> normal(0.f, 1.f);
    const auto random_value = [&] { return reference::float_to_half_bits(c.dtype, normal(rng)); };
    q.assign(size_t(b) * q_batch_stride_, nan);
    for (int i = 0; i < b; ++i) {
      for (int j = 0; j < c.seqlen_q; ++j) {
        for (int h = 0; h < c.num_heads_q; ++h) {
          uint16_t* row = q_row(i, j, h);
          for (int d = 0; d < c.head_dim_qk; ++d) row[d] = random_value();
        }
      }
    }
    k_cache.assign(size_t(num_blocks_) * k_block_stride_, nan);
    for (int i = 0; i < b; ++i) {
      for (int t = 0; t < c.seqlens[i]; ++t) {
        for (int h = 0; h < c.num_heads_kv; ++h) {
          uint16_t* row = k_row(i, t, h);
          for (int d = 0; d < c.head_dim_qk; ++d) row[d] = random_value();
        }
      }
    }
  }
  DenseDecodeHostData(const DenseDecodeHostData&) = delete;
  DenseDecodeHostData& operator=(const DenseDecodeHostData&) = delete;

  bool paged() const { return !c_.non_paged; }

  // Element (i, j, h, 0) of q and the cache row of token t of sequence i, KV head h.
  uint16_t* q_row(int i, int j, int h) {
    return &q[size_t(i) * q_batch_stride_ + size_t(j) * q_seq_stride_ + size_t(h) * q_head_stride_];
  }
  uint16_t* k_row(int i, int t, int h) { return &k_cache[k_row_offset(i, t, h)]; }
  const uint16_t* k_row(int i, int t, int h) const { return &k_cache[k_row_offset(i, t, h)]; }

  // Params with HOST pointers to the tensors above; out, lse, plan and workspace unset.
  // Non-paged: block_table null and block_table_batch_stride 0.
  DenseDecodeParams params() const {
    DenseDecodeParams p;
    p.dtype = c_.dtype;
    p.batch = c_.batch();
    p.seqlen_q = c_.seqlen_q;
    p.num_heads_q = c_.num_heads_q;
    p.num_heads_kv = c_.num_heads_kv;
    p.head_dim_qk = c_.head_dim_qk;
    p.head_dim_v = c_.head_dim_v;
    p.page_block_size = c_.page_block_size;
    p.num_blocks = num_blocks_;
    p.max_blocks_per_seq = max_blocks_per_seq_;
    p.softmax_scale = c_.softmax_scale > 0.f ? c_.softmax_scale
                                             : 1.f / std::sqrt(static_cast<float>(c_.head_dim_qk));
    p.causal = c_.causal;
    p.q = q.data();
    p.q_batch_stride = q_batch_stride_;
    p.q_seq_stride = q_seq_stride_;
    p.q_head_stride = q_head_stride_;
    p.k_cache = k_cache.data();
    p.k_block_stride = k_block_stride_;
    p.k_token_stride = k_token_stride_;
    p.k_head_stride = k_head_stride_;
    p.block_table = paged() ? block_table.data() : nullptr;
    p.block_table_batch_stride = table_stride_;
    p.cache_seqlens = cache_seqlens.data();
    return p;
  }

  // The case, with page_block_size resolved (a non-paged case's capacity).
  const DenseDecodeCase& config() const { return c_; }
  int64_t table_stride() const { return table_stride_; }

  std::vector<uint16_t> q;
  std::vector<uint16_t> k_cache;
  std::vector<int32_t> block_table;  // empty when non-paged
  std::vector<int32_t> cache_seqlens;

 private:
  int pages_for(int32_t len) const {
    return (std::max(len, 0) + c_.page_block_size - 1) / c_.page_block_size;
  }

  size_t k_row_offset(int i, int t, int h) const {
    const int32_t block =
        paged() ? block_table[size_t(i) * table_stride_ + t / c_.page_block_size] : i;
    return size_t(block) * k_block_stride_ + size_t(t % c_.page_block_size) * k_token_stride_ +
           size_t(h) * k_head_stride_;
  }

  void make_paged_table(std::mt19937& rng) {
    const DenseDecodeCase& c = c_;
    const int b = c.batch();
    // Pages: a random permutation of all blocks, the first ones handed out in order.
    int needed_pages = 0;
    max_blocks_per_seq_ = 1;
    for (int32_t len : c.seqlens) {
      const int pages = pages_for(len);
      needed_pages += pages;
      max_blocks_per_seq_ = std::max(max_blocks_per_seq_, pages);
    }
    max_blocks_per_seq_ += c.extra_table_columns;
    num_blocks_ = std::max(1, needed_pages + c.extra_blocks);
    std::vector<int32_t> pages(num_blocks_);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);

    // Unused table entries hold values that fault or alias if ever used.
    table_stride_ = max_blocks_per_seq_ + c.table_pad;
    const int32_t garbage[] = {-12345, 0x7fffffff, -1, num_blocks_, int32_t(1) << 30};
    block_table.resize(size_t(b) * table_stride_);
    for (size_t e = 0; e < block_table.size(); ++e) block_table[e] = garbage[e % 5];
    int next_page = 0;
    for (int i = 0; i < b; ++i) {
      for (int p = 0; p < pages_for(c.seqlens[i]); ++p) {
        block_table[size_t(i) * table_stride_ + p] = pages[next_page++];
      }
    }
  }

  DenseDecodeCase c_;
  int64_t q_head_stride_ = 0, q_seq_stride_ = 0, q_batch_stride_ = 0;
  int64_t k_head_stride_ = 0, k_token_stride_ = 0, k_block_stride_ = 0;
  int64_t table_stride_ = 0;
  int num_blocks_ = 0;
  int max_blocks_per_seq_ = 0;
};

// cache_seqlens like the benchmark anchors: max(int(normal(mean, mean / 2)), floor).
inline std::vector<int32_t> varlen_seqlens(int batch, int mean, int floor, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(mean, mean / 2.0);
  std::vector<int32_t> lens(batch);
  for (auto& len : lens) len = std::max(static_cast<int32_t>(normal(rng)), int32_t(floor));
  return lens;
}

}  // namespace flashmla::testing
