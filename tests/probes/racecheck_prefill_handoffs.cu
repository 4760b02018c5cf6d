// Build and run on a Hopper machine (argument: the mode below):
//   nvcc -gencode=arch=compute_90a,code=sm_90a -lineinfo -o /tmp/probe_prefill \
//     tests/probes/racecheck_prefill_handoffs.cu
//   for m in 0 1 2; do compute-sanitizer --tool racecheck /tmp/probe_prefill $m; done
// Does racecheck follow the two hand-offs of the sparse-prefill kernel that it reports?
// mode 0 (the running-max exchange): warpgroup 0 writes row A and bar.arrive(1); warpgroup 1
//   bar.sync(1), reads A, writes row B, bar.arrive(2); warpgroup 0 bar.sync(2), reads B. Every
//   access is ordered (B's next write comes after warpgroup 0's arrive(1) of the next round,
//   which follows its read of B), but only through bar.arrive -> bar.sync.
// mode 1 (the P0 box in K's RoPE columns): a producer warpgroup fills a buffer with cp.async
//   and arrives on a full mbarrier through cp.async.mbarrier.arrive.noinc; the consumer
//   warpgroup waits, reads the buffer, overwrites it with st.shared, and arrives on the empty
//   mbarrier; the producer waits on it before the next cp.async round.
// mode 2: mode 1 with the consumer's writes removed (reads only), the control.
// Expected of racecheck if it follows these orderings: no hazard in any mode.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void bar_sync(unsigned id, unsigned n) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void bar_arrive(unsigned id, unsigned n) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_addr(bar)),
      "r"(phase)
      : "memory");
}

__global__ void probe(const float4* src, float* out, int mode) {
  __shared__ float row_a[64], row_b[64];
  __shared__ __align__(16) float4 buffer[128];
  __shared__ uint64_t full, empty;
  const int t = threadIdx.x;
  if (t == 0) {
    mbar_init(&full, 128);
    mbar_init(&empty, 128);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  float acc = 0.f;
  for (int it = 0; it < 4; ++it) {
    if (mode == 0) {
      if (t < 128) {
        if (t % 4 == 0) row_a[t / 4 % 64] = float(it + t);
        bar_arrive(1, 256);
        bar_sync(2, 256);
        acc += row_b[t / 4 % 64];
      } else if (t < 256) {
        bar_sync(1, 256);
        acc += row_a[(t - 128) / 4 % 64];
        __syncwarp();
        if (t % 4 == 0) row_b[(t - 128) / 4 % 64] = acc;
        bar_arrive(2, 256);
      }
    } else {
      const uint32_t phase = it & 1;
      if (t >= 256) {  // producer
        const int i = t - 256;
        mbar_wait(&empty, phase ^ 1);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(&buffer[i])),
                     "l"(src + it * 128 + i)
                     : "memory");
        asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(&full))
                     : "memory");
      } else if (t < 128) {  // consumer
        mbar_wait(&full, phase);
        acc += buffer[(t + 7) % 128].x;
        __syncwarp();
        if (mode == 1) buffer[t] = make_float4(acc, 0.f, 0.f, 0.f);
        mbar_arrive(&empty);
      }
    }
  }
  out[t] = acc;
}

int main(int argc, char** argv) {
  const int mode = argc > 1 ? atoi(argv[1]) : 0;
  float4* src;
  float* out;
  cudaMalloc(&src, 4 * 128 * sizeof(float4));
  cudaMemset(src, 0, 4 * 128 * sizeof(float4));
  cudaMalloc(&out, 384 * sizeof(float));
  probe<<<1, 384>>>(src, out, mode);
  const cudaError_t err = cudaDeviceSynchronize();
  printf("mode %d: %s\n", mode, cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 1;
}
