// Where the split-KV partial results live inside the caller's workspace.
#pragma once

#include <cstdint>

#include "flashmla/dense_decode.h"

namespace flashmla::detail {

// o_accum: float [max_splits, h_kv, s_q * h_q / h_kv, d_v]; lse_accum: float [max_splits,
// h_kv, s_q * h_q / h_kv], indexed by the global split slot num_splits[i] + split.
struct DenseDecodeWorkspaceLayout {
  int64_t o_accum_offset = 0, o_accum_bytes = 0;
  int64_t lse_accum_offset = 0, lse_accum_bytes = 0;
  int64_t total_bytes = 0;
};

// The layout for `max_splits` splits of `rows` query rows (over all KV heads) of d_v columns.
DenseDecodeWorkspaceLayout decode_workspace_layout(int64_t max_splits, int64_t rows,
                                                   int64_t head_dim_v);

DenseDecodeWorkspaceLayout dense_decode_workspace_layout(const DenseDecodeParams& params);

}  // namespace flashmla::detail
