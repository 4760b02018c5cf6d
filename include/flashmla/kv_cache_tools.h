// FP8 KV-cache tools (spec section 2 layouts): quantize bfloat16 tokens into a paged FP8
// cache, and dequantize a cache back to bfloat16. Serving engines call write_kv_cache every
// decoding step to store the new tokens' latent + RoPE rows.
//
// Scale rule (both FP8 layouts): for each group of NoPE values (128 for V3.2, 64 for MODEL1),
// scale = 2^ceil(log2(max(amax / 448, 1e-4))) (amax = largest |value| of the group, in float32),
// stored as float32 (V3.2) or as an e8m0 exponent byte (MODEL1); each value is stored as
// float8_e4m3fn(value / scale) (round to nearest even, saturating at +-448). RoPE values are
// copied as bfloat16. Dequantization: bfloat16(float(fp8) * scale).
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

#include "flashmla/common.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla {

// Writes num_tokens bfloat16 rows into cache slots (slot = block * page_block_size + row).
struct KVCacheWriteParams {
  KVCacheFormat format = KVCacheFormat::kFp8V32;  // kFp8V32 or kFp8Model1 (or kBFloat16: a copy)
  int head_dim_qk = 0;                            // 576 (V3.2) or 512 (MODEL1); bfloat16: either
  int num_tokens = 0;
  const void* kv = nullptr;               // [num_tokens, head_dim_qk] bfloat16 (device)
  int64_t kv_token_stride = 0;            // elements
  const int64_t* slot_mapping = nullptr;  // [num_tokens] int64 (device); -1 = skip the token
  void* k_cache = nullptr;                // num_blocks page blocks in `format` (device)
  int num_blocks = 0;
  int page_block_size = 0;
  int64_t block_stride = 0;  // bytes
  int64_t token_stride = 0;  // bytes (ignored for kFp8Model1)
};

// Graph-safe, no host synchronisation. A slot outside [0, num_blocks * page_block_size) other
// than -1 is skipped too (never written). Bit-identical to the Python quantizer.
void write_kv_cache(const KVCacheWriteParams& params, cudaStream_t stream);

// Dequantizes every token of a cache into bfloat16 rows [num_blocks, page_block_size, head_dim_qk].
struct KVCacheDequantizeParams {
  KVCacheFormat format = KVCacheFormat::kFp8V32;
  int head_dim_qk = 0;
  const void* k_cache = nullptr;
  int num_blocks = 0;
  int page_block_size = 0;
  int64_t block_stride = 0;  // bytes
  int64_t token_stride = 0;  // bytes (ignored for kFp8Model1)
  void* out = nullptr;       // [num_blocks, page_block_size, head_dim_qk] bfloat16, contiguous
};

void dequantize_kv_cache(const KVCacheDequantizeParams& params, cudaStream_t stream);

// Host versions of the same arithmetic (host pointers), for tests and tools.
void write_kv_cache_host(const KVCacheWriteParams& params);
void dequantize_kv_cache_host(const KVCacheDequantizeParams& params);

}  // namespace flashmla
