// Build and run on a Hopper machine (CUTLASS headers from scripts/fetch_cutlass.sh):
//   nvcc -Iinclude -Isrc -isystem third_party/cutlass/include -O3 -std=c++20 \
//     --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Xptxas=-v \
//     -o /tmp/wgmma_overlap tests/probes/wgmma_overlap.cu && /tmp/wgmma_overlap
// How long do the decode kernels' wgmma groups take, alone and with another warpgroup's
// group running beside them (one CTA of two warpgroups per SM, operands in shared memory in
// the kernels' SW128 layouts, 1000 groups each, cycles per group)? S = Q K^T is 36 chained
// m64n64k16 (576 deep); P V is 4 k-steps of m64n256k16 (or n192 from registers). Modes 11-14
// read the KV operand without swizzle ("interleaved": FlashMLA's sparse K tile) instead.
// ptxas must not report C7510 ("wgmma ... serialized") for this file: a serialized build (e.g.
// a printf in the kernel) measures something else. Results: docs/perf-notes.md.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <cute/tensor.hpp>
#include "kernels/common/sm90_decode_tile.cuh"

using namespace flashmla::sm90;
using cute::SM90::GMMA::Major;
namespace G = cute::SM90::GMMA;

constexpr int kIters = 1000;
constexpr int kQBytes = 9 * 8192, kKBytes = 9 * 8192, kPBytes = 8192;
constexpr int kSmem = kQBytes + kKBytes + kPBytes + 1024;

template <class Op, int N>
__device__ __forceinline__ void ss(uint64_t a, uint64_t b, float (&d)[N], bool acc = true) {
  detail::fma_ss<Op>(a, b, d, acc ? G::ScaleOut::One : G::ScaleOut::Zero,
                     std::make_index_sequence<N>{});
}
template <class Op, int N>
__device__ __forceinline__ void rs(const uint32_t* a, uint64_t b, float (&d)[N], bool acc = true) {
  detail::fma_rs<Op>(a, b, d, acc ? G::ScaleOut::One : G::ScaleOut::Zero,
                     std::make_index_sequence<N>{});
}
using SS64 = G::MMA_64x64x16_F32BF16BF16_SS<Major::K, Major::K>;
using SS128 = G::MMA_64x128x16_F32BF16BF16_SS<Major::K, Major::K>;
using RS64 = G::MMA_64x64x16_F32BF16BF16_RS<Major::K, Major::K>;
using PV256 = G::MMA_64x256x16_F32BF16BF16_SS<Major::K, Major::MN>;
using PV128 = G::MMA_64x128x16_F32BF16BF16_SS<Major::K, Major::MN>;
using PVRS256 = G::MMA_64x256x16_F32BF16BF16_RS<Major::K, Major::MN>;
using PVRS192 = G::MMA_64x192x16_F32BF16BF16_RS<Major::K, Major::MN>;

struct Result {
  long long cycles[2];
};

