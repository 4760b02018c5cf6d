// The CPU reference of sparse prefill against a plain brute-force formula (long double, every
// row read straight from the bfloat16 bits), plus small exact cases with integer-valued inputs,
// and the behaviours sparse_prefill.h defines: invalid entries (-1, out of range, past
// topk_length), duplicates, the attention sink, NaN in rows nothing selects.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "brute_force_check.h"
#include "flashmla/sparse_prefill.h"
#include "reference/half_convert.h"
#include "reference/sparse_prefill_reference.h"
#include "sparse_prefill_case.h"

namespace flashmla {
namespace {

using reference::sparse_prefill_reference;
using testing::SinkMode;
using testing::SparsePrefillCase;
using testing::SparsePrefillHostData;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kDv = 512;

struct Result {
  std::vector<float> out;         // [s_q, h_q, d_v]
  std::vector<float> max_logits;  // [s_q, h_q]
  std::vector<float> lse;         // [s_q, h_q]
  std::vector<float> out_abs;     // layout of out (only when asked for)
};

Result run_reference(const SparsePrefillParams& p, bool with_abs = false) {
  Result r;
  r.out.assign(size_t(p.seqlen_q) * p.num_heads_q * p.head_dim_v, -777.f);
  r.max_logits.assign(size_t(p.seqlen_q) * p.num_heads_q, -777.f);
  r.lse.assign(r.max_logits.size(), -777.f);
  if (with_abs) r.out_abs.assign(r.out.size(), -777.f);
  sparse_prefill_reference(p, r.out.data(), r.max_logits.data(), r.lse.data(),
                           with_abs ? r.out_abs.data() : nullptr);
  return r;
}

// ---------------------------------------------------------------------------------------
// The brute force: the header's definition, written as directly as possible.

struct BruteResult {
  std::vector<long double> out, max_logits, lse, out_abs;
};

long double bf16(uint16_t bits) {
  return static_cast<long double>(reference::bf16_bits_to_float(bits));
}

BruteResult brute_force(const SparsePrefillParams& p) {
  const int s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto* kv = static_cast<const uint16_t*>(p.kv);
  BruteResult r;
  r.out.assign(size_t(s_q) * h_q * d_v, 0.0L);
  r.out_abs.assign(r.out.size(), 0.0L);
  r.max_logits.assign(size_t(s_q) * h_q, -std::numeric_limits<long double>::infinity());
  r.lse.assign(r.max_logits.size(), std::numeric_limits<long double>::infinity());
  for (int s = 0; s < s_q; ++s) {
    // T: the valid entries of the list, in order.
    int len = p.topk;
    if (p.topk_length != nullptr) len = std::max(0, std::min(p.topk, p.topk_length[s]));
    std::vector<const uint16_t*> keys;
    for (int j = 0; j < len; ++j) {
      const int64_t index = p.indices[s * p.indices_seq_stride + j];
      if (0 <= index && index < p.num_kv_tokens) keys.push_back(kv + index * p.kv_token_stride);
    }
    if (keys.empty()) continue;
    for (int h = 0; h < h_q; ++h) {
      const size_t e = size_t(s) * h_q + h;
      const uint16_t* q_row = q + s * p.q_seq_stride + h * p.q_head_stride;
      std::vector<long double> logits;
      for (const uint16_t* k : keys) {
        long double dot = 0;
        for (int d = 0; d < p.head_dim_qk; ++d) dot += bf16(q_row[d]) * bf16(k[d]);
        logits.push_back(static_cast<long double>(p.softmax_scale) * dot);
      }
      const long double max_logit = *std::max_element(logits.begin(), logits.end());
      long double sum = 0;
      for (long double l : logits) sum += std::exp(l - max_logit);
      r.max_logits[e] = max_logit;
      r.lse[e] = max_logit + std::log(sum);
      long double sink_factor = 1;
      if (p.attn_sink != nullptr) {
        const long double e_lse = std::exp(r.lse[e]);
        sink_factor = e_lse / (e_lse + std::exp(static_cast<long double>(p.attn_sink[h])));
      }
      for (size_t t = 0; t < keys.size(); ++t) {
        const long double w = sink_factor * std::exp(logits[t] - max_logit) / sum;
        for (int d = 0; d < d_v; ++d) {
          r.out[e * d_v + d] += w * bf16(keys[t][d]);
          r.out_abs[e * d_v + d] += w * std::fabs(bf16(keys[t][d]));
        }
      }
    }
  }
  return r;
}

void expect_matches_brute_force(const SparsePrefillParams& p) {
  const Result got = run_reference(p, /*with_abs=*/true);
  const BruteResult want = brute_force(p);
  const Result plain = run_reference(p);  // asking for out_abs changes nothing
  EXPECT_EQ(got.out, plain.out);
  EXPECT_EQ(got.max_logits, plain.max_logits);
  EXPECT_EQ(got.lse, plain.lse);
  int failures = 0;
  testing::expect_close_to_brute_force("out", got.out, want.out, failures);
  testing::expect_close_to_brute_force("max_logits", got.max_logits, want.max_logits, failures);
  testing::expect_close_to_brute_force("lse", got.lse, want.lse, failures);
  testing::expect_close_to_brute_force("out_abs", got.out_abs, want.out_abs, failures);
}

// ---------------------------------------------------------------------------------------
// Random cases against the brute force.

struct RandomCase {
  std::string name;
  SparsePrefillCase config;
};

void PrintTo(const RandomCase& c, std::ostream* os) {
  *os << c.name;
}

SparsePrefillCase make_case(int d_qk, int s_q, int h_q, int64_t s_kv, int topk, uint32_t seed) {
  SparsePrefillCase c;
  c.head_dim_qk = d_qk;
  c.seqlen_q = s_q;
  c.num_heads_q = h_q;
  c.num_kv_tokens = s_kv;
  c.topk = topk;
  c.seed = seed;
  return c;
}

std::vector<RandomCase> random_cases() {
  std::vector<RandomCase> cases;
  for (int d_qk : {576, 512}) {
    const uint32_t seed = d_qk == 576 ? 100 : 200;
    const auto add = [&](const std::string& name, const SparsePrefillCase& c) {
      cases.push_back({name + (d_qk == 576 ? "_d576" : "_d512"), c});
    };
    add("single", make_case(d_qk, 1, 1, 40, 20, seed + 1));
    add("heads3_sq5", make_case(d_qk, 5, 3, 100, 37, seed + 2));
    add("heads16_sq4", make_case(d_qk, 4, 16, 300, 64, seed + 3));
    add("topk_past_skv", make_case(d_qk, 3, 4, 12, 100, seed + 4));
    add("skv1", make_case(d_qk, 3, 2, 1, 7, seed + 5));

    SparsePrefillCase lengths = make_case(d_qk, 24, 3, 80, 30, seed + 6);
    lengths.random_topk_length = true;
    add("random_lengths", lengths);
    SparsePrefillCase fixed_lengths = make_case(d_qk, 6, 2, 50, 25, seed + 7);
    fixed_lengths.topk_length = {0, 25, -5, 1000, 3, 24};
    add("lengths_zero_negative_past_topk", fixed_lengths);

    SparsePrefillCase sink = make_case(d_qk, 3, 16, 90, 40, seed + 8);
    sink.sink = SinkMode::kMixed;
    add("sink_mixed", sink);

    SparsePrefillCase invalid = make_case(d_qk, 9, 2, 64, 24, seed + 9);
    invalid.invalid_fraction = 0.5;
    invalid.all_invalid_fraction = 0.3;
    add("many_invalid", invalid);

    SparsePrefillCase duplicates = make_case(d_qk, 4, 3, 30, 40, seed + 10);
    duplicates.duplicate_fraction = 0.5;
    add("many_duplicates", duplicates);

    SparsePrefillCase nan_rows = make_case(d_qk, 5, 2, 60, 30, seed + 11);
    nan_rows.nan_row_fraction = 0.5;
    nan_rows.random_topk_length = true;
    add("half_the_rows_nan", nan_rows);

    // Strides with padding (odd on purpose: the reference must follow them exactly).
    SparsePrefillCase padded = make_case(d_qk, 3, 3, 40, 21, seed + 12);
    padded.q_head_pad = 3;
    padded.q_seq_pad = 5;
    padded.kv_token_pad = 7;
    padded.indices_seq_pad = 3;
    padded.topk_length = {15, 21, 2};
    add("padded_strides", padded);

    // Big enough for several threads: many query tokens, and one token with many heads (the
    // heads are then split over items).
    add("threads_many_tokens", make_case(d_qk, 40, 16, 300, 128, seed + 13));
    add("threads_one_token", make_case(d_qk, 1, 128, 1000, 600, seed + 14));

    SparsePrefillCase sharp = make_case(d_qk, 2, 4, 100, 60, seed + 15);
    sharp.softmax_scale = 0.4f;  // logits of std ~10: a very peaked softmax
    add("sharp_scale", sharp);
  }
  return cases;
}

class SparsePrefillReferenceVsBruteForce : public ::testing::TestWithParam<RandomCase> {};

TEST_P(SparsePrefillReferenceVsBruteForce, Matches) {
  SparsePrefillHostData data(GetParam().config);
  expect_matches_brute_force(data.params());
}

INSTANTIATE_TEST_SUITE_P(Cases, SparsePrefillReferenceVsBruteForce,
                         ::testing::ValuesIn(random_cases()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Behaviours of the definition, on random data.

// Every output of a query that attends to nothing: out = 0, max_logits = -inf, lse = +inf,
// out_abs = 0.
void expect_attends_to_nothing(const Result& r, const SparsePrefillParams& p, int s, int h) {
  const size_t e = size_t(s) * p.num_heads_q + h;
  EXPECT_EQ(r.lse[e], kInf) << s << " " << h;
  EXPECT_EQ(r.max_logits[e], -kInf) << s << " " << h;
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[e * kDv + d], 0.f) << s << " " << h;
  for (int d = 0; d < kDv && !r.out_abs.empty(); ++d) ASSERT_EQ(r.out_abs[e * kDv + d], 0.f);
}

TEST(SparsePrefillReferenceBehaviour, AllInvalidRowsGiveZeroAndInf) {
  for (int d_qk : {576, 512}) {
    SCOPED_TRACE(d_qk);
    SparsePrefillCase c = make_case(d_qk, 4, 5, 64, 40, 30);
    c.all_invalid_fraction = 1.0;
    c.sink = SinkMode::kMixed;  // a sink changes nothing where nothing is attended
    SparsePrefillHostData data(c);
    const SparsePrefillParams p = data.params();
    const Result r = run_reference(p, /*with_abs=*/true);
    for (int s = 0; s < 4; ++s) {
      for (int h = 0; h < 5; ++h) expect_attends_to_nothing(r, p, s, h);
    }
  }
}

TEST(SparsePrefillReferenceBehaviour, TopkLengthZeroOrNegativeAttendsToNothing) {
  SparsePrefillCase c = make_case(576, 6, 2, 100, 50, 31);
  c.topk_length = {0, 50, -3, 7, 1000, std::numeric_limits<int32_t>::min()};
  c.invalid_fraction = 0.0;
  SparsePrefillHostData data(c);
  const SparsePrefillParams p = data.params();
  const Result r = run_reference(p, /*with_abs=*/true);
  for (int s = 0; s < 6; ++s) {
    for (int h = 0; h < 2; ++h) {
      if (c.topk_length[s] <= 0) {
        expect_attends_to_nothing(r, p, s, h);
      } else {
        EXPECT_TRUE(std::isfinite(r.lse[size_t(s) * 2 + h])) << s;
      }
    }
  }
  expect_matches_brute_force(p);
}

// A length past topk counts as topk: the same bits as no topk_length at all.
TEST(SparsePrefillReferenceBehaviour, TopkLengthPastTopkIsTopk) {
  SparsePrefillCase c = make_case(512, 3, 4, 70, 33, 32);
  c.topk_length = {33, 34, std::numeric_limits<int32_t>::max()};
  SparsePrefillHostData data(c);
  SparsePrefillParams p = data.params();
  const Result with_lengths = run_reference(p, true);
  p.topk_length = nullptr;
  const Result without = run_reference(p, true);
  EXPECT_EQ(with_lengths.out, without.out);
  EXPECT_EQ(with_lengths.max_logits, without.max_logits);
  EXPECT_EQ(with_lengths.lse, without.lse);
  EXPECT_EQ(with_lengths.out_abs, without.out_abs);
}

// Entries past the length do not matter, whatever they hold.
TEST(SparsePrefillReferenceBehaviour, EntriesPastTheLengthAreIgnored) {
  SparsePrefillCase c = make_case(576, 4, 3, 90, 40, 33);
  c.topk_length = {10, 0, 39, 25};
  SparsePrefillHostData data(c);
  const SparsePrefillParams p = data.params();
  const Result before = run_reference(p, true);
  for (int s = 0; s < 4; ++s) {
    int32_t* row = data.index_row(s);
    for (int j = std::max(0, c.topk_length[s]); j < c.topk; ++j) row[j] = j % 90;  // real rows
  }
  const Result after = run_reference(p, true);
  EXPECT_EQ(before.out, after.out);
  EXPECT_EQ(before.max_logits, after.max_logits);
  EXPECT_EQ(before.lse, after.lse);
  EXPECT_EQ(before.out_abs, after.out_abs);
}

// -1 and out-of-range entries are skipped: the same tokens in the same order without them give
// the same bits.
TEST(SparsePrefillReferenceBehaviour, InvalidEntriesAreSkipped) {
  for (int d_qk : {576, 512}) {
    SCOPED_TRACE(d_qk);
    SparsePrefillCase c = make_case(d_qk, 5, 9, 120, 64, 34);
    c.invalid_fraction = 0.4;
    SparsePrefillHostData data(c);
    const SparsePrefillParams p = data.params();
    const Result with_invalid = run_reference(p, true);

    // The valid entries moved to the front (order kept), -1 after them.
    std::vector<int32_t> compacted(data.indices.size(), -1);
    int invalid_seen = 0;
    for (int s = 0; s < c.seqlen_q; ++s) {
      const int32_t* row = data.index_row(s);
      int next = 0;
      for (int j = 0; j < c.topk; ++j) {
        if (row[j] >= 0 && row[j] < c.num_kv_tokens) {
          compacted[size_t(s) * p.indices_seq_stride + next++] = row[j];
        } else {
          ++invalid_seen;
        }
      }
    }
    EXPECT_GT(invalid_seen, 50);
    SparsePrefillParams compact = p;
    compact.indices = compacted.data();
    const Result without = run_reference(compact, true);
    EXPECT_EQ(with_invalid.out, without.out);
    EXPECT_EQ(with_invalid.max_logits, without.max_logits);
    EXPECT_EQ(with_invalid.lse, without.lse);
    EXPECT_EQ(with_invalid.out_abs, without.out_abs);
  }
}

TEST(SparsePrefillReferenceBehaviour, SinkPlusInfZeroesOutAndMinusInfChangesNothing) {
  for (int d_qk : {576, 512}) {
    SCOPED_TRACE(d_qk);
    SparsePrefillHostData data(make_case(d_qk, 3, 8, 100, 64, 35));
    SparsePrefillParams p = data.params();
    const Result plain = run_reference(p);

    const std::vector<float> plus(8, kInf), minus(8, -kInf);
    p.attn_sink = plus.data();
    const Result zeroed = run_reference(p);
    EXPECT_EQ(zeroed.lse, plain.lse);  // lse and max_logits ignore the sink
    EXPECT_EQ(zeroed.max_logits, plain.max_logits);
    for (float v : zeroed.out) ASSERT_EQ(v, 0.f);

    p.attn_sink = minus.data();
    const Result unchanged = run_reference(p);
    EXPECT_EQ(unchanged.lse, plain.lse);
    EXPECT_EQ(unchanged.max_logits, plain.max_logits);
    EXPECT_EQ(unchanged.out, plain.out);
  }
}

TEST(SparsePrefillReferenceBehaviour, SinkScalesOutByTheSinkFactor) {
  SparsePrefillHostData data(make_case(576, 2, 2, 60, 30, 36));
  SparsePrefillParams p = data.params();
  const Result plain = run_reference(p);
  // sink_h = lse_h + log(3) (of query token 0): factor 1/4 there.
  const std::vector<float> sink = {plain.lse[0] + std::log(3.f), plain.lse[1] + std::log(3.f)};
  p.attn_sink = sink.data();
  const Result scaled = run_reference(p);
  EXPECT_EQ(scaled.lse, plain.lse);
  EXPECT_EQ(scaled.max_logits, plain.max_logits);
  for (size_t e = 0; e < size_t(2) * kDv; ++e) {
    ASSERT_NEAR(scaled.out[e], plain.out[e] / 4, 1e-6 * std::fabs(plain.out[e]) + 1e-12) << e;
  }
  expect_matches_brute_force(p);
}

// The case generator puts NaN in every row nothing selects (and in every padding), and
// garbage past topk_length that points at such rows; none of it may reach the outputs.
TEST(SparsePrefillReferenceBehaviour, NaNInUnselectedRowsDoesNotReachOutputs) {
  for (int d_qk : {576, 512}) {
    SCOPED_TRACE(d_qk);
    SparsePrefillCase c = make_case(d_qk, 8, 4, 64, 48, 37);
    c.topk_length = {48, 10, 1, 30, 0, 47, 20, 5};
    c.invalid_fraction = 0.3;
    c.nan_row_fraction = 0.25;
    c.sink = SinkMode::kMixed;
    c.q_head_pad = 8;
    c.kv_token_pad = 16;
    SparsePrefillHostData data(c);
    const SparsePrefillParams p = data.params();

    // The data really is poisoned: unselected rows hold NaN, and garbage entries past a length
    // point at them.
    ASSERT_EQ(data.nan_rows.size(), 16u);
    int garbage_at_nan_rows = 0;
    for (int s = 0; s < 8; ++s) {
      const int32_t* row = data.index_row(s);
      for (int j = std::max(0, c.topk_length[s]); j < 48; ++j) {
        if (row[j] >= 0 && row[j] < 64 && !data.selected[row[j]]) ++garbage_at_nan_rows;
      }
    }
    EXPECT_GT(garbage_at_nan_rows, 30);
    for (int64_t t = 0; t < 64; ++t) {
      const bool nan = std::isnan(reference::bf16_bits_to_float(data.kv_row(t)[0]));
      ASSERT_EQ(nan, !data.selected[t]) << "row " << t;
    }
    for (int64_t t : data.nan_rows) ASSERT_FALSE(data.selected[t]) << t;

    const Result r = run_reference(p, /*with_abs=*/true);
    for (float v : r.out) ASSERT_FALSE(std::isnan(v));
    for (float v : r.max_logits) ASSERT_FALSE(std::isnan(v));
    for (float v : r.lse) ASSERT_FALSE(std::isnan(v));
    for (float v : r.out_abs) ASSERT_TRUE(std::isfinite(v));
    expect_matches_brute_force(p);
  }
}

// The case generator itself: lists mix distinct tokens, duplicates and invalid entries.
TEST(SparsePrefillReferenceBehaviour, GeneratedListsHaveDuplicatesAndInvalidEntries) {
  SparsePrefillCase c = make_case(576, 20, 1, 500, 128, 38);
  c.duplicate_fraction = 0.1;
  SparsePrefillHostData data(c);
  int duplicates = 0, invalid = 0, valid = 0;
  for (int s = 0; s < 20; ++s) {
    std::vector<int32_t> row(data.index_row(s), data.index_row(s) + 128);
    std::vector<int32_t> seen;
    for (int32_t index : row) {
      if (index < 0 || index >= 500) {
        ++invalid;
      } else {
        ++valid;
        if (std::find(seen.begin(), seen.end(), index) != seen.end()) ++duplicates;
        seen.push_back(index);
      }
    }
  }
  EXPECT_GT(duplicates, 100);
  EXPECT_GT(invalid, 100);
  EXPECT_GT(valid, 2000);
}

// ---------------------------------------------------------------------------------------
// Exact cases: small integer values and a power-of-two softmax scale make every logit exact;
// equal logits make every weight a power of two.

class ExactSparsePrefillReference : public ::testing::TestWithParam<int> {
 protected:
  // One query token, h_q heads; a list of `topk` entries over 8 kv rows.
  SparsePrefillCase base(int h_q = 1, int topk = 4) const {
    SparsePrefillCase c = make_case(GetParam(), 1, h_q, 8, topk, 40);
    c.softmax_scale = 0.125f;
    return c;
  }
  int d_qk() const { return GetParam(); }
  // q: `value` in columns 0..3, 0 elsewhere.
  void fill_q(SparsePrefillHostData& data, int h, float value) const {
    uint16_t* row = data.q_row(0, h);
    for (int d = 0; d < d_qk(); ++d) row[d] = reference::float_to_bf16_bits(d < 4 ? value : 0.f);
  }
  // kv row: columns 0..3 = key (the dot with q), the others v_base + d % 7.
  std::vector<float> k_row(float key, float v_base) const {
    std::vector<float> row(d_qk());
    for (int d = 0; d < d_qk(); ++d) row[d] = d < 4 ? key : v_base + float(d % 7);
    return row;
  }
  static void set_list(SparsePrefillHostData& data, const std::vector<int32_t>& entries) {
    int32_t* row = data.index_row(0);
    for (size_t j = 0; j < entries.size(); ++j) row[j] = entries[j];
  }
};

TEST_P(ExactSparsePrefillReference, OneTokenCopiesItsValueRow) {
  SparsePrefillHostData data(base());
  fill_q(data, 0, 2.f);
  data.set_kv_row(5, k_row(3.f, 9.f));
  set_list(data, {-1, 5, -1, -1});
  const Result r = run_reference(data.params(), true);
  const std::vector<float> k = k_row(3.f, 9.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[d], k[d]) << d;
  // logit = 0.125 * 4 * 2 * 3 = 3 exactly; lse of one logit is the logit.
  EXPECT_EQ(r.max_logits[0], 3.f);
  EXPECT_EQ(r.lse[0], 3.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out_abs[d], std::fabs(k[d])) << d;
}

TEST_P(ExactSparsePrefillReference, EqualLogitsAverage) {
  SparsePrefillHostData data(base());
  fill_q(data, 0, 1.f);
  data.set_kv_row(1, k_row(2.f, 8.f));
  data.set_kv_row(6, k_row(2.f, -8.f));
  set_list(data, {6, -1, 1, -1});
  const Result r = run_reference(data.params(), true);
  for (int d = 4; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], float(d % 7)) << d;  // (8 + d%7 - 8 + d%7) / 2
    ASSERT_EQ(r.out_abs[d], 0.5f * (8 + d % 7 + std::fabs(-8.f + d % 7))) << d;
  }
  // logits 0.125 * 8 = 1 each: lse = 1 + log 2.
  EXPECT_EQ(r.max_logits[0], 1.f);
  EXPECT_EQ(r.lse[0], static_cast<float>(1.0 + std::log(2.0)));
}

TEST_P(ExactSparsePrefillReference, TokenListedTwiceCountsTwice) {
  SparsePrefillHostData data(base());
  fill_q(data, 0, 1.f);
  data.set_kv_row(2, k_row(1.f, 4.f));
  data.set_kv_row(7, k_row(1.f, -8.f));
  set_list(data, {2, 7, 2, 2});
  const Result r = run_reference(data.params());
  for (int d = 4; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], (3 * (4.f + d % 7) + (-8.f + d % 7)) / 4) << d;
  }
  EXPECT_EQ(r.max_logits[0], 0.5f);
  EXPECT_EQ(r.lse[0], static_cast<float>(0.5 + std::log(4.0)));
}

