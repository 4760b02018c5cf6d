// Launcher of the sparse-decode kernel for one (cache format, head_dim_qk) instantiation.
#pragma once

#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/sparse_decode/kernel.cuh"
#include "kernels/sm90/sparse_decode/traits.h"

namespace flashmla::sm90 {

template <KVCacheFormat kFormat, int kHeadDimQK, bool kCrossover = false>
void launch_sparse_decode_kernel(const SparseDecodeKernelParams& params, int num_m_blocks,
                                 int num_parts, cudaStream_t stream) {
  using Traits = SparseDecodeTraits<kFormat, kHeadDimQK, kCrossover>;
  auto kernel = sparse_decode_kernel<Traits>;
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      "cudaFuncSetAttribute(sparse_decode_kernel)");
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(num_m_blocks, params.seqlen_q, num_parts);
  config.blockDim = dim3(Traits::kNumThreads);
  config.dynamicSmemBytes = Traits::kSharedBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = Traits::kClusterSize;  // the two m-blocks of a query token
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  flashmla::detail::check_cuda(cudaLaunchKernelEx(&config, kernel, params),
                               "sparse_decode_kernel launch");
  flashmla::detail::check_launch("sparse_decode_kernel");
}

}  // namespace flashmla::sm90
