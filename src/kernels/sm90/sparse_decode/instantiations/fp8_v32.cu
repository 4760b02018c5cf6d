#include "kernels/sm90/sparse_decode/dispatch.h"
#include "kernels/sm90/sparse_decode/launch.cuh"

namespace flashmla::sm90 {

void sparse_decode_fp8_v32(const SparseDecodeKernelParams& params, const CUtensorMap& q_map,
                           int num_m_blocks, int num_parts, cudaStream_t stream) {
  launch_sparse_decode_kernel<KVCacheFormat::kFp8V32, 576>(params, q_map, num_m_blocks, num_parts,
                                                           stream);
}

}  // namespace flashmla::sm90
