// The C++ dense-decode API on the GPU against the CPU reference. Every case uses fresh random
// data, shuffled pages (any page size, or a non-paged cache), NaN in every cache row the
// kernels must not read, garbage in unused block-table entries, and poisoned (NaN) outputs, so
// that unwritten or wrongly read elements show up as NaN. Bad lengths and table entries (found
// on the device) must mark their sequence NaN, fill the device error record and, in checked
// mode, throw. Needs a compute capability 9.0 GPU; built by CMake, run by hand/scripts.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../dense_decode_case.h"
#include "decode_gpu_common.h"
#include "device_buffer.h"
#include "flashmla/flashmla.h"
#include "reference/dense_decode_reference.h"
#include "reference/half_convert.h"

namespace flashmla {
namespace {

using testing::check_cuda;
using testing::DenseDecodeCase;
using testing::DenseDecodeHostData;
using testing::DeviceBuffer;
using testing::FailureLog;
using DeviceOutputs = testing::DeviceOutputs<DenseDecodeParams>;
using Reference = testing::DecodeReference;

// The inputs of one case on the device, and params pointing at them.
class DeviceInputs {
 public:
  explicit DeviceInputs(const DenseDecodeHostData& host)
      : q_(host.q.size()),
        k_cache_(host.k_cache.size()),
        block_table_(host.block_table.size()),
        cache_seqlens_(host.cache_seqlens.size()) {
    q_.upload(host.q);
    k_cache_.upload(host.k_cache);
    block_table_.upload(host.block_table);
    cache_seqlens_.upload(host.cache_seqlens);
    params_ = host.params();  // strides and sizes; pointers replaced below
    params_.q = q_.get();
    params_.k_cache = k_cache_.get();
    params_.block_table = host.paged() ? block_table_.get() : nullptr;  // null: non-paged
    params_.cache_seqlens = cache_seqlens_.get();
  }
  const DenseDecodeParams& params() const { return params_; }
  const int32_t* cache_seqlens() const { return cache_seqlens_.get(); }

