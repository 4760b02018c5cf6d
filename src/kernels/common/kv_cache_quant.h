// Launchers of the FP8 KV-cache kernels (kv_cache_quant.cu). Params are validated by the
// caller (src/api/kv_cache_tools.cpp); these only launch, on `stream`, without synchronising.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmla/kv_cache_tools.h"

namespace flashmla::kernels {

// One warp per token of kv; num_tokens must be >= 1.
void launch_kv_cache_write(const KVCacheWriteParams& params, cudaStream_t stream);

// One warp per (block, row) of the cache.
void launch_kv_cache_dequantize(const KVCacheDequantizeParams& params, cudaStream_t stream);

}  // namespace flashmla::kernels
