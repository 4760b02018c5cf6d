// flash_mla::sparse_prefill_fwd (spec section 3): tensor checks -> flashmla::SparsePrefillParams
// -> flashmla::sparse_prefill. Shapes, dtypes, devices and layouts are checked here (the params
// struct cannot express a mismatch between two tensors); values such as head counts, head dims,
// the softmax scale and stride alignment are checked by the C++ core, whose errors are translated
// with the argument they name.
//
// The schema is registered here (a fragment of the flash_mla library defined in ops.cpp); its
// fake implementation lives in python/flash_mla/_ops_sparse_prefill.py (named by
// set_python_module).
#include <cmath>
#include <optional>
#include <tuple>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include "flashmla/sparse_prefill.h"
#include "ops.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {
namespace {

constexpr const char* kOp = "flash_mla_sparse_fwd";
// The only value width of MLA (spec: V is the first 512 columns of each kv row).
constexpr int64_t kHeadDimV = 512;

// An optional tensor of one dimension (attn_sink [h_q], topk_length [s_q]).
void check_vector(const at::Tensor& t, const char* arg, const c10::Device& device,
                  at::ScalarType dtype, int64_t size, const char* layout, const char* why) {
  check_same_device(t, kOp, arg, device);
  check_dtype(t, kOp, arg, dtype);
  check_dim(t, kOp, arg, 1, layout);
  check_size(t, kOp, arg, 0, size, why);
  check_contiguous(t, kOp, arg);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_prefill_fwd(
    const at::Tensor& q, const at::Tensor& kv, const at::Tensor& indices, double sm_scale,
    int64_t d_v, const std::optional<at::Tensor>& attn_sink,
    const std::optional<at::Tensor>& topk_length) {
  // q first: every other shape is checked against it.
  check_cuda(q, kOp, "q");
  const c10::Device device = q.device();
  check_dtype(q, kOp, "q", at::kBFloat16);
  check_dim(q, kOp, "q", 3, "[seqlen_q, num_heads_q, head_dim]");
  check_last_dim_contiguous(q, kOp, "q");
  const int64_t seqlen_q = q.size(0), num_heads_q = q.size(1), d_qk = q.size(2);

  check_same_device(kv, kOp, "kv", device);
  check_dtype(kv, kOp, "kv", at::kBFloat16);
  check_dim(kv, kOp, "kv", 3, "[seqlen_kv, num_heads_kv = 1, head_dim]");
  if (kv.size(1) != 1) {
    fail(kOp, "kv",
         "must have num_heads_kv = 1 (dimension 1): MLA shares one latent KV head across the "
         "query heads, got shape ",
         kv.sizes());
  }
  check_size(kv, kOp, "kv", 2, d_qk, "the head_dim of q");
  if (kv.size(0) < 1) {
    fail(kOp, "kv", "must hold at least one token (seqlen_kv >= 1), got shape ", kv.sizes());
  }
  check_last_dim_contiguous(kv, kOp, "kv");

  check_same_device(indices, kOp, "indices", device);
  check_dtype(indices, kOp, "indices", at::kInt);
  check_dim(indices, kOp, "indices", 3, "[seqlen_q, num_heads_kv = 1, topk]");
  check_size(indices, kOp, "indices", 0, seqlen_q, "the seqlen_q of q");
  check_size(indices, kOp, "indices", 1, 1, "num_heads_kv = 1, as kv");
  if (indices.size(2) < 1) {
    fail(kOp, "indices", "must have at least one column (topk >= 1), got shape ", indices.sizes());
  }
  check_last_dim_contiguous(indices, kOp, "indices");

  if (d_v != kHeadDimV) {
    fail(kOp, "d_v", "must be 512 (V is the first 512 columns of each kv row), got ", d_v);
  }
  if (!std::isfinite(sm_scale)) fail(kOp, "sm_scale", "must be finite, got ", sm_scale);
  if (attn_sink.has_value()) {
    check_vector(*attn_sink, "attn_sink", device, at::kFloat, num_heads_q, "[num_heads_q]",
                 "the num_heads_q of q");
  }
  if (topk_length.has_value()) {
    check_vector(*topk_length, "topk_length", device, at::kInt, seqlen_q, "[seqlen_q]",
                 "the seqlen_q of q");
  }

  const c10::cuda::CUDAGuard device_guard(device);
  const at::TensorOptions float_options = q.options().dtype(at::kFloat);
  at::Tensor out = at::empty({seqlen_q, num_heads_q, d_v}, q.options());
  at::Tensor max_logits = at::empty({seqlen_q, num_heads_q}, float_options);
  at::Tensor lse = at::empty({seqlen_q, num_heads_q}, float_options);
  if (seqlen_q == 0) {
    // No query token: nothing to compute (the kernel needs seqlen_q >= 1). The other
    // arguments were checked above, so a malformed empty call still fails.
    return {out, max_logits, lse};
  }

  SparsePrefillParams params;
  params.seqlen_q = to_int(seqlen_q, kOp, "q");
  params.num_heads_q = to_int(num_heads_q, kOp, "q");
  params.head_dim_qk = to_int(d_qk, kOp, "q");
  params.head_dim_v = to_int(d_v, kOp, "d_v");
  params.softmax_scale = static_cast<float>(sm_scale);

  params.q = q.data_ptr();
  params.q_seq_stride = layout_stride(q, 0);
  params.q_head_stride = layout_stride(q, 1);

  params.kv = kv.data_ptr();
  params.num_kv_tokens = kv.size(0);
  params.kv_token_stride = layout_stride(kv, 0);

  params.indices = indices.data_ptr<int32_t>();
  params.indices_seq_stride = layout_stride(indices, 0);
  params.topk = to_int(indices.size(2), kOp, "indices");
  params.topk_length = topk_length.has_value() ? topk_length->data_ptr<int32_t>() : nullptr;
  params.attn_sink = attn_sink.has_value() ? attn_sink->data_ptr<float>() : nullptr;

  params.out = out.data_ptr();
  params.out_seq_stride = layout_stride(out, 0);
  params.out_head_stride = layout_stride(out, 1);
  params.max_logits = max_logits.data_ptr<float>();
  params.max_logits_seq_stride = layout_stride(max_logits, 0);
  params.lse = lse.data_ptr<float>();
  params.lse_seq_stride = layout_stride(lse, 0);

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  translate_errors(kOp, [&] { sparse_prefill(params, stream); });
  return {out, max_logits, lse};
}

}  // namespace flashmla::torch_binding

namespace fb = flashmla::torch_binding;

TORCH_LIBRARY_FRAGMENT(flash_mla, m) {
  // The fake (meta) implementation used by torch.compile is registered by this module.
  // PyTorch checks that register_fake is called from exactly the module named here (not from a
  // module that imports it), so this names _ops_sparse_prefill, not flash_mla._ops.
  m.set_python_module("flash_mla._ops_sparse_prefill");
  m.def(
      "sparse_prefill_fwd(Tensor q, Tensor kv, Tensor indices, float sm_scale, int d_v, "
      "Tensor? attn_sink, Tensor? topk_length) -> (Tensor out, Tensor max_logits, Tensor lse)");
}

TORCH_LIBRARY_IMPL(flash_mla, CUDA, m) {
  m.impl("sparse_prefill_fwd", &fb::sparse_prefill_fwd);
}

// CPU tensors reach the same function, which rejects them with an error naming the argument.
TORCH_LIBRARY_IMPL(flash_mla, CPU, m) {
  m.impl("sparse_prefill_fwd", &fb::sparse_prefill_fwd);
}
