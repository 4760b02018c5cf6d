// flash_mla::write_kv_cache and flash_mla::dequantize_kv_cache: the FP8 KV-cache tools
// (flashmla/kv_cache_tools.h) as PyTorch operators. Tensor-level checks (device, dtype, shape,
// the MODEL1 view) are done here and name the tensor argument; byte strides and alignment are
// checked by the C++ core, whose errors are rethrown naming the tensor the field came from.
//
// Layout strings: "v32" (FP8 V3.2, head_dim 576, 656 bytes a token), "model1" (FP8 MODEL1,
// head_dim 512: a [num_blocks, page_block_size, 1, 584] view of page blocks of
// padded_block_bytes, the block stride being stride(0)), "bf16" (plain bfloat16 rows).
// The schemas are registered here (a fragment of the flash_mla library defined in ops.cpp);
// their fake implementations live in python/flash_mla/_ops_kv_cache.py.
#include <algorithm>
#include <cstdint>
#include <string>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/string_view.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include "flashmla/common.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {
namespace {

constexpr const char* kWriteOp = "write_k_cache";
constexpr const char* kDequantizeOp = "dequantize_k_cache";
// kv rows are read with 16-byte vectors (validate_kv_cache_tools.h).
constexpr int64_t kVectorBytes = 16;

KVCacheFormat parse_layout(c10::string_view layout, const char* op) {
  const std::string name(layout.data(), layout.size());
  if (name == "v32") return KVCacheFormat::kFp8V32;
  if (name == "model1") return KVCacheFormat::kFp8Model1;
  if (name == "bf16") return KVCacheFormat::kBFloat16;
  fail(op, "layout", "must be 'v32' (FP8 V3.2), 'model1' (FP8 MODEL1) or 'bf16', got '", name, "'");
}

// The cache fields of the core's params, from a checked cache tensor.
struct CacheView {
  void* data = nullptr;
  int num_blocks = 0;
  int page_block_size = 0;
  int64_t block_stride = 0;  // bytes
  int64_t token_stride = 0;  // bytes
};

// `head_dim`: the layout's (FP8) or, for bf16, the one the cache must have.
CacheView check_cache(const at::Tensor& cache, const char* op, KVCacheFormat format,
                      int64_t head_dim, const char* head_dim_source) {
  constexpr const char* arg = "k_cache";
  check_cuda(cache, op, arg);
  const bool fp8 = format != KVCacheFormat::kBFloat16;
  if (fp8 && cache.scalar_type() != at::kFloat8_e4m3fn && cache.scalar_type() != at::kByte) {
    fail(op, arg, "must have dtype float8_e4m3fn or uint8 (the bytes of an FP8 cache), got ",
         dtype_name(cache.scalar_type()));
  }
  if (!fp8) check_dtype(cache, op, arg, at::kBFloat16);
  check_dim(cache, op, arg, 4,
            fp8 ? "[num_blocks, page_block_size, 1, bytes per token]"
                : "[num_blocks, page_block_size, 1, head_dim]");
  if (cache.size(0) < 1 || cache.size(1) < 1) {
    fail(op, arg, "must hold at least one page block of at least one token, got shape ",
         cache.sizes());
  }
  if (cache.size(2) != 1) {
    fail(op, arg, "must have one KV head (size 1 in dimension 2), got shape ", cache.sizes());
  }
  switch (format) {
    case KVCacheFormat::kFp8V32:
      check_size(cache, op, arg, 3, kFp8V32TokenBytes,
                 "bytes a token in the FP8 V3.2 layout: 512 e4m3 + 4 float32 scales + 64 bf16");
      break;
    case KVCacheFormat::kFp8Model1:
      check_size(cache, op, arg, 3, kFp8Model1RowBytes + kFp8Model1ScaleRowBytes,
                 "bytes a token in the FP8 MODEL1 layout: 448 e4m3 + 64 bf16 + 7 e8m0 scales + 1 "
                 "pad byte");
      break;
    case KVCacheFormat::kBFloat16:
      check_size(cache, op, arg, 3, head_dim, head_dim_source);
      break;
  }
  check_last_dim_contiguous(cache, op, arg);

  CacheView view;
  view.data = cache.data_ptr();
  view.num_blocks = to_int(cache.size(0), op, arg);
  view.page_block_size = to_int(cache.size(1), op, arg);
  const int64_t element_bytes = static_cast<int64_t>(cache.element_size());
  const int d = format == KVCacheFormat::kBFloat16 ? static_cast<int>(cache.size(3))
                                                   : kv_cache_format_head_dim(format);
  const int64_t min_block = kv_cache_min_block_bytes(format, view.page_block_size, d);
  if (format == KVCacheFormat::kFp8Model1) {
    // The tensor views each block's first page_block_size * 584 bytes; the data rows (576
    // bytes apart) and scale rows (8 bytes apart) inside are fixed by the layout.
    if (cache.size(1) > 1 && cache.stride(1) != kFp8Model1RowBytes + kFp8Model1ScaleRowBytes) {
      fail(op, arg,
           "must be the [num_blocks, page_block_size, 1, 584] view of whole MODEL1 page blocks "
           "(stride 584 in dimension 1), got strides ",
           cache.strides());
    }
    if (cache.size(0) > 1 && cache.stride(0) < min_block) {
      fail(op, arg, "must have a block stride (stride 0) of at least ", min_block,
           " bytes for page_block_size ", cache.size(1),
           " (576-byte data rows, then 8-byte scale rows, padded to a multiple of 576), got "
           "strides ",
           cache.strides());
    }
    view.token_stride = kFp8Model1RowBytes;
  } else {
    view.token_stride = layout_stride(cache, 1) * element_bytes;
  }
  // A single block is never stepped over: report the densest block stride there.
  view.block_stride = cache.size(0) == 1
                          ? std::max<int64_t>(layout_stride(cache, 0) * element_bytes, min_block)
                          : cache.stride(0) * element_bytes;
  return view;
}

// The argument of the operator that a field of the core's params comes from; head_dim_qk
// comes from `head_dim_source` (kv for writes, head_dim for dequantization).
const char* tensor_argument(const std::string& field, const char* head_dim_source) {
  if (field == "kv" || field == "kv_token_stride" || field == "num_tokens") return "kv";
  if (field == "slot_mapping") return "slot_mapping";
  if (field == "out") return "out";
  if (field == "head_dim_qk") return head_dim_source;
  if (field == "format") return "layout";
  return "k_cache";  // k_cache, num_blocks, page_block_size, block_stride, token_stride
}

// Runs a core call, rethrowing its errors with the tensor argument named (the message keeps
// the core's field name, e.g. "argument 'k_cache': write_kv_cache: block_stride must be ...").
template <typename Body>
void call_core(const char* op, const char* head_dim_source, Body&& body) {
  try {
    body();
  } catch (const flashmla::Error& error) {
    rethrow(op, flashmla::Error(error.kind(), tensor_argument(error.argument(), head_dim_source),
                                error.what()));
  }
}

}  // namespace

