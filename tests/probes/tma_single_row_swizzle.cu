// Build and run on a Hopper machine:
//   nvcc -gencode=arch=compute_90a,code=sm_90a -o /tmp/probe_tma_row \
//     tests/probes/tma_single_row_swizzle.cu -lcuda
//   /tmp/probe_tma_row
// Question for a sparse-prefill gather by TMA: does a 2-D TMA load of ONE row of a 64-column
// bf16 box (128 bytes) with 128-byte swizzle, written at box_base + row * 128, land where a
// whole 64-row SW128 box would put that row (16-byte chunk c at row * 128 + (c ^ (row % 8)) *
// 16)? And does the same hold with .multicast::cluster into both CTAs of a 2-CTA cluster,
// each CTA loading half of the rows? Prints the number of misplaced chunks per CTA (0 = yes).
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__global__ void __cluster_dims__(2, 1, 1)
    probe(const __grid_constant__ CUtensorMap map, const int32_t* rows, int* misplaced) {
  __shared__ alignas(1024) uint16_t box[64 * 64];
  __shared__ uint64_t bar;
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  const int t = threadIdx.x;
  for (int i = t; i < 64 * 64; i += blockDim.x) box[i] = 0xFFFF;
  if (t == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&bar)));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
  if (t == 0) {
    // Both CTAs receive all 64 rows: 64 * 128 bytes.
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(&bar)),
                 "r"(64 * 128)
                 : "memory");
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
  if (t < 32) {
    for (int r = t; r < 64; r += 32) {
      if (r % 2 != int(rank)) continue;  // each CTA loads half of the rows, for both
      const uint16_t mask = 0x3;
      asm volatile(
          "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
          ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(smem_addr(box) + r * 128),
          "l"(reinterpret_cast<uint64_t>(&map)), "r"(0), "r"(rows[r]), "r"(smem_addr(&bar)),
          "h"(mask)
          : "memory");
    }
  }
  asm volatile(
      "{\n.reg .pred done;\nW:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra W;\n}\n" ::"r"(smem_addr(&bar))
      : "memory");
  int bad = 0;
  for (int i = t; i < 64 * 8; i += blockDim.x) {
    const int r = i / 8, c = i % 8;
    const uint16_t* chunk = box + (r * 128 + ((c ^ (r % 8)) * 16)) / 2;
    for (int e = 0; e < 8; ++e) {
      // global element (row rows[r], column c * 8 + e) holds rows[r] * 1000 + column (mod 2^16)
      const uint16_t expected = uint16_t(rows[r] * 1000 + c * 8 + e);
      if (chunk[e] != expected) {
        ++bad;
        break;
      }
    }
  }
  atomicAdd(&misplaced[rank], bad);
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

int main() {
  const int kRows = 300, kCols = 576;
  std::vector<uint16_t> host(size_t(kRows) * kCols);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) host[size_t(r) * kCols + c] = uint16_t(r * 1000 + c);
  std::vector<int32_t> rows(64);
  for (int i = 0; i < 64; ++i) rows[i] = (i * 37 + 11) % kRows;  // a gather order
  uint16_t* dev;
  int32_t* dev_rows;
  int* misplaced;
  cudaMalloc(&dev, host.size() * 2);
  cudaMalloc(&dev_rows, 64 * 4);
  cudaMalloc(&misplaced, 2 * sizeof(int));
  cudaMemcpy(dev, host.data(), host.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dev_rows, rows.data(), 64 * 4, cudaMemcpyHostToDevice);
  cudaMemset(misplaced, 0, 2 * sizeof(int));
  CUtensorMap map{};
  const cuuint64_t dims[2] = {kCols, kRows};
  const cuuint64_t strides[1] = {kCols * 2};
  const cuuint32_t box_dims[2] = {64, 1};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult result = cuTensorMapEncodeTiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, dev, dims, strides, box_dims, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    printf("cuTensorMapEncodeTiled failed: %d\n", int(result));
    return 1;
  }
  probe<<<2, 128>>>(map, dev_rows, misplaced);
  const cudaError_t err = cudaDeviceSynchronize();
  int bad[2] = {-1, -1};
  cudaMemcpy(bad, misplaced, sizeof(bad), cudaMemcpyDeviceToHost);
  printf("%s; misplaced 16-byte chunks (of 512): CTA 0 %d, CTA 1 %d\n", cudaGetErrorString(err),
         bad[0], bad[1]);
  return err == cudaSuccess && bad[0] == 0 && bad[1] == 0 ? 0 : 1;
}
