// The FP8 KV-cache tools on the GPU against their host twins, byte for byte: fresh random
// tokens (wide magnitude range, all-zero groups, exact zeros, a few inf/NaN values), slot
// mappings with -1 and out-of-range entries, caches prefilled with a byte pattern and with gaps
// between tokens and blocks. The whole allocation is compared, so bytes the kernel must not
// write are checked too. Needs a compute capability 9.0 GPU; built by CMake, run by
// scripts/gpu_tests.sh.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../kv_cache_case.h"
#include "device_buffer.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"

namespace flashmla {
namespace {

using testing::check_cuda;
using testing::DeviceBuffer;
using testing::KVCacheLayout;
using testing::make_dequantize_params;
using testing::make_kv_cache_layout;
using testing::make_write_params;
using testing::synchronize;

// A byte pattern (not one repeated byte), so that a misplaced copy of cache bytes shows.
std::vector<uint8_t> sentinel_cache(const KVCacheLayout& l) {
  std::vector<uint8_t> bytes(l.bytes());
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 131 + 7);
  return bytes;
}

// "block b byte o" of the first differing cache bytes, or "" when equal.
std::string cache_differences(const KVCacheLayout& l, const std::vector<uint8_t>& got,
                              const std::vector<uint8_t>& want) {
  if (got == want) return "";
  std::ostringstream out;
  int shown = 0;
  int64_t count = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] == want[i]) continue;
    if (shown++ < 10) {
      out << "  block " << int64_t(i) / l.block_stride << " byte " << int64_t(i) % l.block_stride
          << ": device " << int(got[i]) << ", host " << int(want[i]) << "\n";
    }
    ++count;
  }
  return std::to_string(count) + " bytes differ, first:\n" + out.str();
}

bool bf16_is_nan(uint16_t bits) {
  return (bits & 0x7fffu) > 0x7f80u;
}

// Dequantized values must be equal bit for bit, except that a NaN may carry another payload or
// sign (a GPU multiply returns the canonical NaN, the host keeps the operand's).
void expect_same_bf16(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                      int head_dim) {
  int64_t failures = 0, nans = 0;
  std::ostringstream first;
  for (size_t i = 0; i < want.size(); ++i) {
    if (bf16_is_nan(want[i]) && bf16_is_nan(got[i])) {
      ++nans;
      continue;
    }
    if (got[i] == want[i]) continue;
    if (failures++ < 10) {
      first << "  token " << i / head_dim << " value " << i % head_dim << ": device 0x" << std::hex
            << got[i] << ", host 0x" << want[i] << std::dec << "\n";
    }
  }
  EXPECT_EQ(failures, 0) << failures << " dequantized values differ, first:\n" << first.str();
  if (nans > 0) std::printf("  (%lld NaN values compared as NaN)\n", static_cast<long long>(nans));
}

// A few inf/NaN values in about 1% of the tokens (NoPE columns only: RoPE is a plain copy).
void add_special_values(std::vector<uint16_t>& kv, int num_tokens, int64_t stride, int d_nope,
                        std::mt19937& rng) {
  const uint16_t specials[] = {0x7f80, 0xff80, 0x7fc0, 0xffc1};
  for (int t = 0; t < num_tokens; ++t) {
    if (rng() % 100 != 0) continue;
    kv[size_t(t) * stride + rng() % d_nope] = specials[rng() % 4];
  }
}

struct Case {
  KVCacheFormat format;
  int page_block_size;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(to_string(info.param.format)) + "_page" +
         std::to_string(info.param.page_block_size);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const KVCacheFormat f :
       {KVCacheFormat::kFp8V32, KVCacheFormat::kFp8Model1, KVCacheFormat::kBFloat16}) {
    for (const int page : {1, 2, 53, 64, 576}) cases.push_back({f, page});
  }
  return cases;
}

class KVCacheToolsGpu : public ::testing::TestWithParam<Case> {};

