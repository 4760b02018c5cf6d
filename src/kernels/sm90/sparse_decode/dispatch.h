// The sparse-decode kernel instantiations (one .cu each, under instantiations/).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "kernels/sm90/sparse_decode/kernel_params.h"

namespace flashmla::sm90 {

// q_map: the Q tiles' tensor map where params.q_by_tma (the 64-head kernels), else unused.
#define FLASHMLA_DECLARE_SPARSE_DECODE(NAME)                                                    \
  void NAME(const SparseDecodeKernelParams& params, const CUtensorMap& q_map, int num_m_blocks, \
            int num_parts, cudaStream_t stream);

FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_v32)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_model1)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_576)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_512)
// Crossover instances (64 < h_q <= 128: the two m-blocks share each tile's gather).
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_v32_crossover)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_model1_crossover)
// Few-heads instances (h_q <= 16 / 32: swapped products, the m-block count is ignored).
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_v32_few_heads16)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_v32_few_heads32)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_model1_few_heads16)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_fp8_model1_few_heads32)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_576_few_heads16)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_576_few_heads32)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_512_few_heads16)
FLASHMLA_DECLARE_SPARSE_DECODE(sparse_decode_bf16_512_few_heads32)

#undef FLASHMLA_DECLARE_SPARSE_DECODE

}  // namespace flashmla::sm90
