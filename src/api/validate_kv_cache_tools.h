// Host-side validation of the FP8 KV-cache tools' params (kv_cache_tools.h). Every failure
// throws flashmla::Error naming the field, e.g.
//   write_kv_cache: head_dim_qk must be 576 (the fp8_v32 format), got 512
// `fn` is the entry point named in the message (write_kv_cache, write_kv_cache_host, ...).
#pragma once

#include "flashmla/kv_cache_tools.h"

namespace flashmla::detail {

// Rows are moved with 16-byte accesses on the device: the cache, kv and out pointers and the
// strides between their rows must be multiples of this many bytes.
inline constexpr int64_t kKVCacheVectorBytes = 16;

void validate_kv_cache_write(const KVCacheWriteParams& params, const char* fn);
void validate_kv_cache_dequantize(const KVCacheDequantizeParams& params, const char* fn);

}  // namespace flashmla::detail
