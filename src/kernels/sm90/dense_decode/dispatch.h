// The dense-decode kernel instantiations (one .cu each, under instantiations/): the seesaw
// kernel for KV tiles loaded whole, the other for tiles loaded in pieces.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "kernels/sm90/dense_decode/kernel_params.h"

namespace flashmla::sm90 {

#define FLASHMLA_DECLARE_DENSE_DECODE(NAME)                                  \
  void NAME(const DenseDecodeKernelParams& params, const CUtensorMap& k_map, \
            const CUtensorMap& q_map, int num_m_blocks, int num_parts, cudaStream_t stream);

FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_bf16_576)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_bf16_512)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_fp16_576)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_fp16_512)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_seesaw_bf16_576)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_seesaw_bf16_512)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_seesaw_fp16_576)
FLASHMLA_DECLARE_DENSE_DECODE(dense_decode_seesaw_fp16_512)

#undef FLASHMLA_DECLARE_DENSE_DECODE

}  // namespace flashmla::sm90
