// Thin wrappers over the Hopper PTX the kernels use: mbarriers, TMA loads, proxy fences,
// named barriers. Each is one instruction; keeping them here keeps kernel bodies readable.
#pragma once

#include <cstdint>
#include <cuda.h>

namespace flashmla::sm90 {

__device__ __forceinline__ uint32_t smem_addr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// The dynamic shared memory rounded up to a 1024-byte boundary (the 128-byte swizzle atoms
// must be 1024-byte aligned), as a `T`. Offsetting the __shared__ array itself, rather than
// rounding its address as an integer, keeps the compiler aware that it is shared memory, so
// accesses compile to LDS/STS instead of slower generic LD/ST.
template <class T>
__device__ __forceinline__ T& aligned_shared_storage(char* smem_raw) {
  const uint32_t misalignment = smem_addr(smem_raw) & 1023u;
  return *reinterpret_cast<T*>(smem_raw + ((1024u - misalignment) & 1023u));
}

// ---- mbarrier ------------------------------------------------------------------------------
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrive_count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrive_count));
}

// Makes mbarrier initialisation visible to the async proxy (TMA) and to other threads.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

// Blocks until the phase with parity `phase` of `bar` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(phase)
      : "memory");
}

// ---- TMA -----------------------------------------------------------------------------------
// 4-D tiled bulk tensor load into shared memory, completing on `bar` (complete_tx bytes).
__device__ __forceinline__ void tma_load_4d(const CUtensorMap* map, uint64_t* bar, void* smem,
                                            int32_t c0, int32_t c1, int32_t c2, int32_t c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(smem_addr(smem)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

__device__ __forceinline__ void prefetch_tma_descriptor(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// A read-only global float loaded where it is written in the program: an asm volatile load is
// neither moved past the other volatile asm (barriers, wgmma) nor re-loaded later, so a value
// needed after a long loop can be fetched before it and its latency hidden.
__device__ __forceinline__ float ldg_float_now(const float* address) {
  float value;
  asm volatile("ld.global.nc.f32 %0, [%1];" : "=f"(value) : "l"(address));
  return value;
}

// ---- stmatrix ---------------------------------------------------------------------------------
// Stores four 8x8 matrices of 16-bit values, each thread holding one 32-bit pair of each in the
// mma accumulator layout (row lane / 4, columns 2 (lane % 4) and + 1); thread t gives the
// address of row t % 8 of matrix t / 8 (16 contiguous bytes).
__device__ __forceinline__ void stmatrix_x4(uint32_t smem, uint32_t r0, uint32_t r1, uint32_t r2,
                                            uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem),
               "r"(r0), "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

// ---- cp.async (16-byte gathers into shared memory) -------------------------------------------
// Copies 16 bytes from global to shared memory, or writes 16 zero bytes when !valid (nothing
// is read then). The L2 is asked to fetch the surrounding 256 bytes (the rest of the row).
__device__ __forceinline__ void cp_async_16_or_zero(uint32_t smem, const void* global, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(smem), "l"(global),
               "r"(valid ? 16 : 0)
               : "memory");
}

// L2 eviction priorities for cp.async, in the 64-bit cache-policy encoding that createpolicy
// produces (the values CUTLASS names CacheHintSm90).
enum class L2Policy : uint64_t {
  kEvictFirst = 0x12F0000000000000ull,  // read once: leave the L2 to what is read again
  kEvictLast = 0x14F0000000000000ull,   // read again by other CTAs: keep
};

// cp_async_16_or_zero with an L2 eviction priority. The policy is an immediate on purpose:
// from createpolicy, ptxas 13.0 emitted LDGSTS reading a never-written uniform register as the
// policy descriptor (an illegal instruction at run time); from a constant it writes that
// register first (checked in the SASS).
template <L2Policy kPolicy>
__device__ __forceinline__ void cp_async_16_or_zero(uint32_t smem, const void* global, bool valid) {
  asm volatile(
      "cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;" ::"r"(smem),
      "l"(global), "r"(valid ? 16 : 0), "l"(static_cast<uint64_t>(kPolicy))
      : "memory");
}

// Waits until all of this thread's earlier cp.async copies have landed (visible to it).
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// Arrives on `bar` once all of this thread's earlier cp.async copies have landed; counts as
// one of the barrier's expected arrivals (.noinc).
__device__ __forceinline__ void cp_async_arrive_noinc(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(bar))
               : "memory");
}

