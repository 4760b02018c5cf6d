// The CPU reference of dense decode against a plain brute-force formula (long double, dense
// K/V gathered from the pages), plus small exact cases with integer-valued inputs, and the
// same logical data under other cache layouts (page sizes, non-paged) giving the same result.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "dense_decode_case.h"
#include "flashmla/dense_decode.h"
#include "reference/dense_decode_reference.h"
#include "reference/half_convert.h"

namespace flashmla {
namespace {

using reference::dense_decode_reference;
using testing::DenseDecodeCase;
using testing::DenseDecodeHostData;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Result {
  std::vector<float> out;  // [b, s_q, h_q, d_v]
  std::vector<float> lse;  // [b, h_q, s_q]
};

Result run_reference(const DenseDecodeParams& p) {
  Result r;
  r.out.assign(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v, -777.f);
  r.lse.assign(size_t(p.batch) * p.num_heads_q * p.seqlen_q, -777.f);
  dense_decode_reference(p, r.out.data(), r.lse.data());
  return r;
}

struct BruteResult {
  std::vector<long double> out;
  std::vector<long double> lse;
  std::vector<long double> out_abs;    // sum_t w_t |v_t|, layout of out
  std::vector<long double> max_logit;  // largest scaled logit (-inf when none), layout of lse
};

// The spec, written as directly as possible: gather sequence i's K rows page by page (or from
// block i of a non-paged cache) into a dense matrix, then one softmax per query row.
BruteResult brute_force(const DenseDecodeParams& p) {
  const int b = p.batch, s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const int group = p.num_heads_q / p.num_heads_kv;
  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto* cache = static_cast<const uint16_t*>(p.k_cache);
  const auto value = [&](uint16_t bits) -> long double {
    return reference::half_bits_to_float(p.dtype, bits);
  };
  BruteResult r;
  r.out.assign(size_t(b) * s_q * h_q * d_v, 0.0L);
  r.lse.assign(size_t(b) * h_q * s_q, 0.0L);
  r.out_abs.assign(r.out.size(), 0.0L);
  r.max_logit.assign(r.lse.size(), -std::numeric_limits<long double>::infinity());
  for (int i = 0; i < b; ++i) {
    const int len = p.cache_seqlens[i];
    for (int kv = 0; kv < p.num_heads_kv; ++kv) {
      std::vector<std::vector<long double>> keys(len, std::vector<long double>(p.head_dim_qk));
      for (int t = 0; t < len; ++t) {
        const int32_t page =
            p.block_table == nullptr
                ? i
                : p.block_table[i * p.block_table_batch_stride + t / p.page_block_size];
        const uint16_t* row = cache + page * p.k_block_stride +
                              (t % p.page_block_size) * p.k_token_stride + kv * p.k_head_stride;
        for (int d = 0; d < p.head_dim_qk; ++d) keys[t][d] = value(row[d]);
      }
      for (int h = kv * group; h < (kv + 1) * group; ++h) {
        for (int j = 0; j < s_q; ++j) {
          int visible = len;
          if (p.causal && s_q > 1) visible = std::max(0, std::min(len, len - s_q + j + 1));
          long double* lse = &r.lse[(size_t(i) * h_q + h) * s_q + j];
          long double* out = &r.out[((size_t(i) * s_q + j) * h_q + h) * d_v];
          long double* out_abs = &r.out_abs[((size_t(i) * s_q + j) * h_q + h) * d_v];
          if (visible == 0) {
            *lse = std::numeric_limits<long double>::infinity();
            continue;
          }
          const uint16_t* q_row =
              q + i * p.q_batch_stride + j * p.q_seq_stride + h * p.q_head_stride;
          std::vector<long double> logits(visible);
          for (int t = 0; t < visible; ++t) {
            long double dot = 0;
            for (int d = 0; d < p.head_dim_qk; ++d) dot += value(q_row[d]) * keys[t][d];
            logits[t] = static_cast<long double>(p.softmax_scale) * dot;
          }
          long double max_logit = logits[0];
          for (long double l : logits) max_logit = std::max(max_logit, l);
          long double sum = 0;
          for (long double l : logits) sum += std::exp(l - max_logit);
          *lse = max_logit + std::log(sum);
          r.max_logit[(size_t(i) * h_q + h) * s_q + j] = max_logit;
          for (int t = 0; t < visible; ++t) {
            const long double weight = std::exp(logits[t] - max_logit) / sum;
            for (int d = 0; d < d_v; ++d) {
              out[d] += weight * keys[t][d];
              out_abs[d] += weight * std::fabs(keys[t][d]);
            }
          }
        }
      }
    }
  }
  return r;
}

// Float results (rounded from double) against the long-double brute force: one float
// rounding plus double accumulation error.
void expect_matches_brute_force(const DenseDecodeParams& p) {
  const Result got = run_reference(p);
  const BruteResult want = brute_force(p);
  int failures = 0;
  for (size_t e = 0; e < want.out.size() && failures < 10; ++e) {
    const long double w = want.out[e];
    const long double tolerance = 1.5e-7L * std::fabs(w) + 1e-12L;
    if (!(std::fabs(got.out[e] - w) <= tolerance)) {
      ADD_FAILURE() << "out[" << e << "] = " << got.out[e] << ", brute force " << double(w);
      ++failures;
    }
  }
  for (size_t e = 0; e < want.lse.size() && failures < 10; ++e) {
    const long double w = want.lse[e];
    const bool ok = std::isinf(w) ? (got.lse[e] == kInf)
                                  : std::fabs(got.lse[e] - w) <= 1.5e-7L * std::fabs(w) + 1e-12L;
    if (!ok) {
      ADD_FAILURE() << "lse[" << e << "] = " << got.lse[e] << ", brute force " << double(w);
      ++failures;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Random cases against the brute force.

struct RandomCase {
  const char* name;
  DenseDecodeCase config;
};

DenseDecodeCase make_case(ScalarType dtype, int d_qk, int h_q, int h_kv, int s_q, bool causal,
                          std::vector<int32_t> seqlens, int page, uint32_t seed) {
  DenseDecodeCase c;
  c.dtype = dtype;
  c.head_dim_qk = d_qk;
  c.num_heads_q = h_q;
  c.num_heads_kv = h_kv;
  c.seqlen_q = s_q;
  c.causal = causal;
  c.seqlens = std::move(seqlens);
  c.page_block_size = page;
  c.seed = seed;
  return c;
}

void PrintTo(const RandomCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<RandomCase> random_cases() {
  constexpr auto bf16 = ScalarType::kBFloat16;
  constexpr auto fp16 = ScalarType::kFloat16;
  std::vector<RandomCase> cases = {
      {"bf16_d576_single", make_case(bf16, 576, 1, 1, 1, false, {37}, 64, 1)},
      {"fp16_d576_single", make_case(fp16, 576, 1, 1, 1, false, {200}, 64, 2)},
      {"bf16_d512_varlen", make_case(bf16, 512, 4, 1, 1, false, {0, 1, 63, 64, 65, 130}, 64, 3)},
      {"fp16_d512_varlen", make_case(fp16, 512, 2, 1, 2, false, {5, 0, 129}, 128, 4)},
      {"bf16_hkv2", make_case(bf16, 576, 4, 2, 1, false, {70, 3}, 64, 5)},
      {"fp16_hkv2_causal", make_case(fp16, 512, 8, 2, 3, true, {66, 2, 0, 3}, 64, 6)},
      {"bf16_odd_heads", make_case(bf16, 576, 3, 1, 2, false, {100, 17}, 64, 7)},
      {"fp16_hq6_hkv3", make_case(fp16, 576, 6, 3, 2, true, {65, 1, 128}, 128, 8)},
      {"bf16_hq3_hkv3", make_case(bf16, 512, 3, 3, 4, true, {4, 3, 200}, 64, 9)},
      {"bf16_causal_sq4", make_case(bf16, 576, 2, 1, 4, true, {0, 1, 2, 3, 4, 5, 64}, 64, 10)},
      {"fp16_noncausal_sq4", make_case(fp16, 576, 2, 1, 4, false, {0, 1, 2, 3, 64}, 64, 11)},
      {"bf16_sq1_causal_ignored", make_case(bf16, 512, 2, 1, 1, true, {0, 9, 64}, 64, 12)},
      {"fp16_all_empty", make_case(fp16, 576, 2, 1, 3, true, {0, 0}, 64, 13)},
      {"bf16_page128_long", make_case(bf16, 576, 2, 1, 2, true, {300, 257}, 128, 14)},
  };
  // Strides with padding (odd on purpose: the reference must follow them exactly).
  DenseDecodeCase padded = make_case(bf16, 576, 3, 1, 2, true, {70, 1, 0, 130}, 64, 15);
  padded.q_head_pad = 3;
  padded.q_seq_pad = 5;
  padded.q_batch_pad = 7;
  padded.k_head_pad = 9;
  padded.k_token_pad = 11;
  padded.k_block_pad = 13;
  padded.table_pad = 2;
  padded.extra_table_columns = 3;
  cases.push_back({"bf16_padded_strides", padded});
  DenseDecodeCase padded_hkv = make_case(fp16, 512, 6, 2, 3, false, {129, 64, 2}, 128, 16);
  padded_hkv.k_head_pad = 8;
  padded_hkv.k_token_pad = 16;
  padded_hkv.k_block_pad = 24;
  padded_hkv.q_head_pad = 8;
  padded_hkv.extra_blocks = 5;
  cases.push_back({"fp16_padded_strides_hkv2", padded_hkv});
  // Big enough for several threads and several items per (sequence, KV head).
  cases.push_back({"bf16_threads", make_case(bf16, 576, 40, 1, 2, true, {1500, 900}, 64, 17)});
  // A custom scale (large: sharp softmax).
  DenseDecodeCase sharp = make_case(bf16, 576, 2, 1, 1, false, {90}, 64, 18);
  sharp.softmax_scale = 0.5f;
  cases.push_back({"bf16_sharp_scale", sharp});
  // Any page size: pages smaller than a tile, not dividing 64, larger than a tile.
  cases.push_back(
      {"bf16_page1", make_case(bf16, 576, 4, 1, 2, true, {0, 1, 2, 63, 64, 65, 150}, 1, 40)});
  cases.push_back({"fp16_page2_hkv2", make_case(fp16, 512, 4, 2, 1, false, {1, 3, 64, 99}, 2, 41)});
  cases.push_back(
      {"bf16_page16_causal", make_case(bf16, 576, 3, 1, 3, true, {0, 15, 16, 17, 200}, 16, 42)});
  cases.push_back(
      {"fp16_page53", make_case(fp16, 576, 2, 1, 2, false, {0, 1, 52, 53, 54, 106, 300}, 53, 43)});
  cases.push_back({"bf16_page100_hkv2_causal",
                   make_case(bf16, 512, 6, 2, 2, true, {99, 100, 101, 250}, 100, 44)});
  DenseDecodeCase page53_padded = make_case(bf16, 576, 3, 1, 2, true, {54, 0, 159, 7}, 53, 45);
  page53_padded.k_token_pad = 11;
  page53_padded.k_block_pad = 5;
  page53_padded.table_pad = 3;
  cases.push_back({"bf16_page53_padded_strides", page53_padded});
  // Non-paged caches: [batch, s_k_max, h_kv, d_qk], no table.
  DenseDecodeCase flat = make_case(bf16, 576, 4, 1, 2, true, {0, 1, 49, 50, 17}, 50, 46);
  flat.non_paged = true;
  cases.push_back({"bf16_non_paged_50", flat});
  DenseDecodeCase flat_hkv = make_case(fp16, 512, 6, 3, 1, false, {300, 1, 0, 129}, 333, 47);
  flat_hkv.non_paged = true;
  flat_hkv.k_head_pad = 3;
  flat_hkv.k_token_pad = 7;
  flat_hkv.k_block_pad = 13;
  cases.push_back({"fp16_non_paged_hkv3_padded", flat_hkv});
  DenseDecodeCase flat_long = make_case(bf16, 576, 8, 1, 1, false, {1000, 999, 64}, 1000, 48);
  flat_long.non_paged = true;
  cases.push_back({"bf16_non_paged_1000", flat_long});
  return cases;
}

class ReferenceVsBruteForce : public ::testing::TestWithParam<RandomCase> {};

TEST_P(ReferenceVsBruteForce, Matches) {
  DenseDecodeHostData data(GetParam().config);
  expect_matches_brute_force(data.params());
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceVsBruteForce, ::testing::ValuesIn(random_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// The optional extras (out_abs, max_logit) against the brute force; asking for them must not
// change out or lse.
void expect_extras_match_brute_force(const DenseDecodeParams& p) {
  const Result plain = run_reference(p);
  Result got;
  got.out.assign(plain.out.size(), -777.f);
  got.lse.assign(plain.lse.size(), -777.f);
  std::vector<float> out_abs(plain.out.size(), -777.f), max_logit(plain.lse.size(), -777.f);
  dense_decode_reference(p, got.out.data(), got.lse.data(), out_abs.data(), max_logit.data());
  EXPECT_EQ(got.out, plain.out);
  EXPECT_EQ(got.lse, plain.lse);
  const BruteResult want = brute_force(p);
  int failures = 0;
  for (size_t e = 0; e < want.out_abs.size() && failures < 10; ++e) {
    const long double w = want.out_abs[e];
    if (!(std::fabs(out_abs[e] - w) <= 1.5e-7L * w + 1e-12L)) {
      ADD_FAILURE() << "out_abs[" << e << "] = " << out_abs[e] << ", brute force " << double(w);
      ++failures;
    }
  }
  for (size_t e = 0; e < want.max_logit.size() && failures < 10; ++e) {
    const long double w = want.max_logit[e];
    const bool ok = std::isinf(w) ? (max_logit[e] == -kInf)
                                  : std::fabs(max_logit[e] - w) <= 1.5e-7L * std::fabs(w) + 1e-12L;
    if (!ok) {
      ADD_FAILURE() << "max_logit[" << e << "] = " << max_logit[e] << ", brute force " << double(w);
      ++failures;
    }
  }
}

TEST(ReferenceExtras, MatchBruteForce) {
  constexpr auto bf16 = ScalarType::kBFloat16;
  constexpr auto fp16 = ScalarType::kFloat16;
  {
    SCOPED_TRACE("bf16 causal, empty and short sequences");
    DenseDecodeHostData data(make_case(bf16, 576, 3, 1, 3, true, {0, 1, 2, 65, 130}, 64, 30));
    expect_extras_match_brute_force(data.params());
  }
  {
    SCOPED_TRACE("fp16 hkv2, page 128");
    DenseDecodeHostData data(make_case(fp16, 512, 6, 2, 2, false, {129, 3, 0}, 128, 31));
    expect_extras_match_brute_force(data.params());
  }
  {
    SCOPED_TRACE("bf16 several threads and items");
    DenseDecodeHostData data(make_case(bf16, 576, 40, 1, 2, true, {1500, 900}, 64, 32));
    expect_extras_match_brute_force(data.params());
  }
}

TEST(ReferenceVsBruteForce, InfWhereNothingIsVisible) {
  // s_q = 4, causal: sequence of length 2 -> queries 0 and 1 see nothing.
  DenseDecodeHostData data(make_case(ScalarType::kBFloat16, 576, 2, 1, 4, true, {2, 0}, 64, 19));
  const DenseDecodeParams p = data.params();
  const Result r = run_reference(p);
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      const bool visible_in_first = j >= 2;
      EXPECT_EQ(std::isinf(r.lse[(0 * 2 + h) * 4 + j]), !visible_in_first) << h << " " << j;
      EXPECT_EQ(r.lse[(1 * 2 + h) * 4 + j], kInf);  // empty sequence
    }
  }
  for (int j = 0; j < 2; ++j) {  // rows that see nothing are exactly 0
    for (int d = 0; d < 512; ++d) EXPECT_EQ(r.out[((0 * 4 + j) * 2 + 0) * 512 + d], 0.f);
  }
}

// ---------------------------------------------------------------------------------------
// Exact cases: integer-valued inputs and a power-of-two scale make every logit exact, and
// equal logits make every softmax weight a power of two.

class ExactReference : public ::testing::Test {
 protected:
  static DenseDecodeCase base(int s_q, std::vector<int32_t> seqlens) {
    DenseDecodeCase c = make_case(ScalarType::kBFloat16, 576, 1, 1, s_q, true, seqlens, 64, 20);
    c.softmax_scale = 0.125f;
    return c;
  }
  static void fill_q(DenseDecodeHostData& data, int i, int j, float value) {
    uint16_t* row = data.q_row(i, j, 0);
    for (int d = 0; d < 576; ++d) row[d] = reference::float_to_bf16_bits(d < 4 ? value : 0.f);
  }
  // K row: columns 0..3 = key (dot with q), V columns = v_base + (d % 7) (small integers).
  static void fill_k(DenseDecodeHostData& data, int i, int t, float key, float v_base) {
    uint16_t* row = data.k_row(i, t, 0);
    for (int d = 0; d < 576; ++d) {
      const float v = d < 4 ? key : (d < 512 ? v_base + float(d % 7) : 3.f);
      row[d] = reference::float_to_bf16_bits(v);
    }
  }
  static float v_expected(int d, float key, float v_base) {
    return d < 4 ? key : v_base + float(d % 7);
  }
};

TEST_F(ExactReference, OneTokenCopiesItsValueRow) {
  DenseDecodeHostData data(base(1, {1}));
  fill_q(data, 0, 0, 2.f);
  fill_k(data, 0, 0, 3.f, 10.f);
  const Result r = run_reference(data.params());
  for (int d = 0; d < 512; ++d) ASSERT_EQ(r.out[d], v_expected(d, 3.f, 10.f)) << d;
  // logit = 0.125 * (4 * 2 * 3 + 64 * 0 * 3) = 3, exactly; lse of one logit is the logit.
  EXPECT_EQ(r.lse[0], 3.f);
}

TEST_F(ExactReference, EqualLogitsAverageTheValueRows) {
  DenseDecodeHostData data(base(1, {2}));
  fill_q(data, 0, 0, 1.f);
  fill_k(data, 0, 0, 2.f, 10.f);
  fill_k(data, 0, 1, 2.f, 20.f);
  const Result r = run_reference(data.params());
  for (int d = 4; d < 512; ++d) ASSERT_EQ(r.out[d], 15.f + float(d % 7)) << d;
  for (int d = 0; d < 4; ++d) ASSERT_EQ(r.out[d], 2.f) << d;
  // logits 0.125 * 8 = 1 each: lse = 1 + log 2.
  EXPECT_EQ(r.lse[0], static_cast<float>(1.0 + std::log(2.0)));
}

TEST_F(ExactReference, ExtrasOfEqualLogitsWithSignedValues) {
  // Values -10 + d % 7 and 20 + d % 7 with weights 1/2 each: out = 5 + d % 7, but
  // sum w |v| = (10 - d % 7 + 20 + d % 7) / 2 = 15. Both logits are 1.
  DenseDecodeHostData data(base(1, {2}));
  fill_q(data, 0, 0, 1.f);
  fill_k(data, 0, 0, 2.f, -10.f);
  fill_k(data, 0, 1, 2.f, 20.f);
  const DenseDecodeParams p = data.params();
  std::vector<float> out(512), lse(1), out_abs(512), max_logit(1);
  dense_decode_reference(p, out.data(), lse.data(), out_abs.data(), max_logit.data());
  for (int d = 4; d < 512; ++d) {
    ASSERT_EQ(out[d], 5.f + float(d % 7)) << d;
    ASSERT_EQ(out_abs[d], 15.f) << d;
  }
  for (int d = 0; d < 4; ++d) ASSERT_EQ(out_abs[d], 2.f) << d;
  EXPECT_EQ(max_logit[0], 1.f);
}

TEST_F(ExactReference, CausalBottomRightAligned) {
  // s_q = 2 over 3 tokens: query 0 sees tokens 0..1, query 1 sees 0..2.
  DenseDecodeHostData data(base(2, {3}));
  fill_q(data, 0, 0, 1.f);
  fill_q(data, 0, 1, 1.f);
  fill_k(data, 0, 0, 1.f, 8.f);
  fill_k(data, 0, 1, 1.f, 16.f);
  fill_k(data, 0, 2, 1.f, 48.f);  // 8 + 16 + 48 = 72, /3 = 24 exactly
  const Result r = run_reference(data.params());
  for (int d = 4; d < 512; ++d) {
    ASSERT_EQ(r.out[0 * 512 + d], 12.f + float(d % 7)) << d;
    ASSERT_NEAR(r.out[1 * 512 + d], 24.f + float(d % 7), 4e-6) << d;  // weights 1/3
  }
  EXPECT_EQ(r.lse[0], static_cast<float>(0.5 + std::log(2.0)));
  EXPECT_EQ(r.lse[1], static_cast<float>(0.5 + std::log(3.0)));
}

TEST_F(ExactReference, QueriesBeforeTheFirstTokenGetZeroAndInf) {
  // s_q = 3 over 1 token: queries 0 and 1 see nothing, query 2 sees token 0.
  DenseDecodeHostData data(base(3, {1}));
  for (int j = 0; j < 3; ++j) fill_q(data, 0, j, 1.f);
  fill_k(data, 0, 0, 4.f, 1.f);
  const Result r = run_reference(data.params());
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(r.lse[j], kInf);
    for (int d = 0; d < 512; ++d) ASSERT_EQ(r.out[j * 512 + d], 0.f);
  }
  EXPECT_EQ(r.lse[2], 2.f);  // 0.125 * 16
  for (int d = 4; d < 512; ++d) ASSERT_EQ(r.out[2 * 512 + d], 1.f + float(d % 7));
}

TEST_F(ExactReference, GroupedHeadsReadTheirOwnKvHead) {
  // h_q = 4, h_kv = 2: heads 0, 1 read KV head 0; heads 2, 3 read KV head 1.
  DenseDecodeCase c = base(1, {1});
  c.num_heads_q = 4;
  c.num_heads_kv = 2;
  DenseDecodeHostData data(c);
  for (int h = 0; h < 4; ++h) {
    uint16_t* row = data.q_row(0, 0, h);
    for (int d = 0; d < 576; ++d) row[d] = reference::float_to_bf16_bits(d == 0 ? 1.f : 0.f);
  }
  for (int kv = 0; kv < 2; ++kv) {
    uint16_t* row = data.k_row(0, 0, kv);
    for (int d = 0; d < 576; ++d) row[d] = reference::float_to_bf16_bits(float(100 * kv + 1));
  }
  const Result r = run_reference(data.params());
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(r.out[h * 512 + 7], float(100 * (h / 2) + 1)) << h;
    EXPECT_EQ(r.lse[h], 0.125f * float(100 * (h / 2) + 1)) << h;
  }
}

// ---------------------------------------------------------------------------------------
// One logical problem under several cache layouts: the reference reads the same tokens in the
// same order whatever the layout, so the results are bit-identical.

// A copy of `src`'s cache in another layout: pages of `page` tokens (shuffled, with spare NaN
// pages and garbage past each sequence's pages), or non-paged with `page` tokens per
// sequence. Token and block strides are padded differently from the source.
class Relaid {
 public:
  Relaid(const DenseDecodeHostData& src, int page, bool non_paged, uint32_t seed)
      : base_(src.params()), page_(page), non_paged_(non_paged) {
    const DenseDecodeParams& p = base_;
    const int b = p.batch;
    head_stride_ = p.head_dim_qk + 8;
    token_stride_ = p.num_heads_kv * head_stride_ + 16;
    block_stride_ = int64_t(page) * token_stride_ + 24;
    std::vector<int32_t> first_page(b, 0);
    if (non_paged) {
      num_blocks_ = b;
      max_blocks_ = 1;
    } else {
      int total = 0;
      max_blocks_ = 1;
      for (int i = 0; i < b; ++i) {
        const int pages = (p.cache_seqlens[i] + page - 1) / page;
        first_page[i] = total;
        total += pages;
        max_blocks_ = std::max(max_blocks_, pages);
      }
      max_blocks_ += 1;
      num_blocks_ = total + 3;
      std::vector<int32_t> order(num_blocks_);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), std::mt19937(seed));
      table_stride_ = max_blocks_ + 2;
      table_.assign(size_t(b) * table_stride_, -1);
      for (int i = 0; i < b; ++i) {
        const int pages = (p.cache_seqlens[i] + page - 1) / page;
        for (int j = 0; j < pages; ++j)
          table_[size_t(i) * table_stride_ + j] = order[first_page[i] + j];
        for (int j = pages; j < table_stride_; ++j) {
          table_[size_t(i) * table_stride_ + j] = j % 2 ? num_blocks_ : -12345;  // never used
        }
      }
    }
    cache_.assign(size_t(num_blocks_) * block_stride_, testing::nan_bits(p.dtype));
    for (int i = 0; i < b; ++i) {
      for (int t = 0; t < p.cache_seqlens[i]; ++t) {
        const int64_t block = non_paged ? i : table_[size_t(i) * table_stride_ + t / page];
        for (int h = 0; h < p.num_heads_kv; ++h) {
          uint16_t* dst =
              &cache_[block * block_stride_ + (t % page) * token_stride_ + h * head_stride_];
          std::memcpy(dst, src.k_row(i, t, h), sizeof(uint16_t) * p.head_dim_qk);
        }
      }
    }
  }
  Relaid(const Relaid&) = delete;
  Relaid& operator=(const Relaid&) = delete;

  DenseDecodeParams params() const {
    DenseDecodeParams p = base_;
    p.page_block_size = page_;
    p.num_blocks = num_blocks_;
    p.max_blocks_per_seq = max_blocks_;
    p.k_cache = cache_.data();
    p.k_block_stride = block_stride_;
    p.k_token_stride = token_stride_;
    p.k_head_stride = head_stride_;
    p.block_table = non_paged_ ? nullptr : table_.data();
    p.block_table_batch_stride = non_paged_ ? 0 : table_stride_;
    return p;
  }

 private:
  DenseDecodeParams base_;  // host pointers into the source (q, cache_seqlens)
  int page_;
  bool non_paged_;
  int num_blocks_ = 0, max_blocks_ = 0;
  int64_t head_stride_ = 0, token_stride_ = 0, block_stride_ = 0, table_stride_ = 0;
  std::vector<uint16_t> cache_;
  std::vector<int32_t> table_;
};

struct FullResult {
  std::vector<float> out, lse, out_abs, max_logit;
};

FullResult run_reference_with_extras(const DenseDecodeParams& p) {
  FullResult r;
  r.out.assign(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v, -777.f);
  r.lse.assign(size_t(p.batch) * p.num_heads_q * p.seqlen_q, -777.f);
  r.out_abs.assign(r.out.size(), -777.f);
  r.max_logit.assign(r.lse.size(), -777.f);
  dense_decode_reference(p, r.out.data(), r.lse.data(), r.out_abs.data(), r.max_logit.data());
  return r;
}

void expect_same_results(const FullResult& got, const FullResult& want) {
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(got.lse, want.lse);
  EXPECT_EQ(got.out_abs, want.out_abs);
  EXPECT_EQ(got.max_logit, want.max_logit);
}

TEST(ReferenceLayouts, NonPagedEqualsPaged) {
  DenseDecodeCase c =
      make_case(ScalarType::kBFloat16, 576, 4, 2, 2, true, {0, 1, 49, 50, 17, 33}, 50, 60);
  c.non_paged = true;
  c.k_block_pad = 8;
  DenseDecodeHostData flat(c);
  const FullResult want = run_reference_with_extras(flat.params());
  EXPECT_FALSE(std::isinf(want.lse[(size_t(2) * 4 + 0) * 2 + 1]));  // something was attended
  for (int page : {1, 16, 50, 64}) {
    SCOPED_TRACE("paged, page " + std::to_string(page));
    const Relaid paged(flat, page, /*non_paged=*/false, 61 + page);
    expect_same_results(run_reference_with_extras(paged.params()), want);
  }
  {
    SCOPED_TRACE("non-paged with room to spare (s_k_max 80)");
    const Relaid wider(flat, 80, /*non_paged=*/true, 0);
    expect_same_results(run_reference_with_extras(wider.params()), want);
  }
  // Brute force on the non-paged layout too: equal results are also right ones.
  expect_matches_brute_force(flat.params());
}

TEST(ReferenceLayouts, PageSizesAgreeWithPage64) {
  for (const auto dtype : {ScalarType::kBFloat16, ScalarType::kFloat16}) {
    SCOPED_TRACE(to_string(dtype));
    DenseDecodeHostData data(
        make_case(dtype, 576, 3, 1, 3, true, {0, 1, 63, 64, 65, 130, 200, 2}, 64, 62));
    const FullResult want = run_reference_with_extras(data.params());
    for (int page : {1, 2, 16, 32, 53, 100, 256}) {
      SCOPED_TRACE("page " + std::to_string(page));
      const Relaid relaid(data, page, /*non_paged=*/false, 63 + page);
      expect_same_results(run_reference_with_extras(relaid.params()), want);
    }
    SCOPED_TRACE("non-paged, s_k_max 200");
    const Relaid flat(data, 200, /*non_paged=*/true, 0);
    expect_same_results(run_reference_with_extras(flat.params()), want);
  }
}

TEST(ReferenceLayouts, ManyThreadsPage1EqualsPage64) {
  // Large enough for several threads and items; page 1 is the most scattered layout.
  DenseDecodeHostData data(
      make_case(ScalarType::kBFloat16, 576, 40, 1, 2, true, {700, 300}, 64, 64));
  const FullResult want = run_reference_with_extras(data.params());
  const Relaid page1(data, 1, /*non_paged=*/false, 65);
  expect_same_results(run_reference_with_extras(page1.params()), want);
  const Relaid flat(data, 700, /*non_paged=*/true, 0);
  expect_same_results(run_reference_with_extras(flat.params()), want);
}

TEST(ReferenceLayouts, EmptyBatchComputesNothing) {
  DenseDecodeParams p;
  p.dtype = ScalarType::kBFloat16;
  p.batch = 0;
  p.seqlen_q = 1;
  p.num_heads_q = 16;
  p.num_heads_kv = 1;
  p.head_dim_qk = 576;
  p.head_dim_v = 512;
  p.page_block_size = 64;
  p.softmax_scale = 0.1f;
  EXPECT_NO_THROW(dense_decode_reference(p, nullptr, nullptr));  // every pointer null
  float out = -777.f, lse = -777.f;
  EXPECT_NO_THROW(dense_decode_reference(p, &out, &lse));
  EXPECT_EQ(out, -777.f);
  EXPECT_EQ(lse, -777.f);
}

// ---------------------------------------------------------------------------------------
// Inputs the reference refuses instead of reading out of bounds.

TEST(ReferenceRejects, NegativeLength) {
  DenseDecodeHostData data(make_case(ScalarType::kBFloat16, 576, 1, 1, 1, false, {5}, 64, 21));
  data.cache_seqlens[0] = -1;
  float out[512], lse[1];
  EXPECT_THROW(dense_decode_reference(data.params(), out, lse), Error);
}

TEST(ReferenceRejects, UsedTableEntryOutOfRange) {
  DenseDecodeHostData data(make_case(ScalarType::kBFloat16, 576, 1, 1, 1, false, {70}, 64, 22));
  data.block_table[1] = 12345;
  float out[512], lse[1];
  try {
    dense_decode_reference(data.params(), out, lse);
    FAIL() << "expected flashmla::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "block_table");
  }
}

TEST(ReferenceRejects, LengthNeedingMorePagesThanTheTableHas) {
  DenseDecodeHostData data(make_case(ScalarType::kBFloat16, 576, 1, 1, 1, false, {64}, 64, 23));
  data.cache_seqlens[0] = 64 * 2 + 1;  // the table has 1 + 1 extra columns
  std::vector<float> out(512), lse(1);
  EXPECT_THROW(dense_decode_reference(data.params(), out.data(), lse.data()), Error);
}

// Non-paged: the reference checks the non-paged shape rules and every length against the
// capacity page_block_size.
void expect_reference_rejects(const DenseDecodeParams& p, const char* argument) {
  std::vector<float> out(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v);
  std::vector<float> lse(size_t(p.batch) * p.num_heads_q * p.seqlen_q);
  try {
    dense_decode_reference(p, out.data(), lse.data());
    ADD_FAILURE() << "expected flashmla::Error naming " << argument;
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
  }
}

TEST(ReferenceRejects, NonPagedBadLengthsAndShapes) {
  DenseDecodeCase c = make_case(ScalarType::kBFloat16, 576, 1, 1, 1, false, {5, 20, 0}, 20, 24);
  c.non_paged = true;
  DenseDecodeHostData data(c);
  {
    SCOPED_TRACE("valid");
    std::vector<float> out(3 * 512), lse(3);
    EXPECT_NO_THROW(dense_decode_reference(data.params(), out.data(), lse.data()));
  }
  {
    SCOPED_TRACE("length beyond s_k_max");
    data.cache_seqlens[1] = 21;
    expect_reference_rejects(data.params(), "cache_seqlens");
    data.cache_seqlens[1] = 20;
  }
  {
    SCOPED_TRACE("negative length");
    data.cache_seqlens[2] = -1;
    expect_reference_rejects(data.params(), "cache_seqlens");
    data.cache_seqlens[2] = 0;
  }
  {
    SCOPED_TRACE("num_blocks != batch");
    DenseDecodeParams p = data.params();
    p.num_blocks = 4;
    expect_reference_rejects(p, "num_blocks");
  }
  {
    SCOPED_TRACE("max_blocks_per_seq != 1");
    DenseDecodeParams p = data.params();
    p.max_blocks_per_seq = 2;
    expect_reference_rejects(p, "max_blocks_per_seq");
  }
}

TEST(ReferenceRejects, OddPageSizeBadEntries) {
  // Page 53: 54 tokens use columns 0 and 1; column 2 is never read.
  DenseDecodeHostData data(make_case(ScalarType::kBFloat16, 576, 1, 1, 1, false, {54}, 53, 25));
  std::vector<float> out(512), lse(1);
  data.block_table[2] = -1;
  EXPECT_NO_THROW(dense_decode_reference(data.params(), out.data(), lse.data()));
  const int32_t saved = data.block_table[1];
  data.block_table[1] = data.params().num_blocks;
  expect_reference_rejects(data.params(), "block_table");
  data.block_table[1] = saved;
  data.cache_seqlens[0] = 53 * 3 + 1;  // needs 4 columns; the table has 2 + 1 spare
  expect_reference_rejects(data.params(), "block_table");
}

TEST(ReferenceOutput, RoundsToTheParamsDtype) {
  DenseDecodeParams p;
  p.dtype = ScalarType::kFloat16;
  const float values[] = {1.f, 1.f + 0x1p-11f, 65520.f, -0.f};
  uint16_t bits[4];
  reference::round_output_to_dtype(p, values, bits, 4);
  EXPECT_EQ(bits[0], 0x3c00);
  EXPECT_EQ(bits[1], 0x3c00);  // tie to even
  EXPECT_EQ(bits[2], 0x7c00);  // overflows to inf
  EXPECT_EQ(bits[3], 0x8000);
}

}  // namespace
}  // namespace flashmla
