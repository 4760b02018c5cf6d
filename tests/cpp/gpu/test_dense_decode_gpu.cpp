// The C++ dense-decode API on the GPU against the CPU reference. Every case uses fresh random
// data, shuffled pages, NaN in every cache row the kernels must not read, garbage in unused
// block-table entries, and poisoned (NaN) outputs, so that unwritten or wrongly read elements
// show up as NaN. Needs a compute capability 9.0 GPU; built by CMake, run by hand/scripts.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
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
    params_.block_table = block_table_.get();
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

// Runs dense_decode with a given plan, into poisoned outputs.
void run_dense_decode(const DeviceInputs& inputs, const DevicePlan& plan, DeviceOutputs& outputs) {
  DenseDecodeParams p = inputs.params();
  testing::use_outputs_and_plan(p, outputs, plan);
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  DeviceBuffer<uint8_t> workspace(p.workspace_bytes);
  workspace.fill_bytes(0xff);  // the kernels must not depend on its contents
  p.workspace = workspace.get();
  outputs.poison();
  dense_decode(p, nullptr);
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after dense_decode");
  check_cuda(cudaGetLastError(), "cudaGetLastError after dense_decode");
}

// ---------------------------------------------------------------------------------------
// Comparison against the reference.

double logit_magnitude(const DenseDecodeParams& p) {
  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto* k = static_cast<const uint16_t*>(p.k_cache);
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
      const int64_t block = p.block_table[i * p.block_table_batch_stride + t / p.page_block_size];
      for (int h = 0; h < p.num_heads_kv; ++h) {
        k_max =
            std::max(k_max, norm(k + block * p.k_block_stride +
                                 (t % p.page_block_size) * p.k_token_stride + h * p.k_head_stride));
      }
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
  r.logit_magnitude = logit_magnitude(p);
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

// `tag` distinguishes the reported properties of several comparisons in one test.
void expect_matches_reference(const DenseDecodeHostData& host, const Reference& ref,
                              const DeviceOutputs& outputs, const std::string& tag = "") {
  const DenseDecodeParams p = host.params();
  const int b = p.batch, s_q = p.seqlen_q, h_q = p.num_heads_q, d_v = p.head_dim_v;
  const std::vector<uint16_t> out_bits = outputs.out.download();
  const std::vector<float> lse = outputs.lse.download();
  const uint16_t poison = 0xffff;
  const double u = p_rounding_unit(p.dtype);
  const char* dtype_name = p.dtype == ScalarType::kBFloat16 ? "bf16" : "fp16";

  FailureLog out_log, lse_log, padding_log;
  int64_t out_rounding_only = 0, lse_rounding_only = 0;
  double dot = 0, norm_got = 0, norm_ref = 0;
  for (int i = 0; i < b; ++i) {
    for (int j = 0; j < s_q; ++j) {
      for (int h = 0; h < h_q; ++h) {
        const float row_lse = ref.lse[(size_t(i) * h_q + h) * s_q + j];
        const size_t row = (size_t(i) * s_q + j) * h_q + h;
        const uint16_t* got_row = &out_bits[row * outputs.head_stride];
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
        for (int64_t d = d_v; d < outputs.head_stride; ++d) {
          if (got_row[d] != poison)
            padding_log.add("out padding [", i, ", ", j, ", ", h, ", ", d, "]");
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
      {"page_block_size", [](DenseDecodeParams& q) { q.page_block_size = 16; }},
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

}  // namespace
}  // namespace flashmla
