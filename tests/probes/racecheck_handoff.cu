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
__global__ void handoff(float* out, int use_syncthreads) {
  __shared__ float rows[64];
  const int t = threadIdx.x;
  float acc = 0.f;
  for (int it = 0; it < 4; ++it) {
    if (t < 128) {
      if (it > 0) {
        if (use_syncthreads)
          __syncthreads();
        else
          bar_sync(2, 256);
      }
      if (t % 4 == 0) rows[(t / 4) % 64] = float(it + t);
      if (use_syncthreads)
        __syncthreads();
      else
        bar_sync(1, 256);
    } else {
      if (use_syncthreads)
        __syncthreads();
      else
        bar_sync(1, 256);
      acc += rows[((t - 128) / 4) % 64];
      if (it + 1 < 4) {
        if (use_syncthreads)
          __syncthreads();
        else
          bar_sync(2, 256);
      }
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
    printf("mode %s: %s\n", mode ? "__syncthreads" : "named bar.sync",
           cudaGetErrorString(cudaDeviceSynchronize()));
  }
  return 0;
}