 private:
  DeviceBuffer<uint16_t> q_, k_cache_;
  DeviceBuffer<int32_t> block_table_, cache_seqlens_;
  DenseDecodeParams params_;
};

// The split-KV plan of one batch: computed once, reusable by every layer.
struct DevicePlan {
  DevicePlan(const DenseDecodeParams& p, const int32_t* device_seqlens)
      : shape{p.batch, p.seqlen_q * p.num_heads_q / p.num_heads_kv, p.num_heads_kv, 0},
        num_parts(decode_num_parts(shape)),
        metadata(size_t(num_parts) * kDecodeMetadataInts),
        num_splits(size_t(p.batch) + 1) {
    plan_decode(shape, device_seqlens, p.page_block_size, metadata.get(), num_splits.get(),
                nullptr);
  }
  DecodeScheduleShape shape;
  int num_parts;
  DeviceBuffer<int32_t> metadata;
  DeviceBuffer<int32_t> num_splits;
};

// Launches dense_decode with a given plan, into poisoned outputs, and waits for it. Leaves
// the device error record alone; `checked` as in DenseDecodeParams (may throw).
void launch_dense_decode(const DeviceInputs& inputs, const DevicePlan& plan, DeviceOutputs& outputs,
                         bool checked = false) {
  DenseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  workspace.fill_bytes(0xff);  // the kernels must not depend on its contents
  p.workspace = workspace.get();
  p.checked = checked;
  outputs.poison();
  dense_decode(p, nullptr);
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after dense_decode");
  check_cuda(cudaGetLastError(), "cudaGetLastError after dense_decode");
}

std::string describe(const DeviceErrorRecord& r) {
  std::ostringstream s;
  s << "{kind " << int(r.kind) << ", operation " << int(r.operation) << ", batch_index "
    << r.batch_index << ", position " << r.position << ", value " << r.value << ", limit "
    << r.limit << "} \"" << describe_device_error(r) << "\"";
  return s.str();
}

// Reads and clears the device error record, which must be empty.
void expect_no_device_error(const char* after) {
  const DeviceErrorRecord r = read_device_error_record(/*clear=*/true, nullptr);
  EXPECT_EQ(r.kind, DeviceErrorKind::kNone) << after << ": " << describe(r);
}

// Runs dense_decode on valid inputs: the device error record stays empty (entries past each
// length hold garbage that must not count).
void run_dense_decode(const DeviceInputs& inputs, const DevicePlan& plan, DeviceOutputs& outputs) {
  clear_device_error_record(nullptr);
  launch_dense_decode(inputs, plan, outputs);
  expect_no_device_error("dense_decode on valid inputs");
}

// ---------------------------------------------------------------------------------------
// Comparison against the reference.

double logit_magnitude(const DenseDecodeHostData& host) {
  const DenseDecodeParams p = host.params();
  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto norm = [&](const uint16_t* row) {
    double sum = 0.0;
    for (int d = 0; d < p.head_dim_qk; ++d) {
      const double x = reference::half_bits_to_float(p.dtype, row[d]);
      sum += x * x;
    }
    return std::sqrt(sum);
  };
  double q_max = 0.0, k_max = 0.0;
  for (int i = 0; i < p.batch; ++i) {
    for (int j = 0; j < p.seqlen_q; ++j) {
      for (int h = 0; h < p.num_heads_q; ++h) {
        q_max = std::max(q_max,
                         norm(q + i * p.q_batch_stride + j * p.q_seq_stride + h * p.q_head_stride));
      }
    }
    for (int t = 0; t < p.cache_seqlens[i]; ++t) {
      for (int h = 0; h < p.num_heads_kv; ++h) k_max = std::max(k_max, norm(host.k_row(i, t, h)));
    }
  }
  return double(p.softmax_scale) * q_max * k_max;
}

Reference compute_reference(const DenseDecodeHostData& host) {
  const DenseDecodeParams p = host.params();
  Reference r;
  r.out.resize(size_t(p.batch) * p.seqlen_q * p.num_heads_q * p.head_dim_v);
  r.lse.resize(size_t(p.batch) * p.num_heads_q * p.seqlen_q);
  r.out_abs.resize(r.out.size());
  r.max_logit.resize(r.lse.size());
  reference::dense_decode_reference(p, r.out.data(), r.lse.data(), r.out_abs.data(),
                                    r.max_logit.data());
  r.logit_magnitude = logit_magnitude(host);
  return r;
}

// Tolerances. An element passes the fixed rule (out: |err| < 1e-3 or |err| / |ref| < 2/128;
// lse: |err| < 1e-6 or |err| / |ref| < 8/65536) or the rounding rule:
//  - out: the kernels (like FlashMLA) round the softmax numerators P to the input dtype before
//    the P.V product, which alone allows |err| <= u * sum_t w_t |v_t| (u = 2^-8 for bf16,
//    2^-11 for fp16); the final rounding of out adds u * |ref|. With few tokens this exceeds
//    the fixed rule;
//  - lse: the fp32 logits are off by about 2^-24 * |logit| per rounding; with a small |lse|
//    this exceeds 1e-6, so allow 2^-21 * (|max logit| + |ref|).
// Elements passing only by the rounding rule are counted and reported, not failed.
bool out_within_fixed_tolerance(float err, float want) {
  return err < 1e-3f || err / std::fabs(want) < 2.f / 128;
}
bool lse_within_fixed_tolerance(float err, float want) {
  return err < 1e-6f || err / std::fabs(want) < 8.f / 65536;
}
double p_rounding_unit(ScalarType dtype) {
  return dtype == ScalarType::kBFloat16 ? 0x1p-8 : 0x1p-11;
}
constexpr double kLogitRoundingUnit = 0x1p-21;

// `tag` distinguishes the reported properties of several comparisons in one test. The
// sequences in `nan_sequences` (bad length or table entry) must instead be NaN in every out
// element (of d_v) and every lse element.
void expect_matches_reference(const DenseDecodeHostData& host, const Reference& ref,
                              const DeviceOutputs& outputs, const std::string& tag = "",
                              const std::vector<int>& nan_sequences = {}) {
  const DenseDecodeParams p = host.params();
  const int b = p.batch, s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const std::vector<uint16_t> out_bits = outputs.out.download();
  const std::vector<float> lse = outputs.lse.download();
  const uint16_t poison = 0xffff;
  const double u = p_rounding_unit(p.dtype);
  const char* dtype_name = p.dtype == ScalarType::kBFloat16 ? "bf16" : "fp16";

  const auto marked_nan = [&](int i) {
    return std::find(nan_sequences.begin(), nan_sequences.end(), i) != nan_sequences.end();
  };
  FailureLog out_log, lse_log, padding_log, nan_log;
  int64_t out_rounding_only = 0, lse_rounding_only = 0;
  double dot = 0, norm_got = 0, norm_ref = 0;
  for (int i = 0; i < b; ++i) {
    for (int j = 0; j < s_q; ++j) {
      for (int h = 0; h < h_q; ++h) {
        const float row_lse = ref.lse[(size_t(i) * h_q + h) * s_q + j];
        const size_t row = (size_t(i) * s_q + j) * h_q + h;
        const uint16_t* got_row = &out_bits[row * outputs.head_stride];
        for (int64_t d = d_v; d < outputs.head_stride; ++d) {
          if (got_row[d] != poison)
            padding_log.add("out padding [", i, ", ", j, ", ", h, ", ", d, "]");
        }
        if (marked_nan(i)) {
          for (int d = 0; d < d_v; ++d) {
            const float got = reference::half_bits_to_float(p.dtype, got_row[d]);
            if (!std::isnan(got)) nan_log.add("out[", i, ", ", j, ", ", h, ", ", d, "] = ", got);
          }
          continue;
        }
        for (int d = 0; d < d_v; ++d) {
          const float got = reference::half_bits_to_float(p.dtype, got_row[d]);
          const float want = ref.out[row * d_v + d];
          const float err = std::fabs(got - want);
          bool ok;
          if (std::isinf(row_lse)) {
            ok = got == 0.f;  // nothing to attend: exactly 0
          } else if (out_within_fixed_tolerance(err, want)) {
            ok = true;
          } else {
            const double bound = u * (double(ref.out_abs[row * d_v + d]) + std::fabs(want));
            ok = double(err) <= bound;
            if (ok && !std::isnan(got)) ++out_rounding_only;
          }
          if (!ok || std::isnan(got)) {
            out_log.add("out[", i, ", ", j, ", ", h, ", ", d, "] = ", got, ", reference ", want,
                        ", sum w|v| ", ref.out_abs[row * d_v + d]);
          }
          dot += double(got) * want;
          norm_got += double(got) * got;
          norm_ref += double(want) * want;
        }
      }
    }
  }
  EXPECT_EQ(out_log.count(), 0) << out_log.report("out");
  EXPECT_EQ(padding_log.count(), 0) << padding_log.report("out row padding was written");
  if (norm_ref > 0 || norm_got > 0) {
    const double cosine = dot / std::sqrt(norm_got * norm_ref);
    EXPECT_LT(1.0 - cosine, 1e-5) << "cosine similarity of out vs reference: " << cosine;
  }

  for (int i = 0; i < b; ++i) {
    for (int h = 0; h < h_q; ++h) {
      for (int j = 0; j < s_q; ++j) {
        const size_t e = (size_t(i) * h_q + h) * s_q + j;
        const float got = lse[e], want = ref.lse[e];
        if (marked_nan(i)) {
          if (!std::isnan(got)) nan_log.add("lse[", i, ", ", h, ", ", j, "] = ", got);
          continue;
        }
        const float err = std::fabs(got - want);
        bool ok;
        if (std::isinf(want)) {
          ok = got == want;
        } else if (lse_within_fixed_tolerance(err, want)) {
          ok = true;
        } else {
          const double bound = kLogitRoundingUnit * (std::fabs(double(ref.max_logit[e])) +
                                                     std::fabs(want) + ref.logit_magnitude);
          ok = double(err) <= bound;
          if (ok && !std::isnan(got)) ++lse_rounding_only;
        }
        if (!ok || std::isnan(got)) {
          lse_log.add("lse[", i, ", ", h, ", ", j, "] = ", got, ", reference ", want,
                      ", max logit ", ref.max_logit[e]);
        }
      }
    }
  }
  EXPECT_EQ(lse_log.count(), 0) << lse_log.report("lse");
  EXPECT_EQ(nan_log.count(), 0) << nan_log.report("not NaN in a sequence with a bad length/entry");

  testing::report_rounding_only(tag, dtype_name, out_rounding_only, lse_rounding_only);
}

// ---------------------------------------------------------------------------------------
// Cases.

struct GpuCase {
  std::string name;
  DenseDecodeCase config;
  int64_t out_head_pad = 0;  // padding after each out row (must not be written)
  bool two_layers = false;   // run two layers (different q / cache) with one plan
};

void PrintTo(const GpuCase& c, std::ostream* os) {
  *os << c.name;
}

DenseDecodeCase make_case(ScalarType dtype, int d_qk, int h_q, int h_kv, int s_q, bool causal,
                          std::vector<int32_t> seqlens, uint32_t seed) {
  DenseDecodeCase c;
  c.dtype = dtype;
  c.head_dim_qk = d_qk;
  c.num_heads_q = h_q;
  c.num_heads_kv = h_kv;
  c.seqlen_q = s_q;
  c.causal = causal;
  c.seqlens = std::move(seqlens);
  c.seed = seed;
  return c;
}

DenseDecodeCase with_page(DenseDecodeCase c, int page_block_size) {
  c.page_block_size = page_block_size;
  return c;
}

// A non-paged cache of `s_k_max` tokens per sequence (rows past each length are NaN).
DenseDecodeCase non_paged(DenseDecodeCase c, int s_k_max) {
  c.non_paged = true;
  c.page_block_size = s_k_max;
  return c;
}

std::string case_name(const DenseDecodeCase& c) {
  std::ostringstream s;
  s << (c.dtype == ScalarType::kBFloat16 ? "bf16" : "fp16") << "_d" << c.head_dim_qk << "_hq"
    << c.num_heads_q << "_hkv" << c.num_heads_kv << "_sq" << c.seqlen_q
    << (c.causal ? "_causal" : "") << "_b" << c.batch();
  return s.str();
}

// The cross product of dtypes, widths, head layouts and query lengths, each over a batch that
// holds the edge lengths (0, 1, 63, 64, 65, below s_q) plus random ones.
std::vector<GpuCase> grid_cases() {
  const std::pair<int, int> heads[] = {{1, 1},   {3, 1}, {16, 1}, {64, 1},
                                       {128, 1}, {8, 2}, {6, 3},  {128, 2}};
  std::vector<GpuCase> cases;
  uint32_t seed = 1000;
  for (ScalarType dtype : {ScalarType::kBFloat16, ScalarType::kFloat16}) {
    for (int d_qk : {576, 512}) {
      for (const auto& [h_q, h_kv] : heads) {
        for (int s_q = 1; s_q <= 4; ++s_q) {
          for (bool causal : {false, true}) {
            if (s_q == 1 && causal && h_q != 16) continue;  // causal is ignored for s_q = 1
            std::mt19937 rng(++seed);
            std::vector<int32_t> lens = {
                0, 1, 63, 64, 65, s_q - 1, std::uniform_int_distribution<int32_t>(100, 1000)(rng)};
            const int extra = static_cast<int>(seed % 4);
            for (int e = 0; e < extra; ++e) {
              lens.push_back(std::uniform_int_distribution<int32_t>(1, 300)(rng));
            }
            std::shuffle(lens.begin(), lens.end(), rng);
            DenseDecodeCase c = make_case(dtype, d_qk, h_q, h_kv, s_q, causal, lens, seed);
            cases.push_back({case_name(c), c});
          }
        }
      }
    }
  }
  return cases;
}

std::vector<GpuCase> special_cases() {
  constexpr auto bf16 = ScalarType::kBFloat16;
  constexpr auto fp16 = ScalarType::kFloat16;
  using testing::varlen_seqlens;
  std::vector<GpuCase> cases;
  const auto add = [&](std::string name, DenseDecodeCase c) {
    cases.push_back({std::move(name), std::move(c)});
  };
  add("long_32k_hq128", make_case(bf16, 576, 128, 1, 1, false, {32768 + 17}, 1));
  add("long_128k_b2_causal", make_case(bf16, 576, 16, 1, 2, true, {131072, 40000}, 2));
  add("long_fp16_d512_hkv2", make_case(fp16, 512, 8, 2, 1, false, {70001, 3}, 3));
  add("anchor_like_b16_hq128",
      make_case(bf16, 576, 128, 1, 1, false, varlen_seqlens(16, 4096, 1, 4), 4));
  add("anchor_like_b16_sq2_causal",
      make_case(bf16, 576, 128, 1, 2, true, varlen_seqlens(16, 2048, 2, 5), 5));
  add("anchor_like_b12_hq64_fp16",
      make_case(fp16, 576, 64, 1, 1, false, varlen_seqlens(12, 3000, 1, 6), 6));
  add("many_short_seqs_b64",
      make_case(bf16, 576, 16, 1, 1, false, varlen_seqlens(64, 60, 0, 7), 7));
  add("all_empty", make_case(bf16, 576, 16, 1, 2, true, {0, 0, 0}, 8));
  add("lengths_below_s_q", make_case(fp16, 512, 16, 1, 4, true, {0, 1, 2, 3, 4, 5}, 9));
  add("single_token", make_case(bf16, 576, 128, 1, 1, false, {1}, 10));

  DenseDecodeCase page128 =
      make_case(bf16, 576, 64, 1, 2, true, varlen_seqlens(8, 1000, 2, 11), 11);
  page128.page_block_size = 128;
  add("page128", page128);
  DenseDecodeCase page128_fp16 = make_case(fp16, 512, 6, 3, 3, false, {129, 128, 127, 0, 1}, 12);
  page128_fp16.page_block_size = 128;
  add("page128_fp16_hq6_hkv3", page128_fp16);

  DenseDecodeCase sharp = make_case(bf16, 576, 16, 1, 1, false, varlen_seqlens(4, 800, 1, 13), 13);
  sharp.softmax_scale = 0.3f;  // logits of std ~7: a very peaked softmax
  add("sharp_softmax", sharp);

  // Strides larger than dense (multiples of 8 elements, as the kernels require).
  DenseDecodeCase padded = make_case(bf16, 576, 16, 1, 2, true, {300, 64, 0, 1000}, 14);
  padded.q_head_pad = 64;
  padded.q_seq_pad = 8;
  padded.q_batch_pad = 16;
  padded.k_head_pad = 64;
  padded.k_token_pad = 8;
  padded.k_block_pad = 8;
  padded.table_pad = 3;
  padded.extra_table_columns = 4;
  cases.push_back({"padded_strides", padded, /*out_head_pad=*/64});
  DenseDecodeCase padded_hkv = make_case(fp16, 512, 128, 2, 1, false, {129, 1, 700}, 15);
  padded_hkv.k_head_pad = 8;
  padded_hkv.k_token_pad = 16;
  padded_hkv.q_head_pad = 8;
  cases.push_back({"padded_strides_fp16_hkv2", padded_hkv, /*out_head_pad=*/8});

  // One plan, two layers.
  cases.push_back({"two_layers_bf16",
                   make_case(bf16, 576, 128, 1, 2, true, varlen_seqlens(8, 700, 2, 16), 16), 0,
                   true});
  cases.push_back({"two_layers_fp16_d512",
                   make_case(fp16, 512, 16, 1, 1, false, varlen_seqlens(5, 2000, 1, 17), 17), 0,
                   true});
  return cases;
}

// Page sizes other than multiples of 64 (tiles spanning several pages, pages not aligned to
// tiles), non-paged caches, a sequence split over many parts, and empty batches.
std::vector<GpuCase> limits_cases() {
  constexpr auto bf16 = ScalarType::kBFloat16;
  constexpr auto fp16 = ScalarType::kFloat16;
  using testing::varlen_seqlens;
  std::vector<GpuCase> cases;
  const auto add = [&](std::string name, DenseDecodeCase c) {
    cases.push_back({std::move(name), std::move(c)});
  };
  // Page 1: every token its own page (lengths kept <= 700: the reference and the table grow).
  add("page1_bf16_hq16",
      with_page(make_case(bf16, 576, 16, 1, 1, false, {0, 1, 63, 64, 65, 700, 257}, 101), 1));
  add("page1_fp16_d512_hq128_hkv2_sq2_causal",
      with_page(make_case(fp16, 512, 128, 2, 2, true, {0, 1, 2, 63, 64, 65, 640}, 102), 1));
  add("page1_bf16_hq128_sq4_causal",
      with_page(make_case(bf16, 576, 128, 1, 4, true, {3, 4, 5, 129, 500}, 103), 1));
  // Page 2.
  add("page2_bf16_hq128",
      with_page(make_case(bf16, 576, 128, 1, 1, false, {0, 1, 63, 64, 65, 700, 3}, 104), 2));
  add("page2_fp16_hq16_hkv2_sq3_causal",
      with_page(make_case(fp16, 576, 16, 2, 3, true, {0, 1, 2, 3, 64, 65, 333}, 105), 2));
  // Page 16.
  add("page16_fp16_hq16_sq2_causal",
      with_page(make_case(fp16, 576, 16, 1, 2, true, {0, 1, 63, 64, 65, 2000, 3001}, 106), 16));
  add("page16_bf16_d512_hq128_hkv2",
      with_page(make_case(bf16, 512, 128, 2, 1, false, {0, 1, 15, 16, 17, 63, 64, 65, 1500}, 107),
                16));
  // Page 32.
  add("page32_bf16_hq128_sq2_causal",
      with_page(make_case(bf16, 576, 128, 1, 2, true, {0, 1, 31, 32, 33, 63, 64, 65, 4000}, 108),
                32));
  add("page32_fp16_hq16_hkv2_sq3_causal",
      with_page(make_case(fp16, 576, 16, 2, 3, true, varlen_seqlens(10, 1500, 0, 109), 109), 32));
  // Page 53: not dividing 64 nor divided by it; tiles straddle pages at moving offsets.
  add("page53_bf16_hq16_sq3_causal",
      with_page(
          make_case(bf16, 576, 16, 1, 3, true, {0, 1, 52, 53, 54, 63, 64, 65, 106, 2500}, 110),
          53));
  add("page53_fp16_d512_hq128",
      with_page(make_case(fp16, 512, 128, 1, 1, false, {0, 1, 63, 64, 65, 3000, 159}, 111), 53));
  add("page53_bf16_hq128_hkv2_sq2",
      with_page(make_case(bf16, 576, 128, 2, 2, false, varlen_seqlens(6, 2000, 1, 112), 112), 53));
  // Page 96 (a multiple of 32, not of 64) and 100.
  add("page96_bf16_hq64_sq2_causal",
      with_page(make_case(bf16, 576, 64, 1, 2, true, {95, 96, 97, 191, 192, 193, 1000}, 113), 96));
  add("page100_fp16_hq16",
      with_page(make_case(fp16, 576, 16, 1, 1, false, {0, 99, 100, 101, 2345}, 114), 100));
  // Page 256 (a multiple of 64, larger than a tile) with lengths in the thousands.
  add("page256_bf16_hq128_sq2_causal",
      with_page(make_case(bf16, 576, 128, 1, 2, true, {0, 1, 63, 64, 65, 255, 256, 257, 5000}, 115),
                256));
  add("page256_fp16_d512_hq16_hkv2",
      with_page(make_case(fp16, 512, 16, 2, 1, false, {0, 1, 64, 65, 511, 512, 513, 3000}, 116),
                256));
  // Odd page with padded strides.
  DenseDecodeCase page53_padded =
      with_page(make_case(bf16, 576, 16, 1, 2, true, {300, 53, 0, 1000, 54}, 117), 53);
  page53_padded.q_head_pad = 64;
  page53_padded.k_head_pad = 64;
  page53_padded.k_token_pad = 8;
  page53_padded.k_block_pad = 24;
  page53_padded.table_pad = 5;
  page53_padded.extra_table_columns = 3;
  cases.push_back({"page53_padded_strides", page53_padded, /*out_head_pad=*/8});

  // Non-paged caches: k_cache [b, s_k_max, h_kv, d], block_table null.
  add("non_paged_50_bf16_hq16_sq2_causal",
      non_paged(make_case(bf16, 576, 16, 1, 2, true, {0, 1, 49, 50, 17}, 118), 50));
  add("non_paged_1000_fp16_hq128_hkv2",
      non_paged(make_case(fp16, 576, 128, 2, 1, false, {0, 1, 63, 64, 65, 999, 1000, 500}, 119),
                1000));
  add("non_paged_4100_bf16_hq128",
      non_paged(make_case(bf16, 576, 128, 1, 1, false, {4100, 4099, 0, 64, 2048, 1}, 120), 4100));
  add("non_paged_4100_fp16_d512_hq16_sq4_causal",
      non_paged(make_case(fp16, 512, 16, 1, 4, true, {4100, 3, 4, 5, 777}, 121), 4100));
  add("non_paged_1_bf16_hq16", non_paged(make_case(bf16, 576, 16, 1, 1, false, {1, 0, 1}, 122), 1));
  DenseDecodeCase flat_padded =
      non_paged(make_case(bf16, 576, 16, 1, 2, true, {300, 64, 0, 1000}, 123), 1000);
  flat_padded.q_head_pad = 64;
  flat_padded.k_head_pad = 64;
  flat_padded.k_token_pad = 8;
  flat_padded.k_block_pad = 8;
  cases.push_back({"non_paged_padded_strides", flat_padded, /*out_head_pad=*/64});
  cases.push_back({"non_paged_two_layers",
                   non_paged(make_case(bf16, 576, 64, 1, 2, true, {50, 1200, 7}, 124), 1200), 0,
                   true});

  // One long sequence split over many parts, with small pages.
  add("split_30000_page16_hq128",
      with_page(make_case(bf16, 576, 128, 1, 1, false, {30000}, 125), 16));
  add("split_30000_page53_hq16_sq2_causal",
      with_page(make_case(fp16, 576, 16, 1, 2, true, {30000, 5}, 126), 53));

  // Empty batches: nothing to compute.
  add("batch0", make_case(bf16, 576, 128, 1, 1, false, {}, 127));
  add("batch0_page53_causal", with_page(make_case(fp16, 512, 16, 1, 2, true, {}, 128), 53));
  add("batch0_non_paged", non_paged(make_case(bf16, 576, 16, 1, 1, false, {}, 129), 64));
  return cases;
}

class DenseDecodeGpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(DenseDecodeGpu, MatchesReference) {
  const GpuCase& gpu_case = GetParam();
  DenseDecodeHostData host(gpu_case.config);
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
  DeviceOutputs outputs(inputs.params(), gpu_case.out_head_pad);
  run_dense_decode(inputs, plan, outputs);
  expect_matches_reference(host, compute_reference(host), outputs);

