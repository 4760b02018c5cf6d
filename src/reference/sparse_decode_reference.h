// CPU reference of sparse MLA decode (flashmla/sparse_decode.h), accumulated in double. Tests
// compare the GPU kernels against it.
#pragma once

#include "flashmla/sparse_decode.h"

namespace flashmla::reference {

// Computes sparse decode on the host from the same params struct as flashmla::sparse_decode,
// except that q, both caches, the indices, topk_length / extra.topk_length and attn_sink are
// HOST pointers. Strides are honoured as documented; the out/lse pointers and strides, the plan
// and the workspace fields are ignored. Results go to dense float arrays:
//   out: [batch, seqlen_q, num_heads_q, head_dim_v], lse: [batch, num_heads_q, seqlen_q].
// Exactly the definition of sparse_decode.h: the valid main and extra tokens of a query share
// one softmax (a token listed twice counts twice); K rows are dequantized to bfloat16 with the
// cache tools' arithmetic; out is scaled by the attention sink, lse is not. A query with no
// valid token gets out = 0 and lse = +inf. Only rows that a valid index selects are read.
// A negative topk_length entry counts as 0. Throws flashmla::Error on inputs it cannot compute
// (null pointers it needs, sizes < 1, a head_dim_qk the format does not store). Uses several
// threads for large problems.
//
// Optional extras (computed in the same pass when non-null), for rounding-aware comparisons:
//   out_abs:   [batch, seqlen_q, num_heads_q, head_dim_v] (the layout of out):
//              sum over valid tokens t of w_t * |v_t[c]|, w_t the weight out gives v_t (softmax
//              weight times the sink factor; 0 for a query with no valid token);
//   max_logit: [batch, num_heads_q, seqlen_q] (the layout of lse): the largest scaled logit
//              softmax_scale * q.k over the valid tokens (-inf when there are none).
void sparse_decode_reference(const SparseDecodeParams& params, float* out, float* lse,
                             float* out_abs = nullptr, float* max_logit = nullptr);

}  // namespace flashmla::reference
