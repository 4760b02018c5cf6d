// Warpgroup matrix-multiply (wgmma) helpers: shared-memory descriptors for 128-byte swizzled
// tiles and array-based wrappers over CuTe's GMMA atoms (which take one argument per register).
#pragma once

#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>

#include "kernels/common/gmma_descriptor.h"
#include "kernels/common/sm90_ptx.cuh"

namespace flashmla::sm90 {

// Descriptor of a 128B-swizzled operand tile (rows of 128 bytes, 8-row / 1024-byte swizzle
// atoms) whose atoms start 1024-byte aligned. `leading_bytes` / `stride_bytes` follow the PTX
// meaning: for K-major tiles the stride is the distance between 8-row groups (LBO unused);
// for MN-major tiles LBO is the distance between 64-element column chunks and SBO between
// 8-row groups along K.
__device__ __forceinline__ uint64_t make_sw128_desc(const void* smem, uint32_t leading_bytes,
                                                    uint32_t stride_bytes) {
  return make_sw128_desc_at(smem_addr(smem), leading_bytes, stride_bytes);
}

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a 64 x 128-byte SW128 box: the
// layout TMA writes with the 128-byte swizzle and wgmma reads.
__device__ __forceinline__ uint32_t sw128_offset(int row, int chunk) {
  return row * 128 + ((chunk ^ (row & 7)) << 4);
}

// Returns `desc` through an opaque move so that the compiler rebuilds the per-k-step
// descriptors where they are used instead of hoisting dozens of them into registers.
__device__ __forceinline__ uint64_t opaque_desc(uint64_t desc) {
  uint64_t out;
  asm volatile("mov.b64 %0, %1;" : "=l"(out) : "l"(desc));
  return out;
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving reads or writes of accumulator registers across the
// asynchronous wgmma issue / wait points.
template <int N>
__device__ __forceinline__ void fence_registers(float (&regs)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(regs[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_registers(uint32_t (&regs)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(regs[i])::"memory");
}

namespace detail {
using cute::SM90::GMMA::Major;
using cute::SM90::GMMA::ScaleOut;

template <class Op, int N, size_t... I>
__device__ __forceinline__ void fma_ss(uint64_t a, uint64_t b, float (&d)[N], ScaleOut scale,
                                       std::index_sequence<I...>) {
  Op::fma(a, b, d[I]..., scale);
}
template <class Op, int N, size_t... I>
__device__ __forceinline__ void fma_rs(const uint32_t* a, uint64_t b, float (&d)[N], ScaleOut scale,
                                       std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], b, d[I]..., scale);
}
}  // namespace detail

// The CuTe GMMA atom for a 64xNx16 product with fp32 accumulators: A from shared memory (SS,
// K-major or MN-major) or registers (RS, K-major), B K-major or MN-major.
template <bool kIsBF16, int N, bool kRegisterA, detail::Major kMajorB,
          detail::Major kMajorA = detail::Major::K>
struct GmmaAtom;

#define FLASHMLA_GMMA_ATOM(N, SOURCE, IS_RS)                                               \
  template <detail::Major kMajorB, detail::Major kMajorA>                                  \
  struct GmmaAtom<true, N, IS_RS, kMajorB, kMajorA> {                                      \
    using type = cute::SM90::GMMA::MMA_64x##N##x16_F32BF16BF16_##SOURCE<kMajorA, kMajorB>; \
  };                                                                                       \
  template <detail::Major kMajorB, detail::Major kMajorA>                                  \
  struct GmmaAtom<false, N, IS_RS, kMajorB, kMajorA> {                                     \
    using type = cute::SM90::GMMA::MMA_64x##N##x16_F32F16F16_##SOURCE<kMajorA, kMajorB>;   \
  };
FLASHMLA_GMMA_ATOM(16, SS, false)
FLASHMLA_GMMA_ATOM(32, SS, false)
FLASHMLA_GMMA_ATOM(64, SS, false)
FLASHMLA_GMMA_ATOM(128, SS, false)
FLASHMLA_GMMA_ATOM(64, RS, true)
FLASHMLA_GMMA_ATOM(192, RS, true)
FLASHMLA_GMMA_ATOM(256, SS, false)
FLASHMLA_GMMA_ATOM(256, RS, true)
#undef FLASHMLA_GMMA_ATOM

// D(64xN) (+)= A(64x16, `kMajorA` shared memory) * B(16xN, `kMajorB` shared memory).
template <bool kIsBF16, detail::Major kMajorB, int N, detail::Major kMajorA = detail::Major::K>
__device__ __forceinline__ void gmma_ss(uint64_t desc_a, uint64_t desc_b, float (&d)[N / 2],
                                        bool accumulate = true) {
  using Op = typename GmmaAtom<kIsBF16, N, false, kMajorB, kMajorA>::type;
  detail::fma_ss<Op>(desc_a, desc_b, d, accumulate ? detail::ScaleOut::One : detail::ScaleOut::Zero,
                     std::make_index_sequence<N / 2>{});
}

// D(64xN) += A(64x16, registers) * B(16xN, `kMajorB` shared memory).
template <bool kIsBF16, detail::Major kMajorB, int N>
__device__ __forceinline__ void gmma_rs(const uint32_t* a, uint64_t desc_b, float (&d)[N / 2]) {
  using Op = typename GmmaAtom<kIsBF16, N, true, kMajorB>::type;
  detail::fma_rs<Op>(a, desc_b, d, detail::ScaleOut::One, std::make_index_sequence<N / 2>{});
}

}  // namespace flashmla::sm90
