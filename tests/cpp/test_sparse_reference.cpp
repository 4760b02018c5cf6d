// The CPU reference of sparse decode against a plain brute-force formula (long double, every
// cache row dequantized straight from its bytes with fp8_convert.h), plus small exact cases
// with integer-valued inputs, and the behaviours sparse_decode.h defines: invalid entries,
// topk_length, the extra set, the attention sink, NaN in rows nothing selects.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "brute_force_check.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/sparse_decode.h"
#include "kernels/common/fp8_convert.h"
#include "reference/half_convert.h"
#include "reference/sparse_decode_reference.h"
#include "sparse_decode_case.h"

namespace flashmla {
namespace {

using reference::sparse_decode_reference;
using testing::SinkMode;
using testing::SparseDecodeCase;
using testing::SparseDecodeHostData;
using testing::SparseSourceConfig;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kDv = 512;

struct Result {
  std::vector<float> out;        // [b, s_q, h_q, d_v]
  std::vector<float> lse;        // [b, h_q, s_q]
  std::vector<float> out_abs;    // layout of out (only when asked for)
  std::vector<float> max_logit;  // layout of lse (only when asked for)
};

Result run_reference(const SparseDecodeParams& p, bool extras = false) {
  Result r;
  r.out.assign(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v, -777.f);
  r.lse.assign(size_t(p.batch) * p.num_heads_q * p.seqlen_q, -777.f);
  if (extras) {
    r.out_abs.assign(r.out.size(), -777.f);
    r.max_logit.assign(r.lse.size(), -777.f);
  }
  sparse_decode_reference(p, r.out.data(), r.lse.data(), extras ? r.out_abs.data() : nullptr,
                          extras ? r.max_logit.data() : nullptr);
  return r;
}

// ---------------------------------------------------------------------------------------
// The brute force: the header's definition, written as directly as possible.

// Row `index` of a source, dequantized from the layout of kv_cache_format.h:
// bfloat16(float(e4m3) * scale) for NoPE values, RoPE and kBFloat16 rows as stored.
std::vector<long double> brute_force_row(const SparseDecodeParams& p, const SparseTokenSource& s,
                                         int64_t index) {
  const auto* block =
      static_cast<const uint8_t*>(s.k_cache) + (index / s.page_block_size) * s.block_stride;
  const int64_t row = index % s.page_block_size;
  const auto bf16_at = [](const uint8_t* at) {
    uint16_t bits;
    std::memcpy(&bits, at, 2);
    return static_cast<long double>(reference::bf16_bits_to_float(bits));
  };
  const auto dequantize = [](uint8_t byte, float scale) {
    const float product = fp8::e4m3_to_float(byte) * scale;
    return static_cast<long double>(
        reference::bf16_bits_to_float(reference::float_to_bf16_bits(product)));
  };
  std::vector<long double> k(p.head_dim_qk);
  switch (p.kv_format) {
    case KVCacheFormat::kBFloat16: {
      const uint8_t* token = block + row * s.token_stride;
      for (int d = 0; d < p.head_dim_qk; ++d) k[d] = bf16_at(token + 2 * d);
      break;
    }
    case KVCacheFormat::kFp8V32: {
      const uint8_t* token = block + row * s.token_stride;
      for (int d = 0; d < 512; ++d) {
        float scale;
        std::memcpy(&scale, token + 512 + 4 * (d / 128), 4);
        k[d] = dequantize(token[d], scale);
      }
      for (int d = 512; d < 576; ++d) k[d] = bf16_at(token + 528 + 2 * (d - 512));
      break;
    }
    case KVCacheFormat::kFp8Model1: {
      const uint8_t* token = block + row * 576;
      const uint8_t* scales = block + int64_t(s.page_block_size) * 576 + row * 8;
      for (int d = 0; d < 448; ++d) k[d] = dequantize(token[d], fp8::e8m0_to_float(scales[d / 64]));
      for (int d = 448; d < 512; ++d) k[d] = bf16_at(token + 448 + 2 * (d - 448));
      break;
    }
  }
  return k;
}

struct BruteResult {
  std::vector<long double> out, lse, out_abs, max_logit;
};

BruteResult brute_force(const SparseDecodeParams& p) {
  const int b = p.batch, s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const auto* q = static_cast<const uint16_t*>(p.q);
  BruteResult r;
  r.out.assign(size_t(b) * s_q * h_q * d_v, 0.0L);
  r.out_abs.assign(r.out.size(), 0.0L);
  r.lse.assign(size_t(b) * h_q * s_q, 0.0L);
  r.max_logit.assign(r.lse.size(), -std::numeric_limits<long double>::infinity());
  for (int i = 0; i < b; ++i) {
    for (int s = 0; s < s_q; ++s) {
      // T: the valid entries of the main list, then of the extra list.
      std::vector<std::vector<long double>> keys;
      for (const SparseTokenSource* source : {&p.main, &p.extra}) {
        if (source->k_cache == nullptr) continue;
        int len = source->topk;
        if (source->topk_length != nullptr) {
          len = std::max(0, std::min(source->topk, source->topk_length[i]));
        }
        const int64_t slots = int64_t(source->num_blocks) * source->page_block_size;
        for (int j = 0; j < len; ++j) {
          const int64_t index =
              source
                  ->indices[i * source->indices_batch_stride + s * source->indices_seq_stride + j];
          if (0 <= index && index < slots) keys.push_back(brute_force_row(p, *source, index));
        }
      }
      for (int h = 0; h < h_q; ++h) {
        long double* lse = &r.lse[(size_t(i) * h_q + h) * s_q + s];
        long double* out = &r.out[((size_t(i) * s_q + s) * h_q + h) * d_v];
        long double* out_abs = &r.out_abs[((size_t(i) * s_q + s) * h_q + h) * d_v];
        if (keys.empty()) {
          *lse = std::numeric_limits<long double>::infinity();
          continue;
        }
        const uint16_t* q_row = q + i * p.q_batch_stride + s * p.q_seq_stride + h * p.q_head_stride;
        std::vector<long double> logits;
        for (const auto& k : keys) {
          long double dot = 0;
          for (int d = 0; d < p.head_dim_qk; ++d) {
            dot += static_cast<long double>(reference::bf16_bits_to_float(q_row[d])) * k[d];
          }
          logits.push_back(static_cast<long double>(p.softmax_scale) * dot);
        }
        long double max_logit = logits[0];
        for (long double l : logits) max_logit = std::max(max_logit, l);
        long double sum = 0;
        for (long double l : logits) sum += std::exp(l - max_logit);
        *lse = max_logit + std::log(sum);
        r.max_logit[(size_t(i) * h_q + h) * s_q + s] = max_logit;
        long double sink_factor = 1;
        if (p.attn_sink != nullptr) {
          const long double e_lse = std::exp(*lse);
          sink_factor = e_lse / (e_lse + std::exp(static_cast<long double>(p.attn_sink[h])));
        }
        for (size_t t = 0; t < keys.size(); ++t) {
          const long double w = sink_factor * std::exp(logits[t] - max_logit) / sum;
          for (int d = 0; d < d_v; ++d) {
            out[d] += w * keys[t][d];
            out_abs[d] += w * std::fabs(keys[t][d]);
          }
        }
      }
    }
  }
  return r;
}

void expect_matches_brute_force(const SparseDecodeParams& p) {
  const Result got = run_reference(p, /*extras=*/true);
  const BruteResult want = brute_force(p);
  const Result plain = run_reference(p);  // asking for the extras changes nothing
  EXPECT_EQ(got.out, plain.out);
  EXPECT_EQ(got.lse, plain.lse);
  int failures = 0;
  testing::expect_close_to_brute_force("out", got.out, want.out, failures);
  testing::expect_close_to_brute_force("lse", got.lse, want.lse, failures);
  testing::expect_close_to_brute_force("out_abs", got.out_abs, want.out_abs, failures);
  testing::expect_close_to_brute_force("max_logit", got.max_logit, want.max_logit, failures);
}

// ---------------------------------------------------------------------------------------
// Random cases against the brute force.

struct RandomCase {
  const char* name;
  SparseDecodeCase config;
};

void PrintTo(const RandomCase& c, std::ostream* os) {
  *os << c.name;
}

SparseSourceConfig source(int topk, int page) {
  SparseSourceConfig s;
  s.topk = topk;
  s.page_block_size = page;
  return s;
}

SparseDecodeCase make_case(KVCacheFormat format, int d_qk, int b, int s_q, int h_q,
                           SparseSourceConfig main, uint32_t seed) {
  SparseDecodeCase c;
  c.format = format;
  c.head_dim_qk = d_qk;
  c.batch = b;
  c.seqlen_q = s_q;
  c.num_heads_q = h_q;
  c.main = std::move(main);
  c.seed = seed;
  return c;
}

std::vector<RandomCase> random_cases() {
  constexpr auto v32 = KVCacheFormat::kFp8V32;
  constexpr auto model1 = KVCacheFormat::kFp8Model1;
  constexpr auto bf16 = KVCacheFormat::kBFloat16;
  std::vector<RandomCase> cases = {
      {"v32_single", make_case(v32, 576, 1, 1, 1, source(37, 64), 1)},
      {"model1_single", make_case(model1, 512, 1, 1, 1, source(50, 64), 2)},
      {"bf16_576_single", make_case(bf16, 576, 1, 1, 1, source(20, 64), 3)},
      {"bf16_512_single", make_case(bf16, 512, 1, 1, 1, source(20, 64), 4)},
      {"v32_page1", make_case(v32, 576, 3, 2, 4, source(17, 1), 5)},
      {"model1_page2", make_case(model1, 512, 2, 3, 5, source(40, 2), 6)},
      {"bf16_page53", make_case(bf16, 576, 4, 1, 3, source(100, 53), 7)},
      {"v32_page61_sq4", make_case(v32, 576, 2, 4, 2, source(64, 61), 8)},
      {"model1_page69", make_case(model1, 512, 3, 2, 8, source(70, 69), 9)},
  };

  SparseDecodeCase with_length = make_case(v32, 576, 4, 2, 3, source(30, 7), 10);
  with_length.main.topk_length = {0, 30, 11, 1000};
  cases.push_back({"v32_topk_length", with_length});
  SparseDecodeCase negative_length = make_case(model1, 512, 3, 1, 2, source(25, 64), 11);
  negative_length.main.topk_length = {-5, 3, 25};
  cases.push_back({"model1_negative_and_short_lengths", negative_length});

  SparseDecodeCase extra = make_case(model1, 512, 3, 2, 4, source(33, 64), 12);
  extra.has_extra = true;
  extra.extra = source(20, 5);
  extra.extra.topk_length = {20, 0, 7};
  cases.push_back({"model1_extra", extra});
  SparseDecodeCase extra_v32 = make_case(v32, 576, 2, 1, 3, source(16, 2), 13);
  extra_v32.has_extra = true;
  extra_v32.extra = source(40, 64);
  extra_v32.main.topk_length = {3, 0};
  cases.push_back({"v32_extra_both_lengths", extra_v32});
  SparseDecodeCase extra_bf16 = make_case(bf16, 512, 2, 2, 2, source(10, 3), 14);
  extra_bf16.has_extra = true;
  extra_bf16.extra = source(12, 1);
  cases.push_back({"bf16_512_extra", extra_bf16});

  SparseDecodeCase sink = make_case(v32, 576, 2, 2, 16, source(40, 64), 15);
  sink.sink = SinkMode::kMixed;
  cases.push_back({"v32_sink_mixed", sink});
  SparseDecodeCase sink_extra = make_case(model1, 512, 2, 1, 12, source(20, 64), 16);
  sink_extra.sink = SinkMode::kMixed;
  sink_extra.has_extra = true;
  sink_extra.extra = source(9, 2);
  cases.push_back({"model1_sink_extra", sink_extra});

  SparseDecodeCase invalid = make_case(bf16, 576, 3, 3, 2, source(24, 4), 17);
  invalid.main.invalid_fraction = 0.5;
  invalid.main.all_invalid_fraction = 0.4;
  cases.push_back({"bf16_many_invalid", invalid});

  // Strides with padding (odd on purpose where the layout allows: the reference must follow
  // them exactly).
  SparseDecodeCase padded = make_case(v32, 576, 2, 2, 3, source(21, 5), 18);
  padded.q_head_pad = 3;
  padded.q_seq_pad = 5;
  padded.q_batch_pad = 7;
  padded.main.token_pad_bytes = 20;
  padded.main.block_gap_bytes = 13;
  padded.main.indices_seq_pad = 3;
  padded.main.indices_batch_pad = 5;
  padded.main.topk_length = {15, 21};
  cases.push_back({"v32_padded_strides", padded});
  SparseDecodeCase padded_model1 = make_case(model1, 512, 2, 1, 2, source(18, 3), 19);
  padded_model1.main.block_gap_bytes = 1000;
  padded_model1.main.indices_seq_pad = 1;
  padded_model1.has_extra = true;
  padded_model1.extra = source(6, 7);
  padded_model1.extra.token_pad_bytes = 0;
  padded_model1.extra.indices_batch_pad = 9;
  cases.push_back({"model1_padded_strides", padded_model1});
  SparseDecodeCase padded_bf16 = make_case(bf16, 512, 2, 2, 2, source(11, 6), 20);
  padded_bf16.main.token_pad_bytes = 6;
  padded_bf16.main.block_gap_bytes = 0;
  padded_bf16.q_head_pad = 8;
  cases.push_back({"bf16_padded_strides", padded_bf16});

  // Big enough for several threads: many query tokens, and one token with many heads (the
  // heads are then split over items).
  cases.push_back({"v32_threads_many_tokens", make_case(v32, 576, 6, 4, 16, source(200, 64), 21)});
  cases.push_back(
      {"model1_threads_one_token", make_case(model1, 512, 1, 1, 72, source(600, 64), 22)});

  SparseDecodeCase sharp = make_case(bf16, 576, 2, 1, 4, source(60, 64), 23);
  sharp.softmax_scale = 0.4f;  // logits of std ~10: a very peaked softmax
  cases.push_back({"bf16_sharp_scale", sharp});
  return cases;
}

class SparseReferenceVsBruteForce : public ::testing::TestWithParam<RandomCase> {};

TEST_P(SparseReferenceVsBruteForce, Matches) {
  SparseDecodeHostData data(GetParam().config);
  expect_matches_brute_force(data.params());
}

INSTANTIATE_TEST_SUITE_P(Cases, SparseReferenceVsBruteForce, ::testing::ValuesIn(random_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Behaviours of the definition, on random data.

// Every output of a query that attends to nothing: out = 0, lse = +inf (and the extras 0, -inf).
void expect_attends_to_nothing(const Result& r, const SparseDecodeParams& p, int i, int s, int h) {
  const size_t row = (size_t(i) * p.seqlen_q + s) * p.num_heads_q + h;
  const size_t e = (size_t(i) * p.num_heads_q + h) * p.seqlen_q + s;
  EXPECT_EQ(r.lse[e], kInf) << i << " " << s << " " << h;
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[row * kDv + d], 0.f) << i << " " << s << " " << h;
  if (!r.out_abs.empty()) {
    EXPECT_EQ(r.max_logit[e], -kInf);
    for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out_abs[row * kDv + d], 0.f);
  }
}

TEST(SparseReferenceBehaviour, AllInvalidRowsGiveZeroAndInf) {
  for (KVCacheFormat format :
       {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1, KVCacheFormat::kBFloat16}) {
    SCOPED_TRACE(to_string(format));
    SparseDecodeCase c = make_case(format, 0, 3, 2, 4, source(40, 16), 30);
    c.main.all_invalid_fraction = 1.0;
    c.sink = SinkMode::kMixed;  // a sink changes nothing where nothing is attended
    SparseDecodeHostData data(c);
    const SparseDecodeParams p = data.params();
    const Result r = run_reference(p, /*extras=*/true);
    for (int i = 0; i < 3; ++i) {
      for (int s = 0; s < 2; ++s) {
        for (int h = 0; h < 4; ++h) expect_attends_to_nothing(r, p, i, s, h);
      }
    }
  }
}

TEST(SparseReferenceBehaviour, TopkLengthZeroAttendsToNothing) {
  SparseDecodeCase c = make_case(KVCacheFormat::kFp8V32, 576, 4, 3, 2, source(50, 64), 31);
  c.main.topk_length = {0, 50, 0, 7};
  c.main.invalid_fraction = 0.0;
  SparseDecodeHostData data(c);
  const SparseDecodeParams p = data.params();
  const Result r = run_reference(p, /*extras=*/true);
  for (int i = 0; i < 4; ++i) {
    for (int s = 0; s < 3; ++s) {
      for (int h = 0; h < 2; ++h) {
        if (c.main.topk_length[i] == 0) {
          expect_attends_to_nothing(r, p, i, s, h);
        } else {
          EXPECT_TRUE(std::isfinite(r.lse[(size_t(i) * 2 + h) * 3 + s])) << i << " " << s;
        }
      }
    }
  }
  expect_matches_brute_force(p);
}

TEST(SparseReferenceBehaviour, SinkPlusInfZeroesOutAndMinusInfChangesNothing) {
  for (KVCacheFormat format : {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1}) {
    SCOPED_TRACE(to_string(format));
    SparseDecodeHostData data(make_case(format, 0, 2, 2, 8, source(64, 64), 32));
    SparseDecodeParams p = data.params();
    const Result plain = run_reference(p);

    const std::vector<float> plus(8, kInf), minus(8, -kInf);
    p.attn_sink = plus.data();
    const Result zeroed = run_reference(p);
    EXPECT_EQ(zeroed.lse, plain.lse);  // lse ignores the sink
    for (float v : zeroed.out) ASSERT_EQ(v, 0.f);

    p.attn_sink = minus.data();
    const Result unchanged = run_reference(p);
    EXPECT_EQ(unchanged.lse, plain.lse);
    EXPECT_EQ(unchanged.out, plain.out);
  }
}

TEST(SparseReferenceBehaviour, SinkScalesOutByTheSinkFactor) {
  SparseDecodeHostData data(make_case(KVCacheFormat::kBFloat16, 576, 1, 1, 2, source(30, 64), 33));
  SparseDecodeParams p = data.params();
  const Result plain = run_reference(p);
  // sink_h = lse_h + log(3): factor exp(lse) / (exp(lse) + 3 exp(lse)) = 1/4.
  const std::vector<float> sink = {plain.lse[0] + std::log(3.f), plain.lse[1] + std::log(3.f)};
  p.attn_sink = sink.data();
  const Result scaled = run_reference(p);
  EXPECT_EQ(scaled.lse, plain.lse);
  for (size_t e = 0; e < plain.out.size(); ++e) {
    ASSERT_NEAR(scaled.out[e], plain.out[e] / 4, 1e-6 * std::fabs(plain.out[e]) + 1e-12) << e;
  }
}

// The same problem as one index list, and split into a main and an extra list over the same
// cache (the extra list is the tail of each row): the same tokens in the same order, so the
// same bits.
TEST(SparseReferenceBehaviour, SplitIntoMainAndExtraGivesTheSameResult) {
  for (KVCacheFormat format :
       {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1, KVCacheFormat::kBFloat16}) {
    SCOPED_TRACE(to_string(format));
    SparseDecodeCase c = make_case(format, 0, 3, 2, 6, source(90, 16), 34);
    c.main.invalid_fraction = 0.2;
    c.sink = SinkMode::kMixed;
    SparseDecodeHostData data(c);
    const SparseDecodeParams whole = data.params();
    const Result expected = run_reference(whole, /*extras=*/true);

    for (int head_len : {1, 37, 89}) {
      SparseDecodeParams split = whole;
      split.main.topk = head_len;
      split.extra = whole.main;
      split.extra.indices = whole.main.indices + head_len;
      split.extra.topk = whole.main.topk - head_len;
      const Result got = run_reference(split, /*extras=*/true);
      EXPECT_EQ(got.out, expected.out) << head_len;
      EXPECT_EQ(got.lse, expected.lse) << head_len;
      EXPECT_EQ(got.out_abs, expected.out_abs) << head_len;
      EXPECT_EQ(got.max_logit, expected.max_logit) << head_len;
    }
  }
}

// A split with per-sequence lengths: main length m_i and extra length l_i - m_i over the
// same row give the tokens of a main list of length l_i.
TEST(SparseReferenceBehaviour, SplitWithLengthsGivesTheSameResult) {
  SparseDecodeCase c = make_case(KVCacheFormat::kFp8Model1, 512, 4, 1, 3, source(40, 64), 35);
  c.main.topk_length = {40, 25, 3, 0};
  SparseDecodeHostData data(c);
  const SparseDecodeParams whole = data.params();
  const Result expected = run_reference(whole);

  constexpr int kHead = 20;  // the main list keeps the first 20 entries of every row
  const std::vector<int32_t> main_length = {20, 20, 3, 0};
  const std::vector<int32_t> extra_length = {20, 5, 0, 0};
  SparseDecodeParams split = whole;
  split.main.topk = kHead;
  split.main.topk_length = main_length.data();
  split.extra = whole.main;
  split.extra.indices = whole.main.indices + kHead;
  split.extra.topk = whole.main.topk - kHead;
  split.extra.topk_length = extra_length.data();
  const Result got = run_reference(split);
  EXPECT_EQ(got.out, expected.out);
  EXPECT_EQ(got.lse, expected.lse);
}

// The case generator puts NaN in every row nothing selects, and garbage past topk_length that
// points at such rows; none of it may reach the outputs.
TEST(SparseReferenceBehaviour, NaNInUnselectedRowsDoesNotReachOutputs) {
  for (KVCacheFormat format :
       {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1, KVCacheFormat::kBFloat16}) {
    SCOPED_TRACE(to_string(format));
    SparseDecodeCase c = make_case(format, 0, 4, 2, 8, source(48, 8), 36);
    c.main.topk_length = {48, 10, 1, 30};
    c.main.invalid_fraction = 0.3;
    c.has_extra = true;
    c.extra = source(16, 3);
    c.extra.topk_length = {2, 16, 0, 9};
    c.sink = SinkMode::kMixed;
    SparseDecodeHostData data(c);
    const SparseDecodeParams p = data.params();

    // The data really is poisoned: unselected rows hold NaN, and some garbage entry past a
    // length points at one.
    ASSERT_GT(data.main.unused_pages.size(), 0u);
    int garbage_at_nan_rows = 0;
    for (int i = 0; i < 4; ++i) {
      for (int s = 0; s < 2; ++s) {
        const int32_t* row = data.main.index_row(i, s);
        for (int j = std::max(0, c.main.topk_length[i]); j < 48; ++j) {
          if (row[j] >= 0 && row[j] < data.main.num_slots() && !data.main.selected[row[j]]) {
            ++garbage_at_nan_rows;
          }
        }
      }
    }
    EXPECT_GT(garbage_at_nan_rows, 10);
    const auto row_has_nan = [&](int64_t slot) {
      return !std::isfinite(brute_force_row(p, p.main, slot)[0]);
    };
    for (int64_t slot = 0; slot < data.main.num_slots(); ++slot) {
      ASSERT_EQ(row_has_nan(slot), !data.main.selected[slot]) << "slot " << slot;
    }

    const Result r = run_reference(p, /*extras=*/true);
    for (float v : r.out) ASSERT_FALSE(std::isnan(v));
    for (float v : r.lse) ASSERT_FALSE(std::isnan(v));
    for (float v : r.out_abs) ASSERT_TRUE(std::isfinite(v));
    expect_matches_brute_force(p);
  }
}

// ---------------------------------------------------------------------------------------
// Exact cases: small integer values (exact in e4m3 after the power-of-two scaling, since
// integers up to 16 have at most 4 significant bits) and a power-of-two softmax scale make
// every logit exact; equal logits make every weight a power of two.

struct FormatCase {
  const char* name;
  KVCacheFormat format;
  int head_dim_qk;
};

void PrintTo(const FormatCase& c, std::ostream* os) {
  *os << c.name;
}

class ExactSparseReference : public ::testing::TestWithParam<FormatCase> {
 protected:
  // One sequence, one query token, h_q heads; lists of 4 entries over 8 tokens in two pages.
  SparseDecodeCase base(int h_q = 1, bool extra = false) const {
    SparseDecodeCase c;
    c.format = GetParam().format;
    c.head_dim_qk = GetParam().head_dim_qk;
    c.num_heads_q = h_q;
    c.main = source(4, 4);
    c.main.cache_tokens_min = c.main.cache_tokens_max = 8;
    c.main.invalid_fraction = 0.0;
    c.has_extra = extra;
    c.extra = c.main;
    c.softmax_scale = 0.125f;
    c.seed = 40;
    return c;
  }
  int d_qk() const { return GetParam().head_dim_qk; }
  // q: `value` in columns 0..3, 0 elsewhere.
  void fill_q(SparseDecodeHostData& data, int h, float value) const {
    uint16_t* row = data.q_row(0, 0, h);
    for (int d = 0; d < d_qk(); ++d) row[d] = reference::float_to_bf16_bits(d < 4 ? value : 0.f);
  }
  // K row: columns 0..3 = key (the dot with q), the others v_base + d % 7 (integers in
  // [-8, 15] for v_base in [-8, 9]).
  std::vector<float> k_row(float key, float v_base) const {
    std::vector<float> row(d_qk());
    for (int d = 0; d < d_qk(); ++d) row[d] = d < 4 ? key : v_base + float(d % 7);
    return row;
  }
  static void set_list(testing::SparseSourceHostData& source, std::vector<int32_t> entries) {
    int32_t* row = source.index_row(0, 0);
    for (size_t j = 0; j < entries.size(); ++j) row[j] = entries[j];
  }
};

TEST_P(ExactSparseReference, OneTokenCopiesItsValueRow) {
  SparseDecodeHostData data(base());
  fill_q(data, 0, 2.f);
  const int64_t slot = data.main.slot_of(0, 5);
  data.main.set_token(slot, k_row(3.f, 9.f));
  set_list(data.main, {-1, int32_t(slot), -1, -1});
  const Result r = run_reference(data.params(), true);
  const std::vector<float> k = k_row(3.f, 9.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[d], k[d]) << d;
  // logit = 0.125 * 4 * 2 * 3 = 3 exactly; lse of one logit is the logit.
  EXPECT_EQ(r.lse[0], 3.f);
  EXPECT_EQ(r.max_logit[0], 3.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out_abs[d], std::fabs(k[d])) << d;
}

TEST_P(ExactSparseReference, EqualLogitsOverMainAndExtraAverage) {
  SparseDecodeHostData data(base(1, /*extra=*/true));
  fill_q(data, 0, 1.f);
  const int64_t a = data.main.slot_of(0, 1), b = data.extra.slot_of(0, 6);
  data.main.set_token(a, k_row(2.f, 8.f));
  data.extra.set_token(b, k_row(2.f, -8.f));
  set_list(data.main, {int32_t(a), -1, -1, -1});
  set_list(data.extra, {-1, -1, int32_t(b), -1});
  const Result r = run_reference(data.params(), true);
  for (int d = 4; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], float(d % 7)) << d;  // (8 + d%7 - 8 + d%7) / 2
    ASSERT_EQ(r.out_abs[d], 0.5f * (8 + d % 7 + std::fabs(-8.f + d % 7))) << d;
  }
  // logits 0.125 * 8 = 1 each: lse = 1 + log 2.
  EXPECT_EQ(r.lse[0], static_cast<float>(1.0 + std::log(2.0)));
}