// The largest logit is max_logits, in natural units (softmax_scale * q.k), whatever the order.
TEST_P(ExactSparsePrefillReference, MaxLogitsIsTheLargestScaledLogit) {
  SparsePrefillHostData data(base(2));
  fill_q(data, 0, 1.f);
  fill_q(data, 1, -2.f);
  data.set_kv_row(0, k_row(3.f, 1.f));   // logits 1.5 and -3
  data.set_kv_row(3, k_row(-1.f, 2.f));  // logits -0.5 and 1
  data.set_kv_row(4, k_row(5.f, 3.f));   // logits 2.5 and -5
  set_list(data, {3, 4, -1, 0});
  const Result r = run_reference(data.params());
  EXPECT_EQ(r.max_logits[0], 2.5f);
  EXPECT_EQ(r.max_logits[1], 1.f);
  const double lse0 = std::log(std::exp(1.5) + std::exp(-0.5) + std::exp(2.5));
  const double lse1 = std::log(std::exp(-3.0) + std::exp(1.0) + std::exp(-5.0));
  EXPECT_NEAR(r.lse[0], lse0, 1e-6);
  EXPECT_NEAR(r.lse[1], lse1, 1e-6);
}

TEST_P(ExactSparsePrefillReference, InvalidEntriesAndEntriesPastTheLengthAreSkipped) {
  SparsePrefillCase c = base(1, 6);
  c.topk_length = {3};
  SparsePrefillHostData data(c);
  fill_q(data, 0, 1.f);
  data.set_kv_row(0, k_row(1.f, 2.f));
  data.set_kv_row(4, k_row(1.f, 9.f));  // real data, but only listed past the length
  set_list(data, {-1, 0, 8, 4, 4, INT32_MIN});
  const Result r = run_reference(data.params());
  const std::vector<float> k = k_row(1.f, 2.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[d], k[d]) << d;
  EXPECT_EQ(r.lse[0], 0.5f);
}

