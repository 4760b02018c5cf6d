// The tail both decode operators share: allocate out / lse, attach the plan, take the split-KV
// workspace from the caching allocator and run the C++ entry point.
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/ATen.h>

#include "tensor_checks.h"

namespace flashmla::torch_binding {

// `params` is a DenseDecodeParams or SparseDecodeParams with every input field set.
// workspace_bytes(params) and run(params) are the C++ core's functions for it.
template <class Params, class WorkspaceBytes, class Run>
std::tuple<at::Tensor, at::Tensor> run_decode(Params& params, const char* op, const at::Tensor& q,
                                              int64_t head_dim_v,
                                              const at::Tensor& tile_scheduler_metadata,
                                              const at::Tensor& num_splits,
                                              WorkspaceBytes workspace_bytes, Run run) {
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), head_dim_v}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  params.out = out.data_ptr();
  params.out_batch_stride = layout_stride(out, 0);
  params.out_seq_stride = layout_stride(out, 1);
  params.out_head_stride = layout_stride(out, 2);
  params.lse = lse.data_ptr<float>();
  params.lse_batch_stride = layout_stride(lse, 0);
  params.lse_head_stride = layout_stride(lse, 1);

  params.tile_scheduler_metadata = tile_scheduler_metadata.data_ptr<int32_t>();
  params.num_splits = num_splits.data_ptr<int32_t>();
  params.num_parts = to_int(tile_scheduler_metadata.size(0), op, "tile_scheduler_metadata");

  // Split-KV scratch from the caching allocator: stream-ordered, so it is safe to free when this
  // function returns, and inside a CUDA graph capture it comes from the graph's private pool.
  const size_t bytes = translate_errors(op, [&] { return workspace_bytes(params); });
  at::Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
  params.workspace = workspace.data_ptr();
  params.workspace_bytes = bytes;

  translate_errors(op, [&] { run(params); });
  return {out, lse};
}

}  // namespace flashmla::torch_binding
