// The C++ sparse-prefill API on the GPU against the CPU reference. Every case uses fresh random
// data: NaN in every kv row no valid index selects and in every stride padding, index lists
// mixing distinct tokens with duplicates, -1 and out-of-range entries, garbage (pointing at NaN
// rows) past topk_length, and poisoned (NaN) outputs, so that unwritten or wrongly read
// elements show up as NaN. Problems too large for the CPU reference are checked on a sample of
// query tokens spread over the whole range (the first and last ones included); every query
// token still gets the cheap checks (attends to nothing -> exactly 0 / -inf / +inf, otherwise
// finite with max_logits <= lse <= max_logits + log(#tokens), padding untouched). Needs a
// compute capability 9.0 GPU; built by CMake, run by hand/scripts.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../sparse_prefill_case.h"
#include "decode_gpu_common.h"
#include "device_buffer.h"
#include "flashmla/flashmla.h"
#include "reference/half_convert.h"
#include "reference/parallel_items.h"
#include "reference/sparse_prefill_reference.h"
#include "sparse_reference_checks.h"

namespace flashmla {
namespace {

using testing::check_cuda;
using testing::DeviceBuffer;
using testing::FailureLog;
using testing::SinkMode;
using testing::SparsePrefillCase;
using testing::SparsePrefillHostData;
// out, lse, out_abs, max_logit and logit_magnitude, here in the layout [rows checked, h_q, ...].
using Reference = testing::DecodeReference;

constexpr uint16_t kOutPoison = 0xffff;  // bf16 NaN, what 0xff bytes read as
constexpr float kInf = std::numeric_limits<float>::infinity();

// Runs fn(i) for i in [0, n) on the reference's worker threads (when n is large).
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
  struct Range {
    int64_t first, last;
  };
  std::vector<Range> items;
  for (int64_t i = 0; i < n; i += grain) items.push_back({i, std::min(n, i + grain)});
  struct NoScratch {};
  struct Runner {
    const Fn* fn;
    void run(const Range& r, NoScratch& /*scratch*/) const {
      for (int64_t i = r.first; i < r.last; ++i) (*fn)(i);
    }
  };
  const int threads = std::min<int>(reference::usable_threads(), int(items.size()));
  if (threads >= 1) reference::run_items<NoScratch>(Runner{&fn}, items, threads);
}

// Device copies of the inputs of one case, and params pointing at them.
class DeviceInputs {
 public:
  explicit DeviceInputs(const SparsePrefillHostData& host)
      : q_(host.q), kv_(host.kv), indices_(host.indices) {
    params_ = host.params();  // strides and sizes; pointers replaced below
    params_.q = q_.get();
    params_.kv = kv_.get();
    params_.indices = indices_.get();
    if (!host.topk_length.empty()) {
      topk_length_ = std::make_unique<DeviceBuffer<int32_t>>(host.topk_length);
      params_.topk_length = topk_length_->get();
    }
    if (!host.attn_sink.empty()) {
      attn_sink_ = std::make_unique<DeviceBuffer<float>>(host.attn_sink);
      params_.attn_sink = attn_sink_->get();
    }
  }
  const SparsePrefillParams& params() const { return params_; }