TEST_P(ExactSparsePrefillReference, SinkEqualToTheLseHalvesOut) {
  SparsePrefillHostData data(base(3));
  fill_q(data, 0, 2.f);
  fill_q(data, 1, 1.f);
  fill_q(data, 2, 1.f);
  data.set_kv_row(3, k_row(3.f, -3.f));
  set_list(data, {3, -1, -1, -1});
  // head 0: logit 3 = lse, factor 1/2; head 1: factor 1; head 2: factor 0.
  data.attn_sink = {3.f, -kInf, kInf};
  const Result r = run_reference(data.params(), true);
  const std::vector<float> k = k_row(3.f, -3.f);
  for (int d = 0; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], k[d] / 2) << d;
    ASSERT_EQ(r.out_abs[d], std::fabs(k[d]) / 2) << d;
    ASSERT_EQ(r.out[kDv + d], k[d]) << d;
    ASSERT_EQ(r.out[2 * kDv + d], 0.f) << d;
    ASSERT_EQ(r.out_abs[2 * kDv + d], 0.f) << d;
  }
  EXPECT_EQ(r.lse[0], 3.f);
  EXPECT_EQ(r.lse[1], 1.5f);
  EXPECT_EQ(r.lse[2], 1.5f);  // the sink never changes lse
  EXPECT_EQ(r.max_logits[2], 1.5f);
}

