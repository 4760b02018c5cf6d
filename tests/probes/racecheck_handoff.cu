// Build and run on a Hopper machine (argument 0: named barriers, 1: __syncthreads):
//   nvcc -gencode=arch=compute_90a,code=sm_90a -lineinfo -o /tmp/probe \
//     tests/probes/racecheck_handoff.cu
//   compute-sanitizer --tool racecheck /tmp/probe 0
// Does racecheck follow a hand-off between two warpgroups through named barriers (bar.sync
// with a thread count, executed by both sides)? Same pattern as the dense-decode kernel.
#include <cstdio>
#include <cstdlib>
__device__ __forceinline__ void bar_sync(unsigned id, unsigned n) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}
// mode 0: named barriers; 1: __syncthreads; 2: named barriers, and warpgroup 0 also syncs a
// barrier of its own 128 threads (id 4) before writing, as the kernel's row zeroing does;
// 3: as 2, and the writers also fence.proxy.async before the hand-off barrier, as the kernel
// does (its writes of P are read by wgmma through the async proxy).
__global__ void handoff(float* out, int mode) {
  __shared__ float rows[64];
  const int t = threadIdx.x;
  const auto sync = [&](unsigned id) {
    if (mode == 1) {
      __syncthreads();
    } else {
      bar_sync(id, 256);
    }
  };
  float acc = 0.f;
  for (int it = 0; it < 4; ++it) {
    if (t < 128) {
      if (it > 0) sync(2);
      if (mode >= 2) bar_sync(4, 128);
      if (t % 4 == 0) rows[(t / 4) % 64] = float(it + t);
      if (mode >= 3) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      sync(1);
    } else {
      sync(1);
      acc += rows[((t - 128) / 4) % 64];
      if (it + 1 < 4) sync(2);
    }
  }
  out[t] = acc;
}
int main(int argc, char** argv) {
  float* out;
  cudaMalloc(&out, 256 * sizeof(float));
  const int mode_arg = argc > 1 ? atoi(argv[1]) : 0;
  for (int mode = mode_arg; mode <= mode_arg; ++mode) {
    handoff<<<1, 256>>>(out, mode);
    printf("mode %d: %s\n", mode, cudaGetErrorString(cudaDeviceSynchronize()));
  }
  return 0;
}