  if (gpu_case.two_layers) {
    // A second layer: other q and cache, same lengths, the same plan.
    DenseDecodeCase second = gpu_case.config;
    second.seed += 7777;
    DenseDecodeHostData host2(second);
    const DeviceInputs inputs2(host2);
    DeviceOutputs outputs2(inputs2.params(), gpu_case.out_head_pad);
    run_dense_decode(inputs2, plan, outputs2);
    SCOPED_TRACE("second layer");
    expect_matches_reference(host2, compute_reference(host2), outputs2, "_layer2");
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Grid, DenseDecodeGpu, ::testing::ValuesIn(grid_cases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Special, DenseDecodeGpu, ::testing::ValuesIn(special_cases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Limits, DenseDecodeGpu, ::testing::ValuesIn(limits_cases()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Bad arguments: an Error naming the argument, nothing launched, the context still healthy.

TEST(DenseDecodeGpuErrors, BadArgumentThrowsNamedError) {
  DenseDecodeHostData host(make_case(ScalarType::kBFloat16, 576, 16, 1, 1, false, {100}, 20));
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
  DeviceOutputs outputs(inputs.params(), 0);

  DenseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);  // no row padding: out_head_stride = d_v
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  p.workspace = workspace.get();

  struct BadArgument {
    const char* argument;
    void (*mutate)(DenseDecodeParams&);
  };
  const BadArgument bad_arguments[] = {
      {"head_dim_qk", [](DenseDecodeParams& q) { q.head_dim_qk = 320; }},
      {"page_block_size", [](DenseDecodeParams& q) { q.page_block_size = 0; }},
      // Non-paged (null table) needs num_blocks == batch (1 here).
      {"num_blocks",
       [](DenseDecodeParams& q) { q.block_table = nullptr, q.max_blocks_per_seq = 1; }},
      {"batch", [](DenseDecodeParams& q) { q.batch = -1; }},
      {"q", [](DenseDecodeParams& q) { q.q = nullptr; }},
      {"num_heads_q", [](DenseDecodeParams& q) { q.num_heads_q = 15, q.num_heads_kv = 2; }},
      {"workspace_bytes", [](DenseDecodeParams& q) { q.workspace_bytes = 1; }},
  };
  for (const BadArgument& bad : bad_arguments) {
    DenseDecodeParams broken = p;
    bad.mutate(broken);
    try {
      dense_decode(broken, nullptr);
      ADD_FAILURE() << bad.argument << ": dense_decode accepted a bad argument";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), bad.argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.argument), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // The valid call still works afterwards.
  outputs.poison();
  dense_decode(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_matches_reference(host, compute_reference(host), outputs);
}

// ---------------------------------------------------------------------------------------
// Empty batches: nothing launched, null pointers accepted.

TEST(DenseDecodeGpuLimits, EmptyBatchIsANoOpWithNullPointers) {
  clear_device_error_record(nullptr);
  // The plan of an empty batch (cache_seqlens may be null).
  const DecodeScheduleShape shape{0, 128, 1, 0};
  int num_parts = -1;
  ASSERT_NO_THROW(num_parts = decode_num_parts(shape));
  ASSERT_GE(num_parts, 0);
  DeviceBuffer<int32_t> metadata(size_t(std::max(num_parts, 1)) * kDecodeMetadataInts);
  DeviceBuffer<int32_t> num_splits(1);
  EXPECT_NO_THROW(plan_decode(shape, nullptr, 64, metadata.get(), num_splits.get(), nullptr));
  check_cuda(cudaDeviceSynchronize(), "after plan_decode of an empty batch");

  for (bool checked : {false, true}) {
    for (const bool null_table : {false, true}) {
      DenseDecodeParams p;  // every pointer null, every stride 0
      p.dtype = ScalarType::kBFloat16;
      p.batch = 0;
      p.seqlen_q = 2;
      p.num_heads_q = 128;
      p.num_heads_kv = 1;
      p.head_dim_qk = 576;
      p.head_dim_v = 512;
      p.page_block_size = null_table ? 4100 : 53;
      p.softmax_scale = 0.04f;
      p.causal = true;
      p.checked = checked;
      EXPECT_NO_THROW(dense_decode(p, nullptr)) << "checked " << checked;
      // With the plan above.
      p.tile_scheduler_metadata = metadata.get();
      p.num_splits = num_splits.get();
      p.num_parts = num_parts;
      EXPECT_NO_THROW(dense_decode(p, nullptr)) << "checked " << checked;
    }
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  expect_no_device_error("empty batch");
}

// ---------------------------------------------------------------------------------------
// Bad lengths and table entries, found on the device: the sequence is NaN, the others are
// right, the device error record says what and where, and checked mode throws.

struct ExpectedDeviceError {
  DeviceErrorRecord record;  // operation kDenseDecode
  const char* argument;      // "cache_seqlens" or "block_table"
  std::string message_part;  // e.g. "block_table[1][3] = -1"
};

ExpectedDeviceError seqlen_error(DeviceErrorKind kind, int i, int64_t value, int64_t limit) {
  ExpectedDeviceError e;
  e.record.kind = kind;
  e.record.operation = DeviceErrorOperation::kDenseDecode;
  e.record.batch_index = i;
  e.record.position = -1;
  e.record.value = value;
  e.record.limit = limit;
  e.argument = "cache_seqlens";
  e.message_part = "cache_seqlens[" + std::to_string(i) + "] = " + std::to_string(value);
  return e;
}

// Sets cache_seqlens[i] = value and says what the device must find.
ExpectedDeviceError set_length(DenseDecodeHostData& host, int i, int32_t value) {
  host.cache_seqlens[i] = value;
  if (value < 0) return seqlen_error(DeviceErrorKind::kNegativeSeqlen, i, value, 0);
  const DenseDecodeParams p = host.params();
  const int64_t capacity = int64_t(p.max_blocks_per_seq) * p.page_block_size;
  return seqlen_error(DeviceErrorKind::kSeqlenBeyondCapacity, i, value, capacity);
}

// Sets block_table[i][j] = value (a column sequence i uses) and says what the device must find.
ExpectedDeviceError set_entry(DenseDecodeHostData& host, int i, int j, int32_t value) {
  const DenseDecodeParams p = host.params();
  EXPECT_LT(int64_t(j) * p.page_block_size, host.cache_seqlens[i]) << "column not used";
  host.block_table[size_t(i) * host.table_stride() + j] = value;
  ExpectedDeviceError e;
  e.record.kind = DeviceErrorKind::kBlockTableEntryOutOfRange;
  e.record.operation = DeviceErrorOperation::kDenseDecode;
  e.record.batch_index = i;
  e.record.position = j;
  e.record.value = value;
  e.record.limit = p.num_blocks;
  e.argument = "block_table";
  e.message_part = "block_table[" + std::to_string(i) + "][" + std::to_string(j) +
                   "] = " + std::to_string(value);
  return e;
}

void expect_record(const DeviceErrorRecord& got, const DeviceErrorRecord& want) {
  EXPECT_EQ(got.kind, want.kind) << describe(got);
  EXPECT_EQ(got.operation, want.operation) << describe(got);
  EXPECT_EQ(got.batch_index, want.batch_index) << describe(got);
  EXPECT_EQ(got.position, want.position) << describe(got);
  EXPECT_EQ(got.value, want.value) << describe(got);
  EXPECT_EQ(got.limit, want.limit) << describe(got);
}

struct BadValueCase {
  std::string name;
  DenseDecodeCase config;
  // Breaks the host data after the reference is computed (on the valid data).
  std::function<ExpectedDeviceError(DenseDecodeHostData&)> corrupt;
};

void PrintTo(const BadValueCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<BadValueCase> bad_value_cases() {
  constexpr auto bf16 = ScalarType::kBFloat16;
  constexpr auto fp16 = ScalarType::kFloat16;
  const DenseDecodeCase small = make_case(bf16, 576, 16, 1, 2, true, {100, 200, 70, 300}, 40);
  // One sequence of 469 pages of 64, split over many parts, and two short ones.
  const DenseDecodeCase split = make_case(bf16, 576, 128, 1, 1, false, {30000, 100, 0}, 41);
  std::vector<BadValueCase> cases = {
      {"negative_length", small, [](auto& h) { return set_length(h, 1, -5); }},
      {"negative_length_int32_min", small,
       [](auto& h) { return set_length(h, 3, std::numeric_limits<int32_t>::min()); }},
      {"length_capacity_plus_one", small,
       [](auto& h) {
         const DenseDecodeParams p = h.params();
         return set_length(h, 2, p.max_blocks_per_seq * p.page_block_size + 1);
       }},
      {"length_int32_max", small,
       [](auto& h) { return set_length(h, 0, std::numeric_limits<int32_t>::max()); }},
      {"entry_minus_one", small, [](auto& h) { return set_entry(h, 1, 3, -1); }},
      {"entry_num_blocks", small,
       [](auto& h) { return set_entry(h, 3, 0, h.params().num_blocks); }},
      {"entry_int32_max", small,
       [](auto& h) { return set_entry(h, 0, 1, std::numeric_limits<int32_t>::max()); }},
      {"entry_late_page_of_split_sequence", split,
       [](auto& h) { return set_entry(h, 0, 400, h.params().num_blocks + 1000); }},
      {"entry_last_page_of_split_sequence", split,
       [](auto& h) { return set_entry(h, 0, 468, -2); }},
      {"length_beyond_capacity_split", split,
       [](auto& h) {
         const DenseDecodeParams p = h.params();
         return set_length(h, 0, p.max_blocks_per_seq * p.page_block_size + 64);
       }},
      {"page1_entry", with_page(make_case(fp16, 512, 16, 1, 1, false, {5, 30, 9}, 42), 1),
       [](auto& h) { return set_entry(h, 1, 29, -7); }},
      {"page1_length_beyond_capacity",
       with_page(make_case(fp16, 512, 16, 1, 1, false, {5, 30, 9}, 43), 1),
       [](auto& h) { return set_length(h, 2, h.params().max_blocks_per_seq + 1); }},
      {"page16_entry_late_page_of_split_sequence",
       with_page(make_case(bf16, 576, 128, 1, 1, false, {30000}, 44), 16),
       [](auto& h) { return set_entry(h, 0, 1800, h.params().num_blocks); }},
      {"page53_entry", with_page(make_case(bf16, 576, 16, 2, 2, true, {54, 200, 10}, 45), 53),
       [](auto& h) { return set_entry(h, 1, 3, int32_t(1) << 30); }},
      {"page53_negative_length",
       with_page(make_case(bf16, 576, 16, 2, 2, true, {54, 200, 10}, 46), 53),
       [](auto& h) { return set_length(h, 0, -1); }},
      {"non_paged_length_beyond_capacity",
       non_paged(make_case(fp16, 576, 16, 1, 1, false, {50, 10, 3}, 47), 50),
       [](auto& h) { return set_length(h, 1, 51); }},
      {"non_paged_negative_length",
       non_paged(make_case(bf16, 576, 128, 1, 2, true, {4100, 10, 3}, 48), 4100),
       [](auto& h) { return set_length(h, 2, -1); }},
  };
  return cases;
}

class DenseDecodeGpuBadValues : public ::testing::TestWithParam<BadValueCase> {};

TEST_P(DenseDecodeGpuBadValues, MarksTheSequenceAndRecordsTheError) {
  if (checked_mode_from_environment()) {
    GTEST_SKIP() << "needs unchecked calls: unset FLASH_MLA_CHECKED";
  }
  const BadValueCase& bad = GetParam();
  DenseDecodeHostData host(bad.config);
  const Reference ref = compute_reference(host);  // of the valid data
  const ExpectedDeviceError want = bad.corrupt(host);
  const int i = want.record.batch_index;
  // The plan is made from the same (bad) lengths, as a caller would.
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
  DeviceOutputs outputs(inputs.params(), 0);

  // Unchecked: no throw; sequence i is NaN, the others are right.
  clear_device_error_record(nullptr);
  ASSERT_NO_THROW(launch_dense_decode(inputs, plan, outputs));
  expect_matches_reference(host, ref, outputs, "", {i});
  const DeviceErrorRecord got = read_device_error_record(/*clear=*/true, nullptr);
  expect_record(got, want.record);
  const std::string description = describe_device_error(got);
  EXPECT_NE(description.find(want.message_part), std::string::npos) << description;
  EXPECT_EQ(std::string(device_error_argument(got.kind)), want.argument);
  expect_no_device_error("after read_device_error_record(clear = true)");

  // Checked: the same results, then an Error naming the argument, sequence and value; the
  // record is cleared.
  {
    SCOPED_TRACE("checked");
    try {
      launch_dense_decode(inputs, plan, outputs, /*checked=*/true);
      ADD_FAILURE() << "checked dense_decode did not throw for " << want.message_part;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::kInvalidArgument) << e.what();
      EXPECT_EQ(e.argument(), want.argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(want.message_part), std::string::npos) << e.what();
    }
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after checked dense_decode");
    expect_matches_reference(host, ref, outputs, "_checked", {i});
    expect_no_device_error("after the checked call threw");
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(Cases, DenseDecodeGpuBadValues, ::testing::ValuesIn(bad_value_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(DenseDecodeGpuDeviceErrors, GarbagePastTheLengthIsNoError) {
  // Lengths that end exactly on a page boundary: the next column is garbage and never used.
  for (const int page : {1, 16, 53, 64, 256}) {
    SCOPED_TRACE("page " + std::to_string(page));
    DenseDecodeCase c = with_page(
        make_case(ScalarType::kBFloat16, 576, 16, 1, 2, true, {page, 2 * page, 0, 1}, 50), page);
    c.extra_table_columns = 3;
    DenseDecodeHostData host(c);
    const int64_t stride = host.table_stride();
    const int32_t garbage[] = {-1, host.params().num_blocks, std::numeric_limits<int32_t>::min()};
    for (int i = 0; i < c.batch(); ++i) {
      const int used = (c.seqlens[i] + page - 1) / page;
      for (int j = used; j < stride; ++j) host.block_table[size_t(i) * stride + j] = garbage[j % 3];
    }
    const Reference ref = compute_reference(host);
    const DeviceInputs inputs(host);
    const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
    DeviceOutputs outputs(inputs.params(), 0);
    clear_device_error_record(nullptr);
    EXPECT_NO_THROW(launch_dense_decode(inputs, plan, outputs, /*checked=*/true));
    expect_matches_reference(host, ref, outputs);
    expect_no_device_error("garbage past the lengths");
  }
}

TEST(DenseDecodeGpuDeviceErrors, NonPagedIgnoresTheTableStride) {
  DenseDecodeHostData host(
      non_paged(make_case(ScalarType::kFloat16, 576, 16, 1, 1, false, {0, 64, 1000}, 51), 1000));
  const Reference ref = compute_reference(host);
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
  DeviceOutputs outputs(inputs.params(), 0);
  DenseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);
  p.block_table_batch_stride = -12345;  // ignored without a table
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  p.workspace = workspace.get();
  p.checked = true;
  clear_device_error_record(nullptr);
  outputs.poison();
  EXPECT_NO_THROW(dense_decode(p, nullptr));
  check_cuda(cudaDeviceSynchronize(), "dense_decode");
  expect_matches_reference(host, ref, outputs);
  expect_no_device_error("non-paged");
}

TEST(DenseDecodeGpuDeviceErrors, RecordKeepsTheFirstErrorUntilCleared) {
  if (checked_mode_from_environment()) {
    GTEST_SKIP() << "needs unchecked calls: unset FLASH_MLA_CHECKED";
  }
  const DenseDecodeCase c =
      make_case(ScalarType::kBFloat16, 576, 16, 1, 1, false, {100, 200, 70, 300}, 52);
  DenseDecodeHostData first_host(c), second_host(c);
  const ExpectedDeviceError first = set_length(first_host, 1, -3);
  const ExpectedDeviceError second = set_entry(second_host, 3, 2, -1);
  const DeviceInputs first_inputs(first_host), second_inputs(second_host);
  const DevicePlan first_plan(first_inputs.params(), first_inputs.cache_seqlens());
  const DevicePlan second_plan(second_inputs.params(), second_inputs.cache_seqlens());
  DeviceOutputs outputs(first_inputs.params(), 0);

  clear_device_error_record(nullptr);
  launch_dense_decode(first_inputs, first_plan, outputs);
  launch_dense_decode(second_inputs, second_plan, outputs);
  // Reading without clearing keeps it.
  expect_record(read_device_error_record(/*clear=*/false, nullptr), first.record);
  // A valid call does not clear it either.
  DenseDecodeHostData valid_host(c);
  const DeviceInputs valid_inputs(valid_host);
  const DevicePlan valid_plan(valid_inputs.params(), valid_inputs.cache_seqlens());
  launch_dense_decode(valid_inputs, valid_plan, outputs);
  expect_record(read_device_error_record(/*clear=*/true, nullptr), first.record);

  // Once cleared, the next error is recorded.
  launch_dense_decode(second_inputs, second_plan, outputs);
  expect_record(read_device_error_record(/*clear=*/false, nullptr), second.record);
  clear_device_error_record(nullptr);
  expect_no_device_error("after clear_device_error_record");
}

TEST(DenseDecodeGpuDeviceErrors, CheckedModeIsSkippedWhileCapturing) {
  if (checked_mode_from_environment()) {
    GTEST_SKIP() << "needs unchecked calls: unset FLASH_MLA_CHECKED";
  }
  DenseDecodeHostData host(
      make_case(ScalarType::kBFloat16, 576, 16, 1, 1, false, {100, 200, 70}, 53));
  const Reference ref = compute_reference(host);
  const ExpectedDeviceError want = set_entry(host, 2, 1, -1);
  const DeviceInputs inputs(host);
  const DevicePlan plan(inputs.params(), inputs.cache_seqlens());
  DeviceOutputs outputs(inputs.params(), 0);
  DenseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  p.workspace = workspace.get();
  // Warm-up outside the capture (the first call caches the device properties it checks).
  dense_decode(p, nullptr);
  check_cuda(cudaDeviceSynchronize(), "warm-up");
  clear_device_error_record(nullptr);
  check_cuda(cudaDeviceSynchronize(), "setup");
  p.checked = true;

  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  EXPECT_NO_THROW(dense_decode(p, stream)) << "checked mode must not synchronise while capturing";
  check_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
  check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  for (int replay = 0; replay < 2; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    outputs.poison();
    check_cuda(cudaDeviceSynchronize(), "poison");  // the stream does not wait for the memset
    check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    const DeviceErrorRecord got = read_device_error_record(/*clear=*/true, stream);
    expect_record(got, want.record);
    expect_matches_reference(host, ref, outputs, "_graph", {want.record.batch_index});
  }
  // The record can be cleared on the stream, in order with the work.
  check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  clear_device_error_record(stream);
  EXPECT_EQ(read_device_error_record(/*clear=*/false, stream).kind, DeviceErrorKind::kNone);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace flashmla