TEST_P(KVCacheToolsGpu, WriteAndDequantizeMatchTheHostByteForByte) {
  const Case c = GetParam();
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int d = testing::test_head_dim(c.format);
  const int d_nope = c.format == KVCacheFormat::kFp8Model1 ? kFp8Model1NopeDim : kFp8V32NopeDim;
  const int num_blocks = std::max(3, 1500 / c.page_block_size);
  // Gaps: 16 bytes between token rows (V3.2, bfloat16), 80 bytes between blocks.
  const KVCacheLayout l = make_kv_cache_layout(c.format, d, num_blocks, c.page_block_size, 16, 80);
  const int num_tokens = int(l.num_slots() * 3 / 4);
  const int64_t kv_stride = d + 40;  // padding after each kv row (NaN)
  std::vector<uint16_t> kv = testing::random_tokens(num_tokens, d, kv_stride, rng);
  if (c.format != KVCacheFormat::kBFloat16)
    add_special_values(kv, num_tokens, kv_stride, d_nope, rng);
  const std::vector<int64_t> slots = testing::random_slot_mapping(num_tokens, l.num_slots(), rng);

  std::vector<uint8_t> host_cache = sentinel_cache(l);
  write_kv_cache_host(
      make_write_params(l, kv.data(), kv_stride, num_tokens, slots.data(), host_cache.data()));
  DeviceBuffer<uint16_t> device_kv(kv);
  DeviceBuffer<int64_t> device_slots(slots);
  DeviceBuffer<uint8_t> device_cache(sentinel_cache(l));
  write_kv_cache(make_write_params(l, device_kv.get(), kv_stride, num_tokens, device_slots.get(),
                                   device_cache.get()),
                 nullptr);
  synchronize("write_kv_cache");
  const std::vector<uint8_t> got_cache = device_cache.download();
  EXPECT_EQ(cache_differences(l, got_cache, host_cache), "");
  EXPECT_NE(host_cache, sentinel_cache(l)) << "the case should write something";

  // Dequantize the host-written cache on both sides (uploaded, so a write bug cannot mask one).
  std::vector<uint16_t> host_out(size_t(l.num_slots()) * d, 0xdead);
  dequantize_kv_cache_host(make_dequantize_params(l, host_cache.data(), host_out.data()));
  DeviceBuffer<uint8_t> cache_for_dequant(host_cache);
  DeviceBuffer<uint16_t> device_out(std::vector<uint16_t>(host_out.size(), 0xbeef));
  dequantize_kv_cache(make_dequantize_params(l, cache_for_dequant.get(), device_out.get()),
                      nullptr);
  synchronize("dequantize_kv_cache");
  expect_same_bf16(device_out.download(), host_out, d);
}

TEST_P(KVCacheToolsGpu, DequantizeArbitraryBytesMatchesTheHost) {
  // Every e4m3 byte (NaN included) and arbitrary float32 / e8m0 scales (subnormal, inf, NaN).
  const Case c = GetParam();
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int d = testing::test_head_dim(c.format);
  const KVCacheLayout l = make_kv_cache_layout(c.format, d, std::max(2, 300 / c.page_block_size),
                                               c.page_block_size, 32, 16);
  std::vector<uint8_t> cache(l.bytes());
  for (uint8_t& byte : cache) byte = uint8_t(rng());
  std::vector<uint16_t> host_out(size_t(l.num_slots()) * d, 0xdead);
  dequantize_kv_cache_host(make_dequantize_params(l, cache.data(), host_out.data()));
  DeviceBuffer<uint8_t> device_cache(cache);
  DeviceBuffer<uint16_t> device_out(std::vector<uint16_t>(host_out.size(), 0xbeef));
  dequantize_kv_cache(make_dequantize_params(l, device_cache.get(), device_out.get()), nullptr);
  synchronize("dequantize_kv_cache");
  expect_same_bf16(device_out.download(), host_out, d);
  EXPECT_EQ(device_cache.download(), cache) << "dequantize must not write the cache";
}

INSTANTIATE_TEST_SUITE_P(FormatsAndPages, KVCacheToolsGpu, ::testing::ValuesIn(all_cases()),
                         case_name);

TEST(KVCacheToolsGpuGraph, WriteCapturedInACudaGraphMatchesTheHost) {
  // No host synchronisation and no allocation inside: the call can be captured and replayed.
  std::mt19937 rng(std::random_device{}());
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8Model1, 512, 8, 64, 0, 576);
  const int num_tokens = 100;
  const std::vector<uint16_t> kv = testing::random_tokens(num_tokens, 512, 512, rng);
  const std::vector<int64_t> slots = testing::random_slot_mapping(num_tokens, l.num_slots(), rng);
  std::vector<uint8_t> host_cache = sentinel_cache(l);
  write_kv_cache_host(
      make_write_params(l, kv.data(), 512, num_tokens, slots.data(), host_cache.data()));

  DeviceBuffer<uint16_t> device_kv(kv);
  DeviceBuffer<int64_t> device_slots(slots);
  DeviceBuffer<uint8_t> device_cache(sentinel_cache(l));
  // Warm-up outside the capture: the first call caches the device properties it checks.
  write_kv_cache(make_write_params(l, nullptr, 512, 0, nullptr, device_cache.get()), nullptr);
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  write_kv_cache(make_write_params(l, device_kv.get(), 512, num_tokens, device_slots.get(),
                                   device_cache.get()),
                 stream);
  check_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
  check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  EXPECT_EQ(cache_differences(l, device_cache.download(), host_cache), "");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(KVCacheToolsGpuGraph, ZeroTokensIsANoOp) {
  const KVCacheLayout l = make_kv_cache_layout(KVCacheFormat::kFp8V32, 576, 2, 64);
  DeviceBuffer<uint8_t> device_cache(sentinel_cache(l));
  write_kv_cache(make_write_params(l, nullptr, 576, 0, nullptr, device_cache.get()), nullptr);
  synchronize("write_kv_cache");
  EXPECT_EQ(device_cache.download(), sentinel_cache(l));
}

}  // namespace
}  // namespace flashmla
