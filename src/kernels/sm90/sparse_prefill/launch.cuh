// Launcher of the sparse-prefill kernel for one head_dim_qk instantiation.
#pragma once

#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/sparse_prefill/kernel.cuh"
#include "kernels/sm90/sparse_prefill/traits.h"

namespace flashmla::sm90 {

template <int kHeadDimQK>
void launch_sparse_prefill_kernel(const SparsePrefillKernelParams& params, cudaStream_t stream) {
  using Traits = SparsePrefillTraits<kHeadDimQK>;
  auto kernel = sparse_prefill_kernel<Traits>;
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      "cudaFuncSetAttribute(sparse_prefill_kernel)");
  // A persistent grid of one CTA per SM walks the (query token, 64-head block) items.
  sparse_prefill_kernel<Traits><<<dim3(static_cast<unsigned>(params.num_ctas)), Traits::kNumThreads,
                                  Traits::kSharedBytes, stream>>>(params);
  flashmla::detail::check_launch("sparse_prefill_kernel");
}

}  // namespace flashmla::sm90