// wg mode: 0 idle; 1 S 1 acc; 2 S 2 accs; 3 S 3 accs; 4 S RS 1 acc; 5 S n128 (half as many
// wgmmas for 128 tokens); 6 PV n256 SS x4; 7 PV 2 x n128 SS interleaved; 8 PV RS n256 x4;
// 9 PV RS n192 x4; 10 S 2 accs, RS; 11 S with K not swizzled; 12 / 13 / 14 PV n256 SS / n192
// RS / n256 RS with V not swizzled
template <int kMode>
__device__ __forceinline__ void work(char* q, char* k, char* p, uint32_t seed, float* sink) {
  const uint64_t q_desc = make_sw128_desc(q, 16, 1024);
  const uint64_t k_desc = make_sw128_desc(k, 16, 1024);
  const uint64_t p_desc = make_sw128_desc(p, 16, 1024);
  const uint64_t v_desc = make_sw128_desc(k, 8192, 1024);
  // No-swizzle ("interleaved") layouts: element (token t, column c) at t * 16 + (c / 8) * 1024.
  // K-major B: LBO = next 8 columns (1024), SBO = next 8 tokens (128). MN-major B (V): SBO =
  // next 8 columns (1024), LBO = next 8 tokens (128).
  const uint64_t k_inter = make_sw128_desc(k, 1024, 128) & ~(uint64_t(3) << 62);
  const uint64_t v_inter = make_sw128_desc(k, 128, 1024) & ~(uint64_t(3) << 62);
  uint32_t a[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) a[i] = 0x3c003c00u ^ ((seed >> i) & 0x00030003u);
  float s0[32], s1[32], s2[32], s3[64], acc[128];
#pragma unroll
  for (int i = 0; i < 32; ++i) s0[i] = s1[i] = s2[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 64; ++i) s3[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.f;
  for (int it = 0; it < kIters; ++it) {
    const uint64_t qd = opaque_desc(q_desc), kd = opaque_desc(k_desc);
    wgmma_fence();
    if constexpr (kMode == 1 || kMode == 2 || kMode == 3) {
#pragma unroll
      for (int kk = 0; kk < 36; ++kk) {
        const uint32_t off = (kk / 4) * 8192 + (kk % 4) * 32;
        const int chain = kk % kMode;
        if (chain == 0) ss<SS64>(desc_advance(qd, off), desc_advance(kd, off), s0, kk >= kMode);
        if (chain == 1) ss<SS64>(desc_advance(qd, off), desc_advance(kd, off), s1, kk >= kMode);
        if (chain == 2) ss<SS64>(desc_advance(qd, off), desc_advance(kd, off), s2, kk >= kMode);
      }
    }
    if constexpr (kMode == 4 || kMode == 10) {
#pragma unroll
      for (int kk = 0; kk < 36; ++kk) {
        const uint32_t off = (kk / 4) * 8192 + (kk % 4) * 32;
        if (kMode == 4 || kk % 2 == 0)
          rs<RS64>(&a[4 * (kk % 4)], desc_advance(kd, off), s0, kk > 1);
        else
          rs<RS64>(&a[4 * (kk % 4)], desc_advance(kd, off), s1, kk > 1);
      }
    }
    if constexpr (kMode == 5) {
#pragma unroll
      for (int kk = 0; kk < 36; ++kk) {
        const uint32_t off = (kk / 4) * 8192 + (kk % 4) * 32;
        ss<SS128>(desc_advance(qd, off), desc_advance(kd, off), s3, kk > 0);
      }
    }
    // Modes 12 / 13 / 14 are 6 / 9 / 8 with V not swizzled (16 tokens a k-step: 256 bytes).
    constexpr bool kVInterleaved = kMode >= 12 && kMode <= 14;
    const uint64_t vd = kVInterleaved ? v_inter : v_desc;
    constexpr uint32_t kVStep = kVInterleaved ? 256 : 2048;
    if constexpr (kMode == 6 || kMode == 12) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        ss<PV256>(desc_advance(p_desc, kk * 32), desc_advance(vd, kk * kVStep), acc);
    }
    if constexpr (kMode == 7) {
      float(&lo)[64] = *reinterpret_cast<float(*)[64]>(&acc[0]);
      float(&hi)[64] = *reinterpret_cast<float(*)[64]>(&acc[64]);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        ss<PV128>(desc_advance(p_desc, kk * 32), desc_advance(v_desc, kk * 2048), lo);
        ss<PV128>(desc_advance(p_desc, kk * 32), desc_advance(v_desc, 2 * 8192 + kk * 2048), hi);
      }
    }
    if constexpr (kMode == 11) {
      const uint64_t ki = opaque_desc(k_inter);
#pragma unroll
      for (int kk = 0; kk < 36; ++kk) {
        const uint32_t off = (kk / 4) * 8192 + (kk % 4) * 32;
        ss<SS64>(desc_advance(qd, off), desc_advance(ki, kk * 2048), s0, kk > 0);
      }
    }
    if constexpr (kMode == 8 || kMode == 14) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) rs<PVRS256>(&a[4 * kk], desc_advance(vd, kk * kVStep), acc);
    }
    if constexpr (kMode == 9 || kMode == 13) {
      float(&part)[96] = *reinterpret_cast<float(*)[96]>(&acc[0]);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) rs<PVRS192>(&a[4 * kk], desc_advance(vd, kk * kVStep), part);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(s0);
    fence_registers(s1);
    fence_registers(s2);
    fence_registers(s3);
    fence_registers(acc);
#pragma unroll
    for (int i = 0; i < 16; ++i) a[i] ^= __float_as_uint(s0[i] + acc[i]) & 0x00010001u;
  }
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) sum += s0[i] + s1[i] + s2[i];
#pragma unroll
  for (int i = 0; i < 64; ++i) sum += s3[i];
#pragma unroll
  for (int i = 0; i < 128; ++i) sum += acc[i];
