// CPU reference of sparse MLA prefill (flashmla/sparse_prefill.h), accumulated in double. Tests
// compare the GPU kernel against it.
#pragma once

#include "flashmla/sparse_prefill.h"

namespace flashmla::reference {

// Computes sparse prefill on the host from the same params struct as flashmla::sparse_prefill,
// except that q, kv, the indices, topk_length and attn_sink are HOST pointers. Their strides
// are honoured as documented; the out / max_logits / lse pointers and strides are ignored.
// Results go to dense float arrays:
//   out: [seqlen_q, num_heads_q, head_dim_v], max_logits and lse: [seqlen_q, num_heads_q].
// Exactly the definition of sparse_prefill.h: the valid entries of a query token's index list
// (0 <= index < num_kv_tokens at a position below min(topk, topk_length[s]); a negative
// topk_length counts as 0) share one softmax, a token listed twice counts twice; out is scaled
// by the attention sink, max_logits and lse are not. A query with no valid token gets out = 0,
// max_logits = -inf and lse = +inf. Only rows that a valid index selects are read. Throws
// flashmla::Error on inputs it cannot compute (null pointers it needs, sizes < 1, head_dim_v
// outside [1, head_dim_qk]). Uses several threads for large problems.
//
// Optional extra (computed in the same pass when non-null), for rounding-aware comparisons:
//   out_abs: [seqlen_q, num_heads_q, head_dim_v] (the layout of out): sum over valid tokens t
//            of w_t * |v_t[c]|, w_t the weight out gives v_t (softmax weight times the sink
//            factor; 0 for a query with no valid token).
void sparse_prefill_reference(const SparsePrefillParams& params, float* out, float* max_logits,
                              float* lse, float* out_abs = nullptr);

}  // namespace flashmla::reference