// ---- fences and barriers ---------------------------------------------------------------------
// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads
// (wgmma operands, TMA stores).
__device__ __forceinline__ void fence_view_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// Named barrier over `num_threads` threads (a multiple of 32); id 0 is __syncthreads.
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(num_threads) : "memory");
}

__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(num_threads) : "memory");
}

// ---- thread-block clusters (distributed shared memory) -------------------------------------
__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// The shared::cluster address of `smem_address` (a shared::cta address of this CTA) in CTA
// `rank` of the cluster.
__device__ __forceinline__ uint32_t peer_shared_address(uint32_t smem_address, uint32_t rank) {
  uint32_t result;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(result)
               : "r"(smem_address), "r"(rank));
  return result;
}

// Arrives on an mbarrier of another CTA of the cluster. Default semantics (release at CTA
// scope), as CUTLASS's ClusterBarrier: the arrival only says "this stage is free" after the
// reads it covers have completed (wgmma.wait_group), so nothing needs cluster-scope ordering.
// (.release.cluster compiled to MEMBAR.ALL.GPU + ERRBAR in front of every arrival: ~10% of
// the crossover kernel's warp stall samples, though off its critical path: docs/perf-notes.md.)
__device__ __forceinline__ void mbarrier_arrive_peer(uint32_t peer_bar) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(peer_bar) : "memory");
}

// Asynchronous 16- / 4-byte stores into another CTA's shared memory, each completing its bytes
// on that CTA's mbarrier `peer_bar` (complete_tx), like a TMA load.
__device__ __forceinline__ void store_async_peer(uint32_t peer_address, const uint4& value,
                                                 uint32_t peer_bar) {
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, "
      "[%5];" ::"r"(peer_address),
      "r"(value.x), "r"(value.y), "r"(value.z), "r"(value.w), "r"(peer_bar)
      : "memory");
}
__device__ __forceinline__ void store_async_peer(uint32_t peer_address, uint32_t value,
                                                 uint32_t peer_bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(
                   peer_address),
               "r"(value), "r"(peer_bar)
               : "memory");
}

// All threads of all CTAs of the cluster (release / acquire).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

// The two halves of cluster_sync, for a thread to arrive right after its last access to the
// peer's shared memory and wait only where it must (each thread: arrive, then wait, per phase).
// The release covers the thread's earlier memory operations, so arriving before a burst of
// global stores does not make the barrier wait for them.
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
}

// ---- programmatic dependent launch -------------------------------------------------------
// A decode kernel lets the stream's next kernel, the combine (launched with programmatic
// stream serialization, kernels/common/combine.cu), be scheduled before it ends, so that the
// combine's launch overlaps the kernel's tail. A CTA calls allow_dependent_launch() once its
// last tile is under way, as FlashMLA's kernels do before their last epilogue: the combine is
// scheduled only when every CTA of the grid has called it or exited. The combine reads nothing
// this grid wrote before wait_for_primary_grid(), which returns once this grid has completed
// and its memory is visible. Both are no-ops in a kernel launched without the attribute.
__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void wait_for_primary_grid() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// ---- register reallocation between warpgroups (needs a register cap at kernel entry) ---------
template <uint32_t kRegisters>
__device__ __forceinline__ void warpgroup_registers_increase() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
template <uint32_t kRegisters>
__device__ __forceinline__ void warpgroup_registers_decrease() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
// Moves the warpgroup from the launch's kLaunchRegisters a thread to kRegisters: setmaxnreg.inc
// to a count below the current one is an illegal instruction, so the direction is chosen here.
template <uint32_t kRegisters, uint32_t kLaunchRegisters>
__device__ __forceinline__ void warpgroup_registers_set() {
  if constexpr (kRegisters > kLaunchRegisters) {
    warpgroup_registers_increase<kRegisters>();
  } else if constexpr (kRegisters < kLaunchRegisters) {
    warpgroup_registers_decrease<kRegisters>();
  }
}

}  // namespace flashmla::sm90
