// The C++ sparse-decode API on the GPU against the CPU reference, for every cache format. Every
// case uses fresh random data: NaN in every cache row no valid index selects and 0xff in the
// gaps between blocks, index lists mixing valid tokens with -1 and out-of-range entries and
// garbage (pointing at NaN rows) past topk_length, and poisoned (NaN) outputs and workspace, so
// that unwritten or wrongly read elements show up as NaN. Needs a compute capability 9.0 GPU;
// built by CMake, run by hand/scripts.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../sparse_decode_case.h"
#include "decode_gpu_common.h"
#include "device_buffer.h"
#include "flashmla/flashmla.h"
#include "reference/half_convert.h"
#include "reference/kv_cache_reference.h"
#include "reference/sparse_decode_reference.h"
#include "sparse_reference_checks.h"

namespace flashmla {
namespace {

using testing::check_cuda;
using testing::DeviceBuffer;
using testing::FailureLog;
using testing::SinkMode;
using testing::SparseDecodeCase;
using testing::SparseDecodeHostData;
using testing::SparseSourceConfig;
using testing::SparseSourceHostData;
using DeviceOutputs = testing::DeviceOutputs<SparseDecodeParams>;
using Reference = testing::DecodeReference;

// Device copies of one token source; `source` points at them.
class DeviceSource {
 public:
  explicit DeviceSource(const SparseSourceHostData& host)
      : cache_(host.cache), indices_(host.indices) {
    source = host.source();
    source.k_cache = cache_.get();
    source.indices = indices_.get();
    if (!host.topk_length.empty()) {
      topk_length_ = std::make_unique<DeviceBuffer<int32_t>>(host.topk_length);
      source.topk_length = topk_length_->get();
    }
  }
  SparseTokenSource source;

 private:
  DeviceBuffer<uint8_t> cache_;
  DeviceBuffer<int32_t> indices_;
  std::unique_ptr<DeviceBuffer<int32_t>> topk_length_;
};

// The inputs of one case on the device, and params pointing at them.
class DeviceInputs {
 public:
  explicit DeviceInputs(const SparseDecodeHostData& host) : q_(host.q), main_(host.main) {
    params_ = host.params();  // strides and sizes; pointers replaced below
    params_.q = q_.get();
    params_.main = main_.source;
    if (host.config().has_extra) {
      extra_ = std::make_unique<DeviceSource>(host.extra);
      params_.extra = extra_->source;
    }
    if (!host.attn_sink.empty()) {
      attn_sink_ = std::make_unique<DeviceBuffer<float>>(host.attn_sink);
      params_.attn_sink = attn_sink_->get();
    }
  }
  const SparseDecodeParams& params() const { return params_; }

