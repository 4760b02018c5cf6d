// The sparse-prefill kernel instantiations (one .cu each, under instantiations/).
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/sm90/sparse_prefill/kernel_params.h"

namespace flashmla::sm90 {

void sparse_prefill_576(const SparsePrefillKernelParams& params, cudaStream_t stream);
void sparse_prefill_512(const SparsePrefillKernelParams& params, cudaStream_t stream);

}  // namespace flashmla::sm90
