// Launcher of the dense-decode kernel for one (dtype, head_dim_qk) instantiation.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/dense_decode/kernel.cuh"
#include "kernels/sm90/dense_decode/traits.h"

namespace flashmla::sm90 {

template <class Element, int kHeadDimQK>
void launch_dense_decode_kernel(const DenseDecodeKernelParams& params, const CUtensorMap& k_map,
                                int num_m_blocks, int num_parts, cudaStream_t stream) {
  using Traits = DenseDecodeTraits<Element, kHeadDimQK>;
  auto kernel = dense_decode_kernel<Traits>;
  // The attribute is per device context, so set it on every launch (a host-side call).
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      "cudaFuncSetAttribute(dense_decode_kernel)");
  const dim3 grid(num_m_blocks, params.num_heads_kv, num_parts);
  kernel<<<grid, Traits::kNumThreads, Traits::kSharedBytes, stream>>>(params, k_map);
  flashmla::detail::check_launch("dense_decode_kernel");
}

}  // namespace flashmla::sm90