 private:
  DeviceBuffer<uint16_t> q_;
  DeviceSource main_;
  std::unique_ptr<DeviceSource> extra_;
  std::unique_ptr<DeviceBuffer<float>> attn_sink_;
  SparseDecodeParams params_;
};

// The lengths a plan is made for (by default those of the inputs).
struct PlanLengths {
  int topk = 0;
  std::vector<int32_t> topk_length;  // empty: none
  int extra_topk = 0;                // 0: no extra list
  std::vector<int32_t> extra_topk_length;
};

PlanLengths lengths_of(const SparseDecodeHostData& host) {
  PlanLengths l;
  l.topk = host.main.topk();
  l.topk_length = host.main.topk_length;
  if (host.config().has_extra) {
    l.extra_topk = host.extra.topk();
    l.extra_topk_length = host.extra.topk_length;
  }
  return l;
}

// The split-KV plan of one batch, computed on the GPU: reusable by every layer.
struct DevicePlan {
  DevicePlan(const SparseDecodeParams& p, const PlanLengths& lengths)
      : shape{p.batch, p.seqlen_q, p.num_heads_q, 0},
        num_parts(sparse_decode_num_parts(shape)),
        metadata(size_t(num_parts) * kDecodeMetadataInts),
        num_splits(size_t(p.batch) + 1) {
    std::unique_ptr<DeviceBuffer<int32_t>> topk_length, extra_topk_length;
    if (!lengths.topk_length.empty()) {
      topk_length = std::make_unique<DeviceBuffer<int32_t>>(lengths.topk_length);
    }
    if (!lengths.extra_topk_length.empty()) {
      extra_topk_length = std::make_unique<DeviceBuffer<int32_t>>(lengths.extra_topk_length);
    }
    metadata.fill_bytes(0xff);
    num_splits.fill_bytes(0xff);
    plan_sparse_decode(shape, lengths.topk, topk_length ? topk_length->get() : nullptr,
                       lengths.extra_topk, extra_topk_length ? extra_topk_length->get() : nullptr,
                       metadata.get(), num_splits.get(), nullptr);
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after plan_sparse_decode");
  }
  SparseDecodeScheduleShape shape;
  int num_parts;
  DeviceBuffer<int32_t> metadata;
  DeviceBuffer<int32_t> num_splits;
};

// Runs sparse_decode with a given plan, into poisoned outputs.
void run_sparse_decode(const DeviceInputs& inputs, const DevicePlan& plan, DeviceOutputs& outputs) {
  SparseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);
  p.workspace_bytes = sparse_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  workspace.fill_bytes(0xff);  // the kernels must not depend on its contents
  p.workspace = workspace.get();
  outputs.poison();
  sparse_decode(p, nullptr);
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after sparse_decode");
  check_cuda(cudaGetLastError(), "cudaGetLastError after sparse_decode");
}

// ---------------------------------------------------------------------------------------
// Comparison against the reference.

double max_selected_row_norm(const SparseDecodeHostData& host, const SparseSourceHostData& source) {
  const SparseTokenSource s = source.source();
  const int d_qk = host.head_dim_qk();
  std::vector<uint16_t> row(d_qk);
  double norm_max = 0.0;
  for (int64_t slot = 0; slot < source.num_slots(); ++slot) {
    if (!source.selected[slot]) continue;
    reference::dequantize_token_host(
        host.config().format, d_qk,
        static_cast<const uint8_t*>(s.k_cache) + (slot / s.page_block_size) * s.block_stride,
        s.page_block_size, static_cast<int>(slot % s.page_block_size), s.token_stride, row.data());
    double sum = 0.0;
    for (uint16_t bits : row) sum += std::pow(double(reference::bf16_bits_to_float(bits)), 2);
    norm_max = std::max(norm_max, std::sqrt(sum));
  }
  return norm_max;
}

double logit_magnitude(const SparseDecodeHostData& host) {
  const SparseDecodeParams p = host.params();
  const auto* q = static_cast<const uint16_t*>(p.q);
  double q_max = 0.0;
  for (int i = 0; i < p.batch; ++i) {
    for (int s = 0; s < p.seqlen_q; ++s) {
      for (int h = 0; h < p.num_heads_q; ++h) {
        const uint16_t* row = q + i * p.q_batch_stride + s * p.q_seq_stride + h * p.q_head_stride;
        double sum = 0.0;
        for (int d = 0; d < p.head_dim_qk; ++d) {
          sum += std::pow(double(reference::bf16_bits_to_float(row[d])), 2);
        }
        q_max = std::max(q_max, std::sqrt(sum));
      }
    }
  }
  double k_max = max_selected_row_norm(host, host.main);
  if (host.config().has_extra) k_max = std::max(k_max, max_selected_row_norm(host, host.extra));
  return double(p.softmax_scale) * q_max * k_max;
}

Reference compute_reference(const SparseDecodeHostData& host) {
  const SparseDecodeParams p = host.params();
  Reference r;
  r.out.resize(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v);
  r.lse.resize(size_t(p.batch) * p.num_heads_q * p.seqlen_q);
  r.out_abs.resize(r.out.size());
  r.max_logit.resize(r.lse.size());
  reference::sparse_decode_reference(p, r.out.data(), r.lse.data(), r.out_abs.data(),
                                     r.max_logit.data());
  r.logit_magnitude = logit_magnitude(host);
  return r;
}

// Tolerances (FlashMLA's sparse-decode test): out passes where |err| < 1e-3 or
// |err| / |ref| < 2.01/128 (ref: the reference rounded to bf16), with 1 - cos < 5e-6 over the
// tensor; lse where |err| < 1e-6 or |err| / |ref| < 8.01/65536. An element that misses these
// may pass by the rounding bounds (sparse_reference_checks.h).
constexpr testing::FixedTolerance kOutTolerance{1e-3f, 2.01f / 128};
constexpr testing::FixedTolerance kLseTolerance{1e-6f, 8.01f / 65536};

// `tag` distinguishes the reported properties of several comparisons in one test.
void expect_matches_reference(const SparseDecodeHostData& host, const Reference& ref,
                              const DeviceOutputs& outputs, const std::string& tag = "") {
  const SparseDecodeParams p = host.params();
  const int b = p.batch, s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const std::vector<uint16_t> out_bits = outputs.out.download();
  const std::vector<float> lse = outputs.lse.download();
  const uint16_t poison = 0xffff;

  FailureLog out_log, lse_log, padding_log;
  testing::SparseOutCheck out_check(kOutTolerance);
  testing::SparseStatCheck lse_check(kLseTolerance);
  for (int i = 0; i < b; ++i) {
    for (int s = 0; s < s_q; ++s) {
      for (int h = 0; h < h_q; ++h) {
        const bool attends_to_nothing = std::isinf(ref.lse[(size_t(i) * h_q + h) * s_q + s]);
        const size_t row = (size_t(i) * s_q + s) * h_q + h;
        const uint16_t* got_row = &out_bits[row * outputs.head_stride];
        for (int d = 0; d < d_v; ++d) {
          const float got = reference::bf16_bits_to_float(got_row[d]);
          const float exact = ref.out[row * d_v + d];
          if (!out_check.check(got, exact, ref.out_abs[row * d_v + d], attends_to_nothing)) {
            out_log.add("out[", i, ", ", s, ", ", h, ", ", d, "] = ", got, ", reference ", exact,
                        ", sum w|v| ", ref.out_abs[row * d_v + d]);
          }
        }
        for (int64_t d = d_v; d < outputs.head_stride; ++d) {
          if (got_row[d] != poison) {
            padding_log.add("out padding [", i, ", ", s, ", ", h, ", ", d, "]");
          }
        }
      }
    }
  }
  EXPECT_EQ(out_log.count(), 0) << out_log.report("out");
  EXPECT_EQ(padding_log.count(), 0) << padding_log.report("out row padding was written");
  out_check.expect_cosine_within(5e-6);

  for (int i = 0; i < b; ++i) {
    for (int h = 0; h < h_q; ++h) {
      for (int s = 0; s < s_q; ++s) {
        const size_t e = (size_t(i) * h_q + h) * s_q + s;
        const float got = lse[e], want = ref.lse[e];
        if (!lse_check.check(got, want, ref.max_logit[e], ref.logit_magnitude)) {
          lse_log.add("lse[", i, ", ", h, ", ", s, "] = ", got, ", reference ", want,
                      ", max logit ", ref.max_logit[e]);
        }
      }
    }
  }
  EXPECT_EQ(lse_log.count(), 0) << lse_log.report("lse");

  testing::report_rounding_only(tag, "bf16", out_check.rounding_only(), lse_check.rounding_only());
}

// ---------------------------------------------------------------------------------------
// Cases.

struct GpuCase {
  std::string name;
  SparseDecodeCase config;
  int64_t out_head_pad = 0;  // padding after each out row (must not be written)
  // Plan for other lengths than the inputs' (the result must not change).
  std::optional<PlanLengths> plan_lengths;
  bool two_layers = false;  // run a second layer (other q, cache, indices) with the same plan
};

void PrintTo(const GpuCase& c, std::ostream* os) {
  *os << c.name;
}

struct FormatChoice {
  const char* name;
  KVCacheFormat format;
  int head_dim_qk;
};

constexpr FormatChoice kFormats[] = {
    {"v32", KVCacheFormat::kFp8V32, 576},
    {"model1", KVCacheFormat::kFp8Model1, 512},
    {"bf16d576", KVCacheFormat::kBFloat16, 576},
    {"bf16d512", KVCacheFormat::kBFloat16, 512},
};

SparseSourceConfig source(int topk, int page) {
  SparseSourceConfig s;
  s.topk = topk;
  s.page_block_size = page;
  return s;
}

SparseDecodeCase make_case(const FormatChoice& f, int b, int s_q, int h_q, SparseSourceConfig main,
                           uint32_t seed) {
  SparseDecodeCase c;
  c.format = f.format;
  c.head_dim_qk = f.head_dim_qk;
  c.batch = b;
  c.seqlen_q = s_q;
  c.num_heads_q = h_q;
  c.main = std::move(main);
  c.seed = seed;
  return c;
}

std::string format_name(const SparseDecodeCase& c) {
  for (const FormatChoice& f : kFormats) {
    if (f.format == c.format && f.head_dim_qk == c.resolved_head_dim_qk()) return f.name;
  }
  return "unknown";
}

std::string case_name(const SparseDecodeCase& c) {
  std::ostringstream s;
  s << format_name(c) << "_page" << c.main.page_block_size << "_topk" << c.main.topk << "_hq"
    << c.num_heads_q << "_sq" << c.seqlen_q << "_b" << c.batch;
  if (!c.main.topk_length.empty()) s << "_lengths";
  if (c.has_extra) {
    s << "_extra" << c.extra.topk << "page" << c.extra.page_block_size;
    if (!c.extra.topk_length.empty()) s << "_extralengths";
  }
  if (c.sink == SinkMode::kMixed) s << "_sink";
  return s.str();
}

// Random lengths in [0, topk + 8] (some past topk: clamped), about one in six 0.
std::vector<int32_t> random_lengths(int batch, int topk, std::mt19937& rng) {
  std::vector<int32_t> lengths(batch);
  for (auto& len : lengths) {
    len = std::uniform_int_distribution<int>(0, 5)(rng) == 0
              ? 0
              : std::uniform_int_distribution<int>(1, topk + 8)(rng);
  }
  return lengths;
}

// A covering subset of formats x page sizes x top-k x h_q x s_q x b: every value of every
// dimension appears many times, in shuffled combinations; b is capped so that the reference
// (b * s_q * h_q * topk entries) and the cache stay small enough for a couple of minutes in all.
std::vector<GpuCase> grid_cases() {
  constexpr int kCases = 144;
  constexpr int64_t kMaxEntries = int64_t(1) << 22;  // b * s_q * h_q * topk
  constexpr int64_t kMaxListed = int64_t(1) << 16;   // b * topk (cache ~2x that in tokens)
  const int pages[] = {1, 2, 53, 61, 64, 69, 576};
  const int topks[] = {1, 64, 100, 576, 2048};
  const int heads[] = {1, 8, 16, 32, 64, 128};
  const int batches[] = {1, 2, 3, 5, 9, 17, 26, 33};
  std::mt19937 rng(2025);
  const auto spread = [&](int values) {
    std::vector<int> order(kCases);
    for (int n = 0; n < kCases; ++n) order[n] = n % values;
    std::shuffle(order.begin(), order.end(), rng);
    return order;
  };
  const std::vector<int> f = spread(4), pg = spread(7), k = spread(5), h = spread(6), s = spread(4),
                         bt = spread(8), extra_page = spread(7);
  std::vector<GpuCase> cases;
  for (int n = 0; n < kCases; ++n) {
    const int topk = topks[k[n]], h_q = heads[h[n]], s_q = s[n] + 1;
    int64_t max_b = std::min<int64_t>(33, kMaxEntries / (int64_t(s_q) * h_q * topk));
    max_b = std::max<int64_t>(1, std::min<int64_t>(max_b, kMaxListed / topk));
    const int b = static_cast<int>(std::min<int64_t>(batches[bt[n]], max_b));
    SparseDecodeCase c =
        make_case(kFormats[f[n]], b, s_q, h_q, source(topk, pages[pg[n]]), uint32_t(5000 + n));
    if (n % 3 == 2) c.main.topk_length = random_lengths(b, topk, rng);
    if (n % 3 == 1) {
      c.has_extra = true;
      c.extra = source(topks[(k[n] + 2) % 4], pages[extra_page[n]]);  // extra top-k <= 576
      if (n % 2 == 0) c.extra.topk_length = random_lengths(b, c.extra.topk, rng);
    }
    if (n % 2 == 1) c.sink = SinkMode::kMixed;
    cases.push_back({case_name(c), c});
  }
  return cases;
}

std::vector<GpuCase> special_cases() {
  const FormatChoice& v32 = kFormats[0];
  const FormatChoice& model1 = kFormats[1];
  const FormatChoice& bf16 = kFormats[2];
  const FormatChoice& bf16_512 = kFormats[3];
  std::vector<GpuCase> cases;
  const auto add = [&](std::string name, SparseDecodeCase c) {
    cases.push_back({std::move(name), std::move(c)});
  };

  // Long lists: the V3.2 peak-performance shape and a MODEL1 one with an extra list.
  add("topk16384_v32_hq128", make_case(v32, 2, 1, 128, source(16384, 64), 1));
  SparseDecodeCase long_model1 = make_case(model1, 1, 2, 64, source(16384, 256), 2);
  long_model1.has_extra = true;
  long_model1.extra = source(1024, 64);
  long_model1.sink = SinkMode::kMixed;
  add("topk16384_model1_hq64_extra_sink", long_model1);

  // Few heads (the swapped-product kernels, h_q <= 16 and <= 32): a long list split over CTAs
  // with an extra list and sinks, and an odd head count.
  SparseDecodeCase few_heads = make_case(model1, 2, 2, 20, source(4096, 64), 20);
  few_heads.has_extra = true;
  few_heads.extra = source(576, 2);
  few_heads.sink = SinkMode::kMixed;
  add("few_heads_model1_hq20_extra_sink", few_heads);
  SparseDecodeCase few_heads_v32 = make_case(v32, 3, 3, 7, source(2048, 53), 21);
  few_heads_v32.sink = SinkMode::kMixed;
  add("few_heads_v32_hq7_sink", few_heads_v32);

  // A large batch of short lists (FlashMLA's b = 321).
  add("b321_v32_topk64_hq64", make_case(v32, 321, 2, 64, source(64, 61), 3));
  SparseDecodeCase b321 = make_case(model1, 321, 1, 128, source(64, 53), 4);
  b321.has_extra = true;
  b321.extra = source(64, 2);
  std::mt19937 lengths_rng(4);
  b321.extra.topk_length = random_lengths(321, 64, lengths_rng);
  add("b321_model1_hq128_extra", b321);

  // Queries with nothing to attend: all-invalid rows, some or all sequences with length 0.
  SparseDecodeCase half_invalid = make_case(v32, 8, 3, 64, source(576, 53), 5);
  half_invalid.main.all_invalid_fraction = 0.5;
  half_invalid.sink = SinkMode::kMixed;
  add("all_invalid_rows_half", half_invalid);
  SparseDecodeCase all_invalid = make_case(model1, 5, 2, 128, source(100, 64), 6);
  all_invalid.main.all_invalid_fraction = 1.0;
  all_invalid.has_extra = true;
  all_invalid.extra = source(64, 69);
  all_invalid.extra.all_invalid_fraction = 1.0;
  add("all_invalid_everything", all_invalid);
  SparseDecodeCase zero_lengths = make_case(bf16, 6, 2, 32, source(2048, 64), 7);
  zero_lengths.main.topk_length = {0, 2048, 0, 5, 0, 1000};
  add("topk_length_zero_for_some", zero_lengths);
  SparseDecodeCase all_zero = make_case(v32, 4, 1, 16, source(64, 64), 8);
  all_zero.main.topk_length = {0, 0, 0, 0};
  add("topk_length_zero_for_all", all_zero);
  SparseDecodeCase extra_only = make_case(model1, 4, 2, 64, source(128, 64), 9);
  extra_only.main.topk_length = {0, 0, 128, 0};
  extra_only.has_extra = true;
  extra_only.extra = source(512, 2);
  extra_only.extra.topk_length = {512, 0, 0, 37};
  add("main_length_zero_extra_attends", extra_only);
  // Several sequences a part with some of them empty (h_q > 32: the later sequences' Q tiles
  // come by TMA, and an empty one has no P hand-off to order the row arrays across sequences).
  SparseDecodeCase many_a_part = make_case(v32, 200, 2, 64, source(64, 64), 30);
  for (int i = 0; i < 200; ++i)
    many_a_part.main.topk_length.push_back((i % 4 == 1) ? 64 : (i % 4 == 3) ? 17 : 0);
  add("many_sequences_a_part_some_empty_hq64", many_a_part);
  SparseDecodeCase many_crossover = make_case(v32, 200, 1, 128, source(128, 64), 31);
  for (int i = 0; i < 200; ++i)
    many_crossover.main.topk_length.push_back((i % 4 == 0) ? 128 : (i % 4 == 3) ? 70 : 0);
  add("many_sequences_a_part_some_empty_hq128", many_crossover);

  // Many -1 and out-of-range entries.
  SparseDecodeCase invalid = make_case(bf16_512, 7, 4, 16, source(576, 1), 10);
  invalid.main.invalid_fraction = 0.6;
  add("mostly_invalid_entries_page1", invalid);

  // The attention sink: every head +inf (out 0), every head -inf (no effect), mixed.
  SparseDecodeCase sink_plus = make_case(v32, 3, 2, 64, source(2048, 64), 11);
  sink_plus.sink = SinkMode::kPlusInf;
  add("sink_all_plus_inf", sink_plus);
  SparseDecodeCase sink_minus = make_case(model1, 3, 2, 128, source(576, 64), 12);
  sink_minus.sink = SinkMode::kMinusInf;
  add("sink_all_minus_inf", sink_minus);
  SparseDecodeCase sink_mixed = make_case(bf16, 9, 1, 128, source(100, 69), 13);
  sink_mixed.sink = SinkMode::kMixed;
  add("sink_mixed_hq128", sink_mixed);

  // Padded strides: q rows, index rows, cache token rows and gaps between blocks, out rows.
  SparseDecodeCase padded = make_case(v32, 5, 2, 64, source(576, 61), 14);
  padded.q_head_pad = 64;
  padded.q_seq_pad = 8;
  padded.q_batch_pad = 16;
  padded.main.token_pad_bytes = 48;
  padded.main.block_gap_bytes = 4096;
  padded.main.indices_seq_pad = 4;
  padded.main.indices_batch_pad = 12;
  padded.has_extra = true;
  padded.extra = source(64, 2);
  padded.extra.block_gap_bytes = 1024;
  padded.extra.indices_seq_pad = 8;
  cases.push_back({"padded_strides_v32", padded, /*out_head_pad=*/64});
  SparseDecodeCase padded_model1 = make_case(model1, 4, 3, 16, source(100, 53), 15);
  padded_model1.q_head_pad = 8;
  padded_model1.main.block_gap_bytes = 576 * 3;
  padded_model1.main.indices_batch_pad = 4;
  cases.push_back({"padded_strides_model1", padded_model1, /*out_head_pad=*/8});
  SparseDecodeCase padded_bf16 = make_case(bf16_512, 3, 2, 32, source(64, 64), 16);
  padded_bf16.main.token_pad_bytes = 128;
  padded_bf16.main.block_gap_bytes = 0;
  padded_bf16.q_seq_pad = 24;
  cases.push_back({"padded_strides_bf16_no_gap", padded_bf16, /*out_head_pad=*/16});

  // Plans made for other lengths than the inputs': still correct, only balanced differently.
  {
    SparseDecodeCase c = make_case(v32, 6, 2, 64, source(576, 64), 17);
    c.main.topk_length = {576, 300, 0, 17, 576, 64};
    PlanLengths shorter{64, {}, 0, {}};
    cases.push_back({"plan_for_smaller_topk", c, 0, shorter});
    PlanLengths longer{16384, {}, 0, {}};
    cases.push_back({"plan_for_larger_topk", c, 0, longer});
    PlanLengths zero{576, {0, 0, 0, 0, 0, 0}, 0, {}};
    cases.push_back({"plan_for_zero_lengths", c, 0, zero});
    PlanLengths reversed{576, {64, 17, 0, 300, 576, 576}, 0, {}};
    cases.push_back({"plan_for_other_lengths", c, 0, reversed});
  }
  {
    SparseDecodeCase c = make_case(model1, 5, 1, 128, source(128, 256), 18);
    c.has_extra = true;
    c.extra = source(1024, 64);
    c.extra.topk_length = {1024, 0, 500, 1, 64};
    PlanLengths without_extra{128, {}, 0, {}};
    cases.push_back({"plan_without_the_extra_list", c, 0, without_extra});
    PlanLengths big_extra{128, {}, 4096, {}};
    cases.push_back({"plan_for_larger_extra_topk", c, 0, big_extra});
  }

  // One plan, two layers (other q, cache and indices; the same lengths).
  SparseDecodeCase layers = make_case(v32, 8, 2, 128, source(2048, 64), 19);
  layers.main.topk_length = {2048, 100, 0, 2048, 1500, 64, 1, 777};
  cases.push_back({"two_layers_v32", layers, 0, std::nullopt, true});
  SparseDecodeCase layers_model1 = make_case(model1, 4, 1, 64, source(128, 256), 20);
  layers_model1.has_extra = true;
  layers_model1.extra = source(512, 64);
  layers_model1.extra.topk_length = {512, 3, 0, 200};
  layers_model1.sink = SinkMode::kMixed;
  cases.push_back({"two_layers_model1_extra", layers_model1, 0, std::nullopt, true});
  return cases;
}

class SparseDecodeGpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(SparseDecodeGpu, MatchesReference) {
  const GpuCase& gpu_case = GetParam();
  SparseDecodeHostData host(gpu_case.config);
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), gpu_case.plan_lengths.value_or(lengths_of(host)));
  DeviceOutputs outputs(inputs.params(), gpu_case.out_head_pad);
  run_sparse_decode(inputs, plan, outputs);
  expect_matches_reference(host, compute_reference(host), outputs);

  if (gpu_case.two_layers) {
    SparseDecodeCase second = gpu_case.config;
    second.seed += 7777;
    SparseDecodeHostData host2(second);
    const DeviceInputs inputs2(host2);
    DeviceOutputs outputs2(inputs2.params(), gpu_case.out_head_pad);
    run_sparse_decode(inputs2, plan, outputs2);
    SCOPED_TRACE("second layer");
    expect_matches_reference(host2, compute_reference(host2), outputs2, "_layer2");
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Grid, SparseDecodeGpu, ::testing::ValuesIn(grid_cases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Special, SparseDecodeGpu, ::testing::ValuesIn(special_cases()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Run to run: the same inputs and plan give the same bits (no atomics in the reduction order).

TEST(SparseDecodeGpuDeterminism, TwoRunsAreBitIdentical) {
  for (const FormatChoice& format : kFormats) {
    SCOPED_TRACE(format.name);
    SparseDecodeCase c = make_case(format, 6, 2, 128, source(2048, 64), 30);
    c.main.topk_length = {2048, 5, 0, 1024, 2048, 77};
    c.has_extra = true;
    c.extra = source(256, 2);
    c.sink = SinkMode::kMixed;
    SparseDecodeHostData host(c);
    const DeviceInputs inputs(host);
    const DevicePlan plan(inputs.params(), lengths_of(host));
    DeviceOutputs first(inputs.params(), 0), second(inputs.params(), 0);
    run_sparse_decode(inputs, plan, first);
    run_sparse_decode(inputs, plan, second);
    const std::vector<uint16_t> out1 = first.out.download(), out2 = second.out.download();
    const std::vector<float> lse1 = first.lse.download(), lse2 = second.lse.download();
    EXPECT_EQ(std::memcmp(out1.data(), out2.data(), out1.size() * 2), 0) << "out differs";
    EXPECT_EQ(std::memcmp(lse1.data(), lse2.data(), lse1.size() * 4), 0) << "lse differs";
  }
}

// ---------------------------------------------------------------------------------------
// Bad arguments: an Error naming the argument, nothing launched, the context still healthy.

TEST(SparseDecodeGpuErrors, BadArgumentThrowsNamedError) {
  SparseDecodeHostData host(make_case(kFormats[0], 2, 1, 64, source(64, 64), 40));
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), lengths_of(host));
  DeviceOutputs outputs(inputs.params(), 0);

  SparseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);  // no row padding: out_head_stride = d_v
  p.workspace_bytes = sparse_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  p.workspace = workspace.get();

  struct BadArgument {
    const char* argument;
    void (*mutate)(SparseDecodeParams&);
  };
  const BadArgument bad_arguments[] = {
      {"head_dim_qk", [](SparseDecodeParams& q) { q.head_dim_qk = 512; }},
      {"q", [](SparseDecodeParams& q) { q.q = nullptr; }},
      {"main.topk", [](SparseDecodeParams& q) { q.main.topk = 0; }},
      {"workspace_bytes", [](SparseDecodeParams& q) { q.workspace_bytes = 1; }},
  };
  for (const BadArgument& bad : bad_arguments) {
    SparseDecodeParams broken = p;
    bad.mutate(broken);
    try {
      sparse_decode(broken, nullptr);
      ADD_FAILURE() << bad.argument << ": sparse_decode accepted a bad argument";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), bad.argument) << e.what();
    }
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // The valid call still works afterwards.
  outputs.poison();
  sparse_decode(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_matches_reference(host, compute_reference(host), outputs);
}

}  // namespace
}  // namespace flashmla
