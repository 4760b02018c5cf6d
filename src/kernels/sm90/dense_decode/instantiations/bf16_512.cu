#include "kernels/sm90/dense_decode/dispatch.h"
#include "kernels/sm90/dense_decode/launch.cuh"

namespace flashmla::sm90 {

void dense_decode_bf16_512(const DenseDecodeKernelParams& params, const CUtensorMap& k_map,
                           const CUtensorMap& q_map, int num_m_blocks, int num_parts,
                           cudaStream_t stream) {
  launch_dense_decode_kernel<__nv_bfloat16, 512>(params, k_map, q_map, num_m_blocks, num_parts,
                                                 stream);
}

}  // namespace flashmla::sm90