#pragma unroll
  for (int i = 0; i < 16; ++i) sum += __uint_as_float(a[i]);
  if (sum == 1234.5f) *sink = sum;
}

template <int kWg0, int kWg1>
__global__ void __launch_bounds__(256, 1) probe(Result* out, float* sink, uint32_t seed) {
  extern __shared__ char raw[];
  char* base =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));
  for (int i = threadIdx.x; i < (kQBytes + kKBytes + kPBytes) / 4; i += blockDim.x) {
    const uint32_t h = (i * 2654435761u) >> 16;
    reinterpret_cast<uint32_t*>(base)[i] =
        (0x3c00 + (h & 0xff)) | ((0x3c00 + ((h >> 8) & 0xff)) << 16);
  }
  fence_view_async_shared();
  __syncthreads();
  const int wg = threadIdx.x / 128;
  const long long t0 = clock64();
  if (wg == 0) {
    if constexpr (kWg0 != 0)
      work<kWg0>(base, base + kQBytes, base + kQBytes + kKBytes, seed + threadIdx.x, sink);
  } else {
    if constexpr (kWg1 != 0)
      work<kWg1>(base, base + kQBytes, base + kQBytes + kKBytes, seed * 3 + threadIdx.x, sink);
  }
  const long long t1 = clock64();
  if (threadIdx.x % 128 == 0) out[blockIdx.x].cycles[wg] = t1 - t0;
}

template <int A, int B>
void run(const char* name, Result* d, float* sink, int sms) {
  auto kern = probe<A, B>;
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  kern<<<sms, 256, kSmem>>>(d, sink, 7);
  kern<<<sms, 256, kSmem>>>(d, sink, 9);
  cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    printf("%s: %s\n", name, cudaGetErrorString(err));
    exit(1);
  }
  std::vector<Result> h(sms);
  cudaMemcpy(h.data(), d, sizeof(Result) * sms, cudaMemcpyDeviceToHost);
  double c0 = 0, c1 = 0;
  for (auto& r : h) {
    c0 += r.cycles[0];
    c1 += r.cycles[1];
  }
  printf("%-40s wg0 %7.1f  wg1 %7.1f cycles/iter\n", name, c0 / sms / kIters, c1 / sms / kIters);
}

int main() {
  int sms;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  Result* d;
  float* sink;
  cudaMalloc(&d, sizeof(Result) * sms);
  cudaMalloc(&sink, 4);
  run<1, 0>("S 36 x n64 SS, 1 acc", d, sink, sms);
  run<2, 0>("S 36 x n64 SS, 2 accs", d, sink, sms);
  run<3, 0>("S 36 x n64 SS, 3 accs", d, sink, sms);
  run<4, 0>("S 36 x n64 RS, 1 acc", d, sink, sms);
  run<10, 0>("S 36 x n64 RS, 2 accs", d, sink, sms);
  run<5, 0>("S 36 x n128 SS (128 tokens)", d, sink, sms);
  run<6, 0>("PV 4 x n256 SS", d, sink, sms);
  run<7, 0>("PV 4 x (n128 + n128) SS", d, sink, sms);
  run<8, 0>("PV 4 x n256 RS", d, sink, sms);
  run<9, 0>("PV 4 x n192 RS", d, sink, sms);
  run<1, 1>("S 1 acc || S 1 acc", d, sink, sms);
  run<2, 2>("S 2 accs || S 2 accs", d, sink, sms);
  run<1, 6>("S 1 acc || PV n256 SS", d, sink, sms);
  run<2, 6>("S 2 accs || PV n256 SS", d, sink, sms);
  run<9, 6>("PV RS n192 || PV n256 SS", d, sink, sms);
  run<8, 6>("PV RS n256 || PV n256 SS", d, sink, sms);
  run<11, 0>("S 36 x n64 SS, K interleaved", d, sink, sms);
  run<12, 0>("PV 4 x n256 SS, V interleaved", d, sink, sms);
  run<13, 0>("PV 4 x n192 RS, V interleaved", d, sink, sms);
  run<14, 0>("PV 4 x n256 RS, V interleaved", d, sink, sms);
  run<11, 12>("S inter || PV n256 SS inter", d, sink, sms);
  run<13, 12>("PV RS n192 inter || PV n256 SS inter", d, sink, sms);
  run<14, 12>("PV RS n256 inter || PV n256 SS inter", d, sink, sms);
  run<1, 12>("S sw128 || PV n256 SS inter", d, sink, sms);
  return 0;
}
