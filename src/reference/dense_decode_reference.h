// CPU reference of dense MLA decode (spec section 1), accumulated in double. Tests compare
// the GPU kernels against it.
#pragma once

#include <cstdint>

#include "flashmla/dense_decode.h"

namespace flashmla::reference {

// Computes dense decode on the host from the same params struct as flashmla::dense_decode,
// except that q, k_cache, block_table and cache_seqlens are HOST pointers. The strides of q,
// k_cache and block_table are honoured as documented; the out/lse pointers and strides, the
// plan and the workspace fields are ignored. Results go to dense float arrays:
//   out: [batch, seqlen_q, num_heads_q, head_dim_v], lse: [batch, num_heads_q, seqlen_q].
// A query that attends to no token gets out = 0 and lse = +inf. Only the cache rows and table
// entries a sequence needs are read. Any page_block_size >= 1. block_table == nullptr is a
// non-paged cache, as in dense_decode: k_cache is [batch, page_block_size, h_kv, d_qk] (token t
// of sequence i at k_cache + i * k_block_stride + t * k_token_stride), num_blocks must be batch
// and max_blocks_per_seq 1, and block_table_batch_stride is ignored. batch == 0 computes
// nothing (pointers may then be null). Throws flashmla::Error on shapes it cannot compute, a
// negative length, a length needing more than max_blocks_per_seq pages (non-paged: a length
// above page_block_size, naming cache_seqlens), or a used table entry outside
// [0, num_blocks) (where dense_decode would mark the sequence NaN instead). Uses several
// threads for large problems.
//
// Optional extras (computed in the same pass when non-null), for rounding-aware comparisons:
//   out_abs:   [batch, seqlen_q, num_heads_q, head_dim_v] (the layout of out):
//              sum over attended tokens t of w_t * |v_t[c]|, w_t the softmax weights (0 for a
//              query that attends to no token);
//   max_logit: [batch, num_heads_q, seqlen_q] (the layout of lse): the largest scaled logit
//              softmax_scale * q.k over the attended tokens (-inf when there are none).
void dense_decode_reference(const DenseDecodeParams& params, float* out, float* lse,
                            float* out_abs = nullptr, float* max_logit = nullptr);

// Stores `out` (as produced above) into `params.dtype` bits, rounded to nearest even: what an
// exact kernel would write. `count` = batch * seqlen_q * num_heads_q * head_dim_v.
void round_output_to_dtype(const DenseDecodeParams& params, const float* out, uint16_t* out_bits,
                           int64_t count);

}  // namespace flashmla::reference
