// Launchers of the sparse-decode kernels: the 64-head kernel for one (cache format, head_dim_qk,
// crossover) instantiation and the few-heads kernel for one (cache format, head_dim_qk, heads).
// Grid: (m-blocks, s_q, planner parts); the crossover's two m-blocks form a cluster.
#pragma once

#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/sparse_decode/few_heads_kernel.cuh"
#include "kernels/sm90/sparse_decode/few_heads_traits.h"
#include "kernels/sm90/sparse_decode/kernel.cuh"
#include "kernels/sm90/sparse_decode/traits.h"

namespace flashmla::sm90 {

template <class Traits>
void launch_sparse_decode_grid(void (*kernel)(SparseDecodeKernelParams, CUtensorMap),
                               const char* name, const SparseDecodeKernelParams& params,
                               const CUtensorMap& q_map, int num_m_blocks, int num_parts,
                               cudaStream_t stream) {
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      name);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(num_m_blocks, params.seqlen_q, num_parts);
  config.blockDim = dim3(Traits::kNumThreads);
  config.dynamicSmemBytes = Traits::kSharedBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = Traits::kClusterSize;  // crossover: the two m-blocks of a query
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  flashmla::detail::check_cuda(cudaLaunchKernelEx(&config, kernel, params, q_map), name);
  flashmla::detail::check_launch(name);
}

template <KVCacheFormat kFormat, int kHeadDimQK, bool kCrossover = false>
void launch_sparse_decode_kernel(const SparseDecodeKernelParams& params, const CUtensorMap& q_map,
                                 int num_m_blocks, int num_parts, cudaStream_t stream) {
  using Traits = SparseDecodeTraits<kFormat, kHeadDimQK, kCrossover>;
  launch_sparse_decode_grid<Traits>(sparse_decode_kernel<Traits>, "sparse_decode_kernel", params,
                                    q_map, num_m_blocks, num_parts, stream);
}

// h_q <= kHeads (16 or 32): one m-block.
template <KVCacheFormat kFormat, int kHeadDimQK, int kHeads>
void launch_sparse_decode_few_heads(const SparseDecodeKernelParams& params,
                                    const CUtensorMap& q_map, int num_parts, cudaStream_t stream) {
  using Traits = SparseDecodeFewHeadsTraits<kFormat, kHeadDimQK, kHeads>;
  launch_sparse_decode_grid<Traits>(sparse_decode_few_heads_kernel<Traits>,
                                    "sparse_decode_few_heads_kernel", params, q_map, 1, num_parts,
                                    stream);
}

}  // namespace flashmla::sm90
