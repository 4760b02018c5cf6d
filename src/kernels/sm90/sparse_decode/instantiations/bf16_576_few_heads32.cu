#include "kernels/sm90/sparse_decode/dispatch.h"
#include "kernels/sm90/sparse_decode/launch.cuh"

namespace flashmla::sm90 {

void sparse_decode_bf16_576_few_heads32(const SparseDecodeKernelParams& params,
                                        const CUtensorMap& q_map, int, int num_parts,
                                        cudaStream_t stream) {
  launch_sparse_decode_few_heads<KVCacheFormat::kBFloat16, 576, 32>(params, q_map, num_parts,
                                                                    stream);
}

}  // namespace flashmla::sm90
