// Host arithmetic of the FP8 KV-cache layouts (kv_cache_format.h): the oracle for the
// FP8 cache tools and the dequantization that the sparse-decode reference applies.
#pragma once

#include <cstdint>

#include "flashmla/kv_cache_format.h"

namespace flashmla::reference {

// Dequantizes token `row` of one page block (`block_base`, host memory) into head_dim_qk
// bfloat16 bit patterns: bfloat16(float(e4m3) * scale) for NoPE values, RoPE copied.
// token_stride (bytes) is used by kBFloat16 and kFp8V32; kFp8Model1 has a fixed layout.
void dequantize_token_host(KVCacheFormat format, int head_dim_qk, const uint8_t* block_base,
                           int page_block_size, int row, int64_t token_stride,
                           uint16_t* out_bf16_bits);

}  // namespace flashmla::reference
