// Launcher of the sparse-decode kernel for one (cache format, head_dim_qk) instantiation.
#pragma once

#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/sparse_decode/kernel.cuh"
#include "kernels/sm90/sparse_decode/traits.h"

namespace flashmla::sm90 {

template <KVCacheFormat kFormat, int kHeadDimQK>
void launch_sparse_decode_kernel(const SparseDecodeKernelParams& params, int num_m_blocks,
                                 int num_parts, cudaStream_t stream) {
  using Traits = SparseDecodeTraits<kFormat, kHeadDimQK>;
  auto kernel = sparse_decode_kernel<Traits>;
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      "cudaFuncSetAttribute(sparse_decode_kernel)");
  const dim3 grid(num_m_blocks, params.seqlen_q, num_parts);
  kernel<<<grid, Traits::kNumThreads, Traits::kSharedBytes, stream>>>(params);
  flashmla::detail::check_launch("sparse_decode_kernel");
}

}  // namespace flashmla::sm90
