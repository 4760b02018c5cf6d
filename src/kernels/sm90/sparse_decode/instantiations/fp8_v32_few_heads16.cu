#include "kernels/sm90/sparse_decode/dispatch.h"
#include "kernels/sm90/sparse_decode/launch.cuh"

namespace flashmla::sm90 {

void sparse_decode_fp8_v32_few_heads16(const SparseDecodeKernelParams& params,
                                       const CUtensorMap& q_map, int, int num_parts,
                                       cudaStream_t stream) {
  launch_sparse_decode_few_heads<KVCacheFormat::kFp8V32, 576, 16>(params, q_map, num_parts, stream);
}

}  // namespace flashmla::sm90
