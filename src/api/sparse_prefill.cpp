// Sparse prefill entry point: validation -> device check -> the sparse-prefill kernel.
#include <algorithm>
#include <cstdint>

#include "api/checks.h"
#include "flashmla/sparse_prefill.h"
#include "kernels/sm90/sparse_prefill/dispatch.h"

namespace flashmla {

namespace {

sm90::SparsePrefillKernelParams make_kernel_params(const SparsePrefillParams& params,
                                                   int sm_count) {
  sm90::SparsePrefillKernelParams k{};
  k.seqlen_q = params.seqlen_q;
  k.num_heads_q = params.num_heads_q;
  k.num_head_blocks = (params.num_heads_q + 63) / 64;
  k.num_items = int64_t(params.seqlen_q) * k.num_head_blocks;
  // An even grid keeps a token's two head blocks on neighbouring CTAs (kernel.cuh).
  k.num_ctas = static_cast<int>(std::min<int64_t>(k.num_items, std::max(sm_count / 2 * 2, 1)));
  k.topk = params.topk;
  k.scale_log2 = params.softmax_scale * 1.4426950408889634f;
  k.q = static_cast<const __nv_bfloat16*>(params.q);
  k.q_seq_stride = params.q_seq_stride;
  k.q_head_stride = params.q_head_stride;
  k.kv = static_cast<const __nv_bfloat16*>(params.kv);
  k.kv_token_stride = params.kv_token_stride;
  k.num_kv_tokens = static_cast<int>(params.num_kv_tokens);  // validated <= INT32_MAX
  k.indices = params.indices;
  k.indices_seq_stride = params.indices_seq_stride;
  k.topk_length = params.topk_length;
  k.attn_sink = params.attn_sink;
  k.out = static_cast<__nv_bfloat16*>(params.out);
  k.out_seq_stride = params.out_seq_stride;
  k.out_head_stride = params.out_head_stride;
  k.max_logits = params.max_logits;
  k.max_logits_seq_stride = params.max_logits_seq_stride;
  k.lse = params.lse;
  k.lse_seq_stride = params.lse_seq_stride;
  return k;
}

}  // namespace

void sparse_prefill(const SparsePrefillParams& params, cudaStream_t stream) {
  validate_sparse_prefill(params);
  int device = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_device_supported(device);
  const sm90::SparsePrefillKernelParams kernel_params =
      make_kernel_params(params, device_sm_count(device));
  if (params.head_dim_qk == 576) {
    sm90::sparse_prefill_576(kernel_params, stream);
  } else {
    sm90::sparse_prefill_512(kernel_params, stream);
  }
}

}  // namespace flashmla
