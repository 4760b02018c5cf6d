// Launchers of the dense-decode kernels for one (dtype, head_dim_qk) instantiation: the seesaw
// kernel (KV tiles loaded whole) and the one-softmax-warpgroup kernel (tiles loaded in pieces).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "api/checks.h"
#include "kernels/sm90/dense_decode/kernel.cuh"
#include "kernels/sm90/dense_decode/seesaw_kernel.cuh"
#include "kernels/sm90/dense_decode/seesaw_traits.h"
#include "kernels/sm90/dense_decode/traits.h"

namespace flashmla::sm90 {

namespace detail {
template <class Traits, class Kernel, class... Maps>
void launch_dense_decode(Kernel kernel, const char* name, const DenseDecodeKernelParams& params,
                         int num_m_blocks, int num_parts, cudaStream_t stream,
                         const Maps&... maps) {
  // The attribute is per device context, so set it on every launch (a host-side call).
  flashmla::detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Traits::kSharedBytes),
      name);
  const dim3 grid(num_m_blocks, params.num_heads_kv, num_parts);
  kernel<<<grid, Traits::kNumThreads, Traits::kSharedBytes, stream>>>(params, maps...);
  flashmla::detail::check_launch(name);
}
}  // namespace detail

template <class Element, int kHeadDimQK>
void launch_dense_decode_kernel(const DenseDecodeKernelParams& params, const CUtensorMap& k_map,
                                const CUtensorMap& q_map, int num_m_blocks, int num_parts,
                                cudaStream_t stream) {
  using Traits = DenseDecodeTraits<Element, kHeadDimQK>;
  detail::launch_dense_decode<Traits>(dense_decode_kernel<Traits>, "dense_decode_kernel", params,
                                      num_m_blocks, num_parts, stream, k_map, q_map);
}

template <class Element, int kHeadDimQK>
void launch_dense_decode_seesaw_kernel(const DenseDecodeKernelParams& params,
                                       const CUtensorMap& k_map, const CUtensorMap& q_map,
                                       int num_m_blocks, int num_parts, cudaStream_t stream) {
  using Traits = DenseDecodeSeesawTraits<Element, kHeadDimQK>;
  detail::launch_dense_decode<Traits>(dense_decode_seesaw_kernel<Traits>,
                                      "dense_decode_seesaw_kernel", params, num_m_blocks, num_parts,
                                      stream, k_map, q_map);
}

}  // namespace flashmla::sm90