TEST_P(ExactSparseReference, TokenListedTwiceCountsTwice) {
  SparseDecodeHostData data(base());
  fill_q(data, 0, 1.f);
  const int64_t a = data.main.slot_of(0, 2), b = data.main.slot_of(0, 7);
  data.main.set_token(a, k_row(1.f, 4.f));
  data.main.set_token(b, k_row(1.f, -8.f));
  set_list(data.main, {int32_t(a), int32_t(b), int32_t(a), int32_t(a)});
  const Result r = run_reference(data.params());
  for (int d = 4; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], (3 * (4.f + d % 7) + (-8.f + d % 7)) / 4) << d;
  }
  EXPECT_EQ(r.lse[0], static_cast<float>(0.5 + std::log(4.0)));
}

TEST_P(ExactSparseReference, InvalidEntriesAndEntriesPastTheLengthAreSkipped) {
  SparseDecodeCase c = base();
  c.main.topk = 6;
  c.main.topk_length = {3};
  SparseDecodeHostData data(c);
  fill_q(data, 0, 1.f);
  const int64_t a = data.main.slot_of(0, 0), b = data.main.slot_of(0, 4);
  data.main.set_token(a, k_row(1.f, 2.f));
  data.main.set_token(b, k_row(1.f, 9.f));  // real data, but only listed past the length
  const int32_t out_of_range = static_cast<int32_t>(data.main.num_slots());
  set_list(data.main, {-1, int32_t(a), out_of_range, int32_t(b), int32_t(b), INT32_MIN});
  const Result r = run_reference(data.params());
  const std::vector<float> k = k_row(1.f, 2.f);
  for (int d = 0; d < kDv; ++d) ASSERT_EQ(r.out[d], k[d]) << d;
  EXPECT_EQ(r.lse[0], 0.5f);
}