void write_kv_cache(const at::Tensor& kv, const at::Tensor& slot_mapping, const at::Tensor& k_cache,
                    c10::string_view layout) {
  constexpr const char* op = kWriteOp;
  const KVCacheFormat format = parse_layout(layout, op);
  check_cuda(kv, op, "kv");
  const c10::Device device = kv.device();
  check_dtype(kv, op, "kv", at::kBFloat16);
  check_dim(kv, op, "kv", 2, "[num_tokens, head_dim]");
  check_last_dim_contiguous(kv, op, "kv");
  const int64_t head_dim = kv.size(1);
  if (format != KVCacheFormat::kBFloat16 && head_dim != kv_cache_format_head_dim(format)) {
    fail(op, "kv", "must have head_dim ", kv_cache_format_head_dim(format), " for layout '",
         std::string(layout.data(), layout.size()), "', got shape ", kv.sizes());
  }
  check_same_device(slot_mapping, op, "slot_mapping", device);
  if (slot_mapping.scalar_type() != at::kLong && slot_mapping.scalar_type() != at::kInt) {
    fail(op, "slot_mapping", "must have dtype int64 or int32, got ",
         dtype_name(slot_mapping.scalar_type()));
  }
  check_dim(slot_mapping, op, "slot_mapping", 1, "[num_tokens]");
  check_size(slot_mapping, op, "slot_mapping", 0, kv.size(0), "the num_tokens of kv");
  check_same_device(k_cache, op, "k_cache", device);
  const CacheView cache = check_cache(k_cache, op, format, head_dim, "the head_dim of kv");

  const c10::cuda::CUDAGuard device_guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  // Stream-ordered copies (graph-safe): int64 contiguous slots, and kv rows 16-byte aligned.
  const at::Tensor slots = slot_mapping.to(at::kLong).contiguous();
  at::Tensor rows = kv;
  const bool aligned = reinterpret_cast<uintptr_t>(kv.data_ptr()) % kVectorBytes == 0 &&
                       (kv.size(0) <= 1 || (kv.stride(0) * 2) % kVectorBytes == 0);
  if (!aligned) rows = at::empty_like(kv, at::MemoryFormat::Contiguous).copy_(kv);

  KVCacheWriteParams params;
  params.format = format;
  params.head_dim_qk = to_int(head_dim, op, "kv");
  params.num_tokens = to_int(kv.size(0), op, "kv");
  params.kv = rows.data_ptr();
  params.kv_token_stride = layout_stride(rows, 0);
  params.slot_mapping = slots.data_ptr<int64_t>();
  params.k_cache = cache.data;
  params.num_blocks = cache.num_blocks;
  params.page_block_size = cache.page_block_size;
  params.block_stride = cache.block_stride;
  params.token_stride = cache.token_stride;
  call_core(op, "kv", [&] { flashmla::write_kv_cache(params, stream); });
}