TEST_P(ExactSparsePrefillReference, NoValidTokenGivesZeroAndInf) {
  SparsePrefillHostData data(base());
  fill_q(data, 0, 1.f);
  set_list(data, {-7, INT32_MAX, 8, -1});
  data.attn_sink = {1.f};
  const SparsePrefillParams p = data.params();
  expect_attends_to_nothing(run_reference(p, true), p, 0, 0);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, ExactSparsePrefillReference, ::testing::Values(576, 512),
                         [](const auto& info) { return "d" + std::to_string(info.param); });

// ---------------------------------------------------------------------------------------
// Inputs the reference refuses instead of computing something undefined.

void expect_rejects(const SparsePrefillParams& p, const std::string& argument) {
  std::vector<float> out(size_t(std::max(p.seqlen_q, 1)) * std::max(p.num_heads_q, 1) * kDv);
  std::vector<float> max_logits(out.size() / kDv), lse(out.size() / kDv);
  try {
    sparse_prefill_reference(p, out.data(), max_logits.data(), lse.data());
    ADD_FAILURE() << argument << ": accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
  }
}

TEST(SparsePrefillReferenceRejects, InputsItCannotCompute) {
  SparsePrefillHostData data(make_case(576, 1, 1, 8, 8, 50));
  const auto with = [&](auto change) {
    SparsePrefillParams p = data.params();
    change(p);
    return p;
  };
  expect_rejects(with([](auto& p) { p.head_dim_v = 600; }), "head_dim_v");
  expect_rejects(with([](auto& p) { p.head_dim_v = 0; }), "head_dim_v");
  expect_rejects(with([](auto& p) { p.head_dim_qk = 0; }), "head_dim_qk");
  expect_rejects(with([](auto& p) { p.seqlen_q = 0; }), "seqlen_q");
  expect_rejects(with([](auto& p) { p.num_heads_q = 0; }), "num_heads_q");
  expect_rejects(with([](auto& p) { p.num_kv_tokens = 0; }), "num_kv_tokens");
  expect_rejects(with([](auto& p) { p.topk = 0; }), "topk");
  expect_rejects(with([](auto& p) { p.q = nullptr; }), "q");
  expect_rejects(with([](auto& p) { p.kv = nullptr; }), "kv");
  expect_rejects(with([](auto& p) { p.indices = nullptr; }), "indices");
  const SparsePrefillParams p = data.params();
  std::vector<float> out(kDv);
  float max_logits[1], lse[1];
  EXPECT_THROW(sparse_prefill_reference(p, nullptr, max_logits, lse), Error);
  EXPECT_THROW(sparse_prefill_reference(p, out.data(), nullptr, lse), Error);
  EXPECT_THROW(sparse_prefill_reference(p, out.data(), max_logits, nullptr), Error);
}

}  // namespace
}  // namespace flashmla
