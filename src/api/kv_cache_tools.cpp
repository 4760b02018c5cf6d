// FP8 KV-cache tools, device entry points: validation -> device check -> kernel launch.
// No host synchronisation and no allocation, so both are safe to capture in a CUDA graph.
#include "flashmla/kv_cache_tools.h"

#include "api/checks.h"
#include "api/validate_kv_cache_tools.h"
#include "kernels/common/kv_cache_quant.h"

namespace flashmla {

namespace {

void check_current_device() {
  int device = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_device_supported(device);
}

}  // namespace

void write_kv_cache(const KVCacheWriteParams& params, cudaStream_t stream) {
  detail::validate_kv_cache_write(params, "write_kv_cache");
  check_current_device();
  if (params.num_tokens == 0) return;
  kernels::launch_kv_cache_write(params, stream);
}

void dequantize_kv_cache(const KVCacheDequantizeParams& params, cudaStream_t stream) {
  detail::validate_kv_cache_dequantize(params, "dequantize_kv_cache");
  check_current_device();
  kernels::launch_kv_cache_dequantize(params, stream);
}

}  // namespace flashmla
