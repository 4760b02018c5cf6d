// Workspace of dense decode: the split-KV partial outputs and their log-sum-exps.
#include <algorithm>
#include <cstdint>

#include "api/dense_decode_workspace.h"
#include "flashmla/dense_decode.h"

namespace flashmla {

namespace detail {

DenseDecodeWorkspaceLayout decode_workspace_layout(int64_t max_splits, int64_t rows,
                                                   int64_t head_dim_v) {
  DenseDecodeWorkspaceLayout layout;
  const auto align = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  layout.o_accum_offset = 0;
  layout.o_accum_bytes = align(max_splits * rows * head_dim_v * 4);
  layout.lse_accum_offset = layout.o_accum_bytes;
  layout.lse_accum_bytes = align(max_splits * rows * 4);
  layout.total_bytes = std::max<int64_t>(layout.lse_accum_offset + layout.lse_accum_bytes, 256);
  return layout;
}

DenseDecodeWorkspaceLayout dense_decode_workspace_layout(const DenseDecodeParams& params) {
  // Every sequence has one split and every part boundary adds at most one more.
  const int64_t max_splits = int64_t(std::max(params.batch, 0)) + std::max(params.num_parts, 1);
  const int64_t rows = int64_t(std::max(params.seqlen_q, 0)) * std::max(params.num_heads_q, 0);
  return decode_workspace_layout(max_splits, rows, std::max(params.head_dim_v, 0));
}

}  // namespace detail

size_t dense_decode_workspace_bytes(const DenseDecodeParams& params) {
  return static_cast<size_t>(detail::dense_decode_workspace_layout(params).total_bytes);
}

}  // namespace flashmla