at::Tensor dequantize_kv_cache(const at::Tensor& k_cache, c10::string_view layout,
                               int64_t head_dim) {
  constexpr const char* op = kDequantizeOp;
  const KVCacheFormat format = parse_layout(layout, op);
  if (format != KVCacheFormat::kBFloat16 && head_dim != kv_cache_format_head_dim(format)) {
    fail(op, "head_dim", "must be ", kv_cache_format_head_dim(format), " for layout '",
         std::string(layout.data(), layout.size()), "', got ", head_dim);
  }
  if (head_dim <= 0) fail(op, "head_dim", "must be positive, got ", head_dim);
  const CacheView cache = check_cache(k_cache, op, format, head_dim, "the head_dim argument");

  const c10::cuda::CUDAGuard device_guard(k_cache.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(k_cache.get_device()).stream();
  at::Tensor out = at::empty({k_cache.size(0), k_cache.size(1), 1, head_dim},
                             k_cache.options().dtype(at::kBFloat16));

  KVCacheDequantizeParams params;
  params.format = format;
  params.head_dim_qk = to_int(head_dim, op, "head_dim");
  params.k_cache = cache.data;
  params.num_blocks = cache.num_blocks;
  params.page_block_size = cache.page_block_size;
  params.block_stride = cache.block_stride;
  params.token_stride = cache.token_stride;
  params.out = out.data_ptr();
  call_core(op, "head_dim", [&] { flashmla::dequantize_kv_cache(params, stream); });
  return out;
}

}  // namespace flashmla::torch_binding

namespace fb = flashmla::torch_binding;

TORCH_LIBRARY_FRAGMENT(flash_mla, m) {
  // The fake (meta) implementations used by torch.compile are registered by this module.
  // PyTorch checks that register_fake is called from exactly the module named here (not from a
  // module it imports), so this names _ops_kv_cache, not flash_mla._ops.
  m.set_python_module("flash_mla._ops_kv_cache");
  m.def("write_kv_cache(Tensor kv, Tensor slot_mapping, Tensor(a!) k_cache, str layout) -> ()");
  m.def("dequantize_kv_cache(Tensor k_cache, str layout, int head_dim) -> Tensor");
}

TORCH_LIBRARY_IMPL(flash_mla, CUDA, m) {
  m.impl("write_kv_cache", &fb::write_kv_cache);
  m.impl("dequantize_kv_cache", &fb::dequantize_kv_cache);
}

// CPU tensors reach the same functions, which reject them with an error naming the argument.
TORCH_LIBRARY_IMPL(flash_mla, CPU, m) {
  m.impl("write_kv_cache", &fb::write_kv_cache);
  m.impl("dequantize_kv_cache", &fb::dequantize_kv_cache);
}
