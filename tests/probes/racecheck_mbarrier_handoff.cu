// Build and run on a Hopper machine (argument: the mode below):
//   nvcc -gencode=arch=compute_90a,code=sm_90a -lineinfo -o /tmp/probe_mbarrier \
//     tests/probes/racecheck_mbarrier_handoff.cu
//   for m in 0 1 2 3; do compute-sanitizer --tool racecheck /tmp/probe_mbarrier $m; done
// Does racecheck follow a hand-off of ordinary shared-memory stores from a producer warpgroup
// to a consumer warpgroup through mbarriers (a two-stage full/empty ring)? Same pattern as
// the sparse-decode kernel's token_valid words: the producer waits for the stage's empty
// barrier, stores, arrives on its full barrier (release); the consumer waits on the full
// barrier (acquire), reads, and arrives on the empty barrier.
// mode 0: one arrival per consumer warp (lane 0), as the kernel;  1: as 0, and the producer
// also fences the async proxy before arriving, as the kernel;  2: every consumer thread
// arrives on the empty barrier (each read is then ordered before an arrival by its own
// thread);  3: as 2, with the proxy fence.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_addr(bar)),
      "r"(phase)
      : "memory");
}

__global__ void handoff(uint64_t* out, int mode) {
  __shared__ uint64_t words[2];
  __shared__ uint64_t full[2], empty[2];
  const int t = threadIdx.x;
  const bool every_thread_arrives = mode >= 2;
  if (t == 0) {
    for (int s = 0; s < 2; ++s) {
      init(&full[s], 128);
      init(&empty[s], every_thread_arrives ? 128 : 4);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  uint64_t acc = 0;
  for (int it = 0; it < 8; ++it) {
    const int stage = it % 2;
    const uint32_t phase = (it / 2) & 1;
    if (t >= 128) {  // producer
      wait(&empty[stage], phase ^ 1);
      if (t % 32 == 0) reinterpret_cast<uint8_t*>(&words[stage])[(t - 128) / 32] = uint8_t(it);
      if (mode % 2 == 1) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      arrive(&full[stage]);
    } else {  // consumer
      wait(&full[stage], phase);
      acc += words[stage];
      if (every_thread_arrives || t % 32 == 0) arrive(&empty[stage]);
    }
  }
  out[t] = acc;
}

int main(int argc, char** argv) {
  uint64_t* out;
  cudaMalloc(&out, 256 * sizeof(uint64_t));
  const int mode = argc > 1 ? atoi(argv[1]) : 0;
  handoff<<<1, 256>>>(out, mode);
  printf("mode %d: %s\n", mode, cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