TEST_P(ExactSparseReference, SinkEqualToTheLseHalvesOut) {
  SparseDecodeHostData data(base(2));
  fill_q(data, 0, 2.f);
  fill_q(data, 1, 1.f);
  const int64_t slot = data.main.slot_of(0, 3);
  data.main.set_token(slot, k_row(3.f, -3.f));
  set_list(data.main, {int32_t(slot), -1, -1, -1});
  data.attn_sink = {3.f, -kInf};  // head 0: logit 3 = lse, factor 1/2; head 1: factor 1
  const Result r = run_reference(data.params(), true);
  const std::vector<float> k = k_row(3.f, -3.f);
  for (int d = 0; d < kDv; ++d) {
    ASSERT_EQ(r.out[d], k[d] / 2) << d;
    ASSERT_EQ(r.out_abs[d], std::fabs(k[d]) / 2) << d;
    ASSERT_EQ(r.out[kDv + d], k[d]) << d;
  }
  EXPECT_EQ(r.lse[0], 3.f);
  EXPECT_EQ(r.lse[1], 1.5f);
}

TEST_P(ExactSparseReference, NoValidTokenGivesZeroAndInf) {
  SparseDecodeHostData data(base(1, /*extra=*/true));
  fill_q(data, 0, 1.f);
  set_list(data.main, {-1, -1, -1, -1});
  set_list(data.extra, {-7, INT32_MAX, static_cast<int32_t>(data.extra.num_slots()), -1});
  data.attn_sink = {1.f};
  const SparseDecodeParams p = data.params();
  expect_attends_to_nothing(run_reference(p, true), p, 0, 0, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, ExactSparseReference,
                         ::testing::Values(FormatCase{"v32", KVCacheFormat::kFp8V32, 576},
                                           FormatCase{"model1", KVCacheFormat::kFp8Model1, 512},
                                           FormatCase{"bf16_576", KVCacheFormat::kBFloat16, 576},
                                           FormatCase{"bf16_512", KVCacheFormat::kBFloat16, 512}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Inputs the reference refuses instead of computing something undefined.

void expect_rejects(const SparseDecodeParams& p, const std::string& argument) {
  std::vector<float> out(size_t(std::max(p.batch, 1)) * std::max(p.seqlen_q, 1) *
                         std::max(p.num_heads_q, 1) * kDv);
  std::vector<float> lse(out.size() / kDv);
  try {
    sparse_decode_reference(p, out.data(), lse.data());
    ADD_FAILURE() << argument << ": accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
  }
}

TEST(SparseReferenceRejects, InputsItCannotCompute) {
  SparseDecodeCase c = make_case(KVCacheFormat::kFp8V32, 576, 1, 1, 1, source(8, 4), 50);
  c.has_extra = true;
  c.extra = source(8, 4);
  SparseDecodeHostData data(c);
  const auto with = [&](auto change) {
    SparseDecodeParams p = data.params();
    change(p);
    return p;
  };
  expect_rejects(with([](auto& p) { p.head_dim_qk = 512; }), "head_dim_qk");
  expect_rejects(with([](auto& p) { p.kv_format = KVCacheFormat::kFp8Model1; }), "head_dim_qk");
  expect_rejects(with([](auto& p) { p.head_dim_v = 600; }), "head_dim_v");
  expect_rejects(with([](auto& p) { p.batch = 0; }), "batch");
  expect_rejects(with([](auto& p) { p.seqlen_q = 0; }), "seqlen_q");
  expect_rejects(with([](auto& p) { p.num_heads_q = 0; }), "num_heads_q");
  expect_rejects(with([](auto& p) { p.q = nullptr; }), "q");
  expect_rejects(with([](auto& p) { p.main.k_cache = nullptr; }), "main.k_cache");
  expect_rejects(with([](auto& p) { p.main.indices = nullptr; }), "main.indices");
  expect_rejects(with([](auto& p) { p.main.topk = 0; }), "main.topk");
  expect_rejects(with([](auto& p) { p.main.page_block_size = 0; }), "main.page_block_size");
  expect_rejects(with([](auto& p) { p.extra.indices = nullptr; }), "extra.indices");
  expect_rejects(with([](auto& p) { p.extra.topk = 0; }), "extra.topk");
  SparseDecodeParams p = data.params();
  float lse[1];
  EXPECT_THROW(sparse_decode_reference(p, nullptr, lse), Error);
}

}  // namespace
}  // namespace flashmla