 private:
  DeviceBuffer<uint16_t> q_;
  DeviceBuffer<uint16_t> kv_;
  DeviceBuffer<int32_t> indices_;
  std::unique_ptr<DeviceBuffer<int32_t>> topk_length_;
  std::unique_ptr<DeviceBuffer<float>> attn_sink_;
  SparsePrefillParams params_;
};

// Padding (elements) in the output strides: it must stay untouched.
struct OutputPadding {
  int64_t out_head = 0, out_seq = 0, max_logits_seq = 0, lse_seq = 0;
};

// The outputs: out [s_q, h_q, d_v], max_logits and lse [s_q, h_q], with padded strides.
struct DeviceOutputs {
  DeviceOutputs(const SparsePrefillParams& p, const OutputPadding& pad)
      : out_head_stride(p.head_dim_v + pad.out_head),
        out_seq_stride(p.num_heads_q * out_head_stride + pad.out_seq),
        max_logits_seq_stride(p.num_heads_q + pad.max_logits_seq),
        lse_seq_stride(p.num_heads_q + pad.lse_seq),
        out(size_t(p.seqlen_q) * out_seq_stride),
        max_logits(size_t(p.seqlen_q) * max_logits_seq_stride),
        lse(size_t(p.seqlen_q) * lse_seq_stride) {}
  void poison() {
    out.fill_bytes(0xff);  // 0xffff: NaN in bf16
    max_logits.fill_bytes(0xff);
    lse.fill_bytes(0xff);  // NaN in float
  }
  void point(SparsePrefillParams& p) const {
    p.out = out.get();
    p.out_seq_stride = out_seq_stride;
    p.out_head_stride = out_head_stride;
    p.max_logits = max_logits.get();
    p.max_logits_seq_stride = max_logits_seq_stride;
    p.lse = lse.get();
    p.lse_seq_stride = lse_seq_stride;
  }
  int64_t out_head_stride, out_seq_stride, max_logits_seq_stride, lse_seq_stride;
  DeviceBuffer<uint16_t> out;
  DeviceBuffer<float> max_logits;
  DeviceBuffer<float> lse;
};

// Runs sparse_prefill into poisoned outputs, on `stream`.
void run_sparse_prefill(const DeviceInputs& inputs, DeviceOutputs& outputs,
                        cudaStream_t stream = nullptr) {
  SparsePrefillParams p = inputs.params();
  outputs.point(p);
  outputs.poison();
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after poisoning");
  sparse_prefill(p, stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after sparse_prefill");
  check_cuda(cudaGetLastError(), "cudaGetLastError after sparse_prefill");
}

// ---------------------------------------------------------------------------------------
// The reference, on every query token or on a sample of them.

// Reference multiply-adds above which only a sample of the query tokens is checked (about a
// second of the reference on the 16 cores of the GPU machine).
constexpr double kReferenceBudgetMacs = 1.2e10;
constexpr int64_t kMaxRunRows = 32;  // sampled query tokens come in runs of at most this many
constexpr int64_t kMinRuns = 4;

struct RowRange {
  int64_t first, count;
};

// Runs of query tokens to check: all of them when the reference fits the budget (or
// `min_rows` reach s_q), else at least kMinRuns equal runs spread over [0, s_q): one random run
// in each of equal segments, the first run starting at 0 and the last ending at s_q.
std::vector<RowRange> rows_to_check(const SparsePrefillHostData& host, int64_t min_rows,
                                    uint32_t seed) {
  const SparsePrefillParams p = host.params();
  const int64_t s_q = p.seqlen_q;
  double macs = 0;
  for (int64_t s = 0; s < s_q; ++s) macs += host.valid_count(s);
  macs *= double(p.num_heads_q) * (p.head_dim_qk + p.head_dim_v);
  const double per_row = macs / double(s_q);
  const int64_t by_budget = per_row > 0 ? int64_t(kReferenceBudgetMacs / per_row) : s_q;
  const int64_t wanted = std::max(min_rows, by_budget);
  if (wanted >= s_q) return {{0, s_q}};
  const int64_t run_rows = std::clamp<int64_t>(wanted / kMinRuns, 1, kMaxRunRows);
  const int64_t runs = std::max<int64_t>(kMinRuns, wanted / run_rows);
  if (runs * run_rows * 2 > s_q) return {{0, s_q}};
  std::mt19937 rng(seed);
  std::vector<RowRange> ranges;
  for (int64_t c = 0; c < runs; ++c) {
    const int64_t lo = s_q * c / runs, hi = s_q * (c + 1) / runs;  // hi - lo >= 2 * run_rows
    int64_t first = std::uniform_int_distribution<int64_t>(lo, hi - run_rows)(rng);
    if (c == 0) first = 0;
    if (c == runs - 1) first = s_q - run_rows;
    ranges.push_back({first, run_rows});
  }
  return ranges;
}

int64_t total_rows(const std::vector<RowRange>& ranges) {
  int64_t rows = 0;
  for (const RowRange& r : ranges) rows += r.count;
  return rows;
}

// softmax_scale * max |q row| (over the checked tokens) * max |kv row| (over the selected rows):
// bounds sum_i |q_i k_i| of every logit, the magnitude whose float32 rounding a logit inherits.
double logit_magnitude(const SparsePrefillHostData& host, const std::vector<RowRange>& ranges) {
  const SparsePrefillParams p = host.params();
  const auto norm = [&](const uint16_t* row) {
    double sum = 0.0;
    for (int d = 0; d < p.head_dim_qk; ++d) {
      sum += std::pow(double(reference::bf16_bits_to_float(row[d])), 2);
    }
    return std::sqrt(sum);
  };
  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto* kv = static_cast<const uint16_t*>(p.kv);
  double q_max = 0.0, k_max = 0.0;
  for (const RowRange& r : ranges) {
    for (int64_t s = r.first; s < r.first + r.count; ++s) {
      for (int h = 0; h < p.num_heads_q; ++h) {
        q_max = std::max(q_max, norm(q + s * p.q_seq_stride + h * p.q_head_stride));
      }
    }
  }
  for (int64_t t = 0; t < p.num_kv_tokens; ++t) {
    if (host.selected[t]) k_max = std::max(k_max, norm(kv + t * p.kv_token_stride));
  }
  return double(p.softmax_scale) * q_max * k_max;
}

// The reference of the query tokens of `ranges`, one after the other: out / out_abs
// [rows, h_q, d_v], lse / max_logit [rows, h_q].
Reference compute_reference(const SparsePrefillHostData& host,
                            const std::vector<RowRange>& ranges) {
  const SparsePrefillParams p = host.params();
  const int64_t rows = total_rows(ranges);
  const size_t heads = size_t(rows) * p.num_heads_q;
  Reference r;
  r.out.resize(heads * p.head_dim_v);
  r.out_abs.resize(r.out.size());
  r.lse.resize(heads);
  r.max_logit.resize(heads);
  size_t at = 0;  // head rows done
  for (const RowRange& range : ranges) {
    SparsePrefillParams sub = p;
    sub.seqlen_q = static_cast<int>(range.count);
    sub.q = static_cast<const uint16_t*>(p.q) + range.first * p.q_seq_stride;
    sub.indices = p.indices + range.first * p.indices_seq_stride;
    if (p.topk_length != nullptr) sub.topk_length = p.topk_length + range.first;
    reference::sparse_prefill_reference(sub, &r.out[at * p.head_dim_v], &r.max_logit[at],
                                        &r.lse[at], &r.out_abs[at * p.head_dim_v]);
    at += size_t(range.count) * p.num_heads_q;
  }
  r.logit_magnitude = logit_magnitude(host, ranges);
  return r;
}

// ---------------------------------------------------------------------------------------
// Comparison against the reference.

// Tolerances (FlashMLA's sparse-prefill test): out passes where |err| < 8e-4 or
// |err| / |ref| < 3.01/128 (ref: the reference rounded to bf16), with 1 - cos < 7e-6 over the
// checked tokens; max_logits and lse where |err| < 1e-6 or |err| / |ref| < 2.01/65536. An
// element that misses these may pass by the rounding bounds (sparse_reference_checks.h).
constexpr testing::FixedTolerance kOutTolerance{8e-4f, 3.01f / 128};
constexpr testing::FixedTolerance kStatTolerance{1e-6f, 2.01f / 65536};

struct DownloadedOutputs {
  explicit DownloadedOutputs(const DeviceOutputs& d)
      : out(d.out.download()), max_logits(d.max_logits.download()), lse(d.lse.download()) {}
  std::vector<uint16_t> out;
  std::vector<float> max_logits, lse;
};

// Every query token: padding untouched; with no valid token exactly out = 0, max_logits = -inf
// and lse = +inf; otherwise no NaN or inf in out, and max_logits <= lse <= max_logits +
// log(#valid) (up to the float rounding).
void expect_consistent_everywhere(const SparsePrefillHostData& host, const DeviceOutputs& layout,
                                  const DownloadedOutputs& got) {
  const SparsePrefillParams p = host.params();
  const int h_q = p.num_heads_q, d_v = p.head_dim_v;
  // Per query token: 0 fine, else a bit per kind of failure (logged serially afterwards).
  enum : uint8_t { kOutBad = 1, kStatBad = 2, kPaddingWritten = 4 };
  std::vector<uint8_t> status(p.seqlen_q, 0);
  parallel_for(p.seqlen_q, 256, [&](int64_t s) {
    const int valid = host.valid_count(s);
    uint8_t st = 0;
    const uint16_t* seq_out = &got.out[size_t(s) * layout.out_seq_stride];
    for (int h = 0; h < h_q; ++h) {
      const uint16_t* row = seq_out + size_t(h) * layout.out_head_stride;
      if (valid == 0) {
        for (int d = 0; d < d_v; ++d) st |= row[d] != 0 && row[d] != 0x8000 ? kOutBad : 0;
      } else {
        for (int d = 0; d < d_v; ++d) st |= (row[d] & 0x7fff) >= 0x7f80 ? kOutBad : 0;
      }
      for (int64_t d = d_v; d < layout.out_head_stride; ++d) {
        st |= row[d] != kOutPoison ? kPaddingWritten : 0;
      }
      const float m = got.max_logits[size_t(s) * layout.max_logits_seq_stride + h];
      const float l = got.lse[size_t(s) * layout.lse_seq_stride + h];
      if (valid == 0) {
        st |= m == -kInf && l == kInf ? 0 : kStatBad;
      } else {
        const float slack = 1e-5f * (1.f + std::fabs(m));
        const bool ok = std::isfinite(m) && std::isfinite(l) && l >= m - slack &&
                        l <= m + std::log(float(valid)) + slack;
        st |= ok ? 0 : kStatBad;
      }
    }
    for (int64_t e = int64_t(h_q) * layout.out_head_stride; e < layout.out_seq_stride; ++e) {
      st |= seq_out[e] != kOutPoison ? kPaddingWritten : 0;
    }
    const auto untouched = [&](const std::vector<float>& v, int64_t stride) {
      for (int64_t e = h_q; e < stride; ++e) {
        if (!std::isnan(v[size_t(s) * stride + e])) return false;
      }
      return true;
    };
    if (!untouched(got.max_logits, layout.max_logits_seq_stride) ||
        !untouched(got.lse, layout.lse_seq_stride)) {
      st |= kPaddingWritten;
    }
    status[s] = st;
  });
  FailureLog out_log, stat_log, padding_log;
  for (int64_t s = 0; s < p.seqlen_q; ++s) {
    if (status[s] & kOutBad) out_log.add("query token ", s, " (", host.valid_count(s), " valid)");
    if (status[s] & kStatBad) stat_log.add("query token ", s, " (", host.valid_count(s), " valid)");
    if (status[s] & kPaddingWritten) padding_log.add("query token ", s);
  }
  EXPECT_EQ(out_log.count(), 0) << out_log.report(
      "out not exactly 0 where nothing is attended, or NaN / inf elsewhere");
  EXPECT_EQ(stat_log.count(), 0) << stat_log.report(
      "max_logits / lse not -inf / +inf where nothing is attended, or not max <= lse <= max + "
      "log(n) elsewhere");
  EXPECT_EQ(padding_log.count(), 0) << padding_log.report("output padding was written");
}

// The checked query tokens against the reference. `tag` distinguishes the reported properties
// of several comparisons in one test.
void expect_matches_reference(const SparsePrefillHostData& host,
                              const std::vector<RowRange>& ranges, const Reference& ref,
                              const DeviceOutputs& layout, const DownloadedOutputs& got,
                              const std::string& tag = "") {
  const SparsePrefillParams p = host.params();
  const int h_q = p.num_heads_q, d_v = p.head_dim_v;

  FailureLog out_log, max_log, lse_log;
  testing::SparseOutCheck out_check(kOutTolerance);
  // max_logits and lse: the same rules (the reference's max_logits is ref.max_logit).
  testing::SparseStatCheck max_check(kStatTolerance), lse_check(kStatTolerance);
  size_t at = 0;  // head row in the reference
  for (const RowRange& range : ranges) {
    for (int64_t s = range.first; s < range.first + range.count; ++s) {
      for (int h = 0; h < h_q; ++h, ++at) {
        const bool attends_to_nothing = std::isinf(ref.lse[at]);
        const uint16_t* got_row =
            &got.out[size_t(s) * layout.out_seq_stride + size_t(h) * layout.out_head_stride];
        for (int d = 0; d < d_v; ++d) {
          const float g = reference::bf16_bits_to_float(got_row[d]);
          const float exact = ref.out[at * d_v + d];
          if (!out_check.check(g, exact, ref.out_abs[at * d_v + d], attends_to_nothing)) {
            out_log.add("out[", s, ", ", h, ", ", d, "] = ", g, ", reference ", exact,
                        ", sum w|v| ", ref.out_abs[at * d_v + d]);
          }
        }

        const auto check_stat = [&](float g, float want, testing::SparseStatCheck& check,
                                    FailureLog& log, const char* name) {
          if (!check.check(g, want, ref.max_logit[at], ref.logit_magnitude)) {
            log.add(name, "[", s, ", ", h, "] = ", g, ", reference ", want, ", max logit ",
                    ref.max_logit[at]);
          }
        };
        check_stat(got.max_logits[size_t(s) * layout.max_logits_seq_stride + h], ref.max_logit[at],
                   max_check, max_log, "max_logits");
        check_stat(got.lse[size_t(s) * layout.lse_seq_stride + h], ref.lse[at], lse_check, lse_log,
                   "lse");
      }
    }
  }
  EXPECT_EQ(out_log.count(), 0) << out_log.report("out");
  out_check.expect_cosine_within(7e-6);
  EXPECT_EQ(max_log.count(), 0) << max_log.report("max_logits");
  EXPECT_EQ(lse_log.count(), 0) << lse_log.report("lse");

  testing::report_rounding_only(tag, "bf16", out_check.rounding_only(), lse_check.rounding_only());
  ::testing::Test::RecordProperty("max_logits_rounding_only" + tag,
                                  std::to_string(max_check.rounding_only()));
  std::printf("%smax_logits: %lld elements within the fp32 logit-rounding bound only\n",
              tag.empty() ? "" : (tag + " ").c_str(),
              static_cast<long long>(max_check.rounding_only()));
  const int64_t rows = total_rows(ranges);
  if (rows < p.seqlen_q) {
    std::printf("%sreference checked on %lld of %d query tokens (%zu runs)\n",
                tag.empty() ? "" : (tag + " ").c_str(), static_cast<long long>(rows), p.seqlen_q,
                ranges.size());
  }
  ::testing::Test::RecordProperty("reference_rows" + tag, std::to_string(rows));
}

// Runs one case: data, kernel, both checks.
void run_and_check(const SparsePrefillCase& c, const OutputPadding& pad, int64_t min_rows = 0) {
  SparsePrefillHostData host(c);
  std::unique_ptr<DeviceOutputs> outputs;
  {
    const DeviceInputs inputs(host);
    outputs = std::make_unique<DeviceOutputs>(inputs.params(), pad);
    run_sparse_prefill(inputs, *outputs);
  }  // device inputs freed before the host-side checks
  const DownloadedOutputs got(*outputs);
  expect_consistent_everywhere(host, *outputs, got);
  const std::vector<RowRange> ranges = rows_to_check(host, min_rows, c.seed);
  expect_matches_reference(host, ranges, compute_reference(host, ranges), *outputs, got);
}

// ---------------------------------------------------------------------------------------
// Cases.

struct GpuCase {
  std::string name;
  SparsePrefillCase config;
  OutputPadding padding;
  int64_t min_reference_rows = 0;  // with a sample: at least this many query tokens checked
};

void PrintTo(const GpuCase& c, std::ostream* os) {
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

std::string case_name(const SparsePrefillCase& c) {
  std::ostringstream s;
  s << "d" << c.head_dim_qk << "_hq" << c.num_heads_q << "_sq" << c.seqlen_q << "_skv"
    << c.num_kv_tokens << "_topk" << c.topk;
  if (c.random_topk_length || !c.topk_length.empty()) s << "_lengths";
  if (c.sink == SinkMode::kMixed) s << "_sink";
  return s.str();
}

// A covering subset of d_qk x h_q x (s_kv, topk) x s_q: for each d_qk, every value of every
// other dimension appears several times, in shuffled combinations; one case in three has
// random topk_length, one in two a mixed attention sink. Cases whose reference would be too
// slow are checked on a sample of query tokens (rows_to_check).
std::vector<GpuCase> grid_cases() {
  constexpr int kCasesPerHeadDim = 72;
  const int heads[] = {1, 3, 16, 32, 64, 100, 128};
  struct KvTopk {
    int64_t s_kv;
    int topk;
  };
  const KvTopk kv_topk[] = {{128, 128},  {256, 256},  {512, 512}, {592, 128},  {1840, 256},
                            {1592, 384}, {1521, 512}, {95, 128},  {153, 256},  {114, 384},
                            {32, 2048},  {64, 8192},  {777, 100}, {1300, 1000}};
  const int seqlens[] = {1, 62, 213, 1024};
  std::mt19937 rng(2027);
  const auto spread = [&](int values) {
    std::vector<int> order(kCasesPerHeadDim);
    for (int n = 0; n < kCasesPerHeadDim; ++n) order[n] = n % values;
    std::shuffle(order.begin(), order.end(), rng);
    return order;
  };
  std::vector<GpuCase> cases;
  for (int d_qk : {576, 512}) {
    const std::vector<int> h = spread(7), kt = spread(14), s = spread(4);
    for (int n = 0; n < kCasesPerHeadDim; ++n) {
      const KvTopk& pair = kv_topk[kt[n]];
      SparsePrefillCase c = make_case(d_qk, seqlens[s[n]], heads[h[n]], pair.s_kv, pair.topk,
                                      uint32_t(7000 + cases.size()));
      c.random_topk_length = n % 3 == 2;
      if (n % 2 == 1) c.sink = SinkMode::kMixed;
      // The same combination drawn again (other data): numbered, as test names must differ.
      std::string name = case_name(c);
      const auto same = [&](const GpuCase& other) {
        return other.name.rfind(name, 0) == 0 && case_name(other.config) == name;
      };
      const auto repeats = std::count_if(cases.begin(), cases.end(), same);
      if (repeats > 0) name += "_" + std::to_string(repeats + 1);
      cases.push_back({name, c, OutputPadding{}, 0});
    }
  }
  return cases;
}

std::vector<GpuCase> special_cases() {
  std::vector<GpuCase> cases;
  const auto add = [&](std::string name, SparsePrefillCase c, OutputPadding pad = {},
                       int64_t min_rows = 0) {
    cases.push_back({std::move(name), std::move(c), pad, min_rows});
  };

  // 70000 query tokens (s_q * h_q * d_qk > 2^32 elements: 64-bit offsets), checked on 4096 of
  // them spread over the whole range, the last ones included.
  SparsePrefillCase long_q = make_case(576, 70000, 128, 256, 128, 1);
  long_q.random_topk_length = true;
  long_q.all_invalid_fraction = 0.01;
  add("sq70000_hq128_d576_skv256_topk128", long_q, {}, 4096);

  // A V3.2-like shape (sampled) and a kv cache whose row offsets pass 2^31 elements.
  add("v32_shape_d576_hq128_sq1024_skv8192_topk2048", make_case(576, 1024, 128, 8192, 2048, 2));
  SparsePrefillCase far_rows = make_case(512, 64, 64, 140000, 2048, 3);
  far_rows.kv_token_pad = 16384 - 512;  // row 140000 starts past 2^31 elements (4 GiB)
  far_rows.nan_row_fraction = 0.0;      // the NaN fill of the padding suffices
  add("skv140000_kv_offsets_past_2pow31_elements", far_rows);
  add("skv131072_hq128_topk2048", make_case(576, 32, 128, 131072, 2048, 4));

  // Queries with nothing to attend: all-invalid rows, lengths 0 / negative for some or all.
  SparsePrefillCase half_invalid = make_case(576, 213, 64, 1840, 256, 5);
  half_invalid.all_invalid_fraction = 0.5;
  half_invalid.sink = SinkMode::kMixed;
  add("all_invalid_rows_half", half_invalid);
  SparsePrefillCase all_invalid = make_case(512, 62, 128, 512, 512, 6);
  all_invalid.all_invalid_fraction = 1.0;
  all_invalid.sink = SinkMode::kMixed;
  add("all_invalid_everything", all_invalid);
  SparsePrefillCase lengths = make_case(576, 100, 128, 1521, 512, 7);
  lengths.topk_length = {0,
                         -1,
                         512,
                         1512,
                         1,
                         63,
                         64,
                         65,
                         std::numeric_limits<int32_t>::min(),
                         std::numeric_limits<int32_t>::max(),
                         511,
                         129};
  add("topk_length_zero_negative_past_topk", lengths);
  SparsePrefillCase lengths_512 = lengths;
  lengths_512.head_dim_qk = 512;
  lengths_512.num_heads_q = 3;
  lengths_512.seed = 8;
  add("topk_length_zero_negative_past_topk_d512_hq3", lengths_512);
  // The persistent grid: each CTA walks ~15 items (token, head block) whose pair counts vary
  // from 0 (runs of them) to 8, so the barrier phases carry across items of every length.
  SparsePrefillCase walk = make_case(576, 1000, 128, 1521, 1000, 40);
  walk.topk_length = {0, 1000, 1, 0, 0, 129, 640, 128, 0, 999, 64, 257, 0, 0, 0, 1000, 383};
  walk.all_invalid_fraction = 0.05;
  walk.sink = SinkMode::kMixed;
  add("persistent_walk_mixed_lengths", walk);
  SparsePrefillCase walk_512 = walk;
  walk_512.head_dim_qk = 512;
  walk_512.num_heads_q = 64;
  walk_512.seed = 41;
  add("persistent_walk_mixed_lengths_d512_hq64", walk_512);
  SparsePrefillCase zero_lengths = make_case(512, 62, 64, 256, 256, 9);
  zero_lengths.topk_length = {0};
  add("topk_length_zero_for_all", zero_lengths);

  // Index lists: mostly invalid (-1, out of range, INT32_MIN / MAX), many duplicates, every
  // entry the same row, top-k 1, lists longer than the cache, half the rows NaN.
  SparsePrefillCase invalid = make_case(576, 62, 64, 592, 384, 10);
  invalid.invalid_fraction = 0.6;
  add("mostly_invalid_entries", invalid);
  SparsePrefillCase duplicates = make_case(512, 62, 128, 256, 512, 11);
  duplicates.duplicate_fraction = 0.5;
  add("many_duplicates", duplicates);
  SparsePrefillCase one_row = make_case(576, 62, 32, 1, 256, 12);
  one_row.duplicate_fraction = 0.9;
  add("skv1_every_valid_entry_the_same_row", one_row);
  add("topk1_d512", make_case(512, 62, 16, 100, 1, 13));
  add("topk1_d576_hq128", make_case(576, 213, 128, 5, 1, 14));
  SparsePrefillCase nan_rows = make_case(576, 213, 16, 400, 256, 15);
  nan_rows.nan_row_fraction = 0.5;
  nan_rows.random_topk_length = true;
  add("half_the_kv_rows_nan", nan_rows);
  SparsePrefillCase nan_rows_512 = nan_rows;
  nan_rows_512.head_dim_qk = 512;
  nan_rows_512.num_heads_q = 100;
  nan_rows_512.seed = 16;
  add("half_the_kv_rows_nan_d512_hq100", nan_rows_512);

  // The attention sink: every head +inf (out 0), every head -inf (no effect), mixed.
  SparsePrefillCase sink_plus = make_case(576, 62, 128, 1840, 256, 17);
  sink_plus.sink = SinkMode::kPlusInf;
  add("sink_all_plus_inf", sink_plus);
  SparsePrefillCase sink_minus = make_case(512, 62, 64, 1592, 384, 18);
  sink_minus.sink = SinkMode::kMinusInf;
  add("sink_all_minus_inf", sink_minus);
  SparsePrefillCase sink_mixed = make_case(512, 213, 128, 153, 256, 19);
  sink_mixed.sink = SinkMode::kMixed;
  sink_mixed.random_topk_length = true;
  add("sink_mixed_hq128_lengths", sink_mixed);

  // Padded strides: q heads and tokens, kv rows, index rows, out heads and tokens, max_logits
  // and lse rows (the output padding must stay untouched).
  const OutputPadding pad{64, 8, 3, 7};
  SparsePrefillCase padded = make_case(576, 62, 64, 1521, 512, 20);
  padded.q_head_pad = 64;
  padded.q_seq_pad = 8;
  padded.kv_token_pad = 64;
  padded.indices_seq_pad = 5;
  padded.sink = SinkMode::kMixed;
  add("padded_strides_d576", padded, pad);
  SparsePrefillCase padded_512 = make_case(512, 213, 100, 153, 256, 21);
  padded_512.q_head_pad = 8;
  padded_512.q_seq_pad = 24;
  padded_512.kv_token_pad = 8;
  padded_512.indices_seq_pad = 1;
  padded_512.random_topk_length = true;
  add("padded_strides_d512_hq100", padded_512, {8, 16, 1, 2});
  SparsePrefillCase padded_3 = make_case(576, 62, 3, 95, 128, 22);
  padded_3.q_head_pad = 576;
  padded_3.kv_token_pad = 576;
  padded_3.indices_seq_pad = 128;
  add("padded_strides_d576_hq3", padded_3, {512, 512, 61, 125});
  // Heads whose rows overlap (stride d_qk - 64: validation allows any multiple of 8).
  SparsePrefillCase overlapping = make_case(576, 213, 100, 592, 384, 23);
  overlapping.q_head_pad = -64;
  overlapping.q_seq_pad = 64;
  overlapping.random_topk_length = true;
  add("overlapping_q_heads", overlapping);
  return cases;
}

class SparsePrefillGpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(SparsePrefillGpu, MatchesReference) {
  const GpuCase& gpu_case = GetParam();
  run_and_check(gpu_case.config, gpu_case.padding, gpu_case.min_reference_rows);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Grid, SparsePrefillGpu, ::testing::ValuesIn(grid_cases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Special, SparsePrefillGpu, ::testing::ValuesIn(special_cases()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Run to run: the same inputs give the same bits, on the default stream and on another one.

TEST(SparsePrefillGpuDeterminism, RunsAreBitIdentical) {
  for (int d_qk : {576, 512}) {
    SCOPED_TRACE(d_qk);
    SparsePrefillCase c = make_case(d_qk, 213, 128, 1840, 2048, 30);
    c.random_topk_length = true;
    c.sink = SinkMode::kMixed;
    SparsePrefillHostData host(c);
    const DeviceInputs inputs(host);
    DeviceOutputs first(inputs.params(), {}), second(inputs.params(), {});
    run_sparse_prefill(inputs, first);
    cudaStream_t stream = nullptr;
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    run_sparse_prefill(inputs, second, stream);
    check_cuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
    const DownloadedOutputs a(first), b(second);
    EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.size() * 2), 0) << "out differs";
    EXPECT_EQ(std::memcmp(a.max_logits.data(), b.max_logits.data(), a.max_logits.size() * 4), 0)
        << "max_logits differs";
    EXPECT_EQ(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4), 0) << "lse differs";
    // And a third run into the first outputs again.
    run_sparse_prefill(inputs, first);
    const DownloadedOutputs again(first);
    EXPECT_EQ(std::memcmp(a.out.data(), again.out.data(), a.out.size() * 2), 0) << "out differs";
    EXPECT_EQ(std::memcmp(a.lse.data(), again.lse.data(), a.lse.size() * 4), 0) << "lse differs";
  }
}

// ---------------------------------------------------------------------------------------
// Bad arguments: an Error naming the argument, nothing launched, the context still healthy.

TEST(SparsePrefillGpuErrors, BadArgumentThrowsNamedError) {
  SparsePrefillHostData host(make_case(576, 62, 64, 256, 128, 40));
  const DeviceInputs inputs(host);
  DeviceOutputs outputs(inputs.params(), {});
  SparsePrefillParams p = inputs.params();
  outputs.point(p);

  struct BadArgument {
    const char* argument;
    void (*mutate)(SparsePrefillParams&);
  };
  const BadArgument bad_arguments[] = {
      {"head_dim_qk", [](SparsePrefillParams& q) { q.head_dim_qk = 320; }},
      {"num_heads_q", [](SparsePrefillParams& q) { q.num_heads_q = 129; }},
      {"q", [](SparsePrefillParams& q) { q.q = nullptr; }},
      {"topk", [](SparsePrefillParams& q) { q.topk = 0; }},
      {"kv_token_stride", [](SparsePrefillParams& q) { q.kv_token_stride = 8; }},
      {"lse", [](SparsePrefillParams& q) { q.lse = nullptr; }},
  };
  for (const BadArgument& bad : bad_arguments) {
    SparsePrefillParams broken = p;
    bad.mutate(broken);
    try {
      sparse_prefill(broken, nullptr);
      ADD_FAILURE() << bad.argument << ": sparse_prefill accepted a bad argument";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), bad.argument) << e.what();
    }
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // The valid call still works afterwards.
  run_sparse_prefill(inputs, outputs);
  const DownloadedOutputs got(outputs);
  expect_consistent_everywhere(host, outputs, got);
  const std::vector<RowRange> all = {{0, p.seqlen_q}};
  expect_matches_reference(host, all, compute_reference(host, all), outputs, got);
}

}  // namespace
}  // namespace flashmla
