// Fields that the decode params structs, the kernels' params and the combine kernel's params
// carry under the same names.
#pragma once

#include "flashmla/decode_schedule.h"

namespace flashmla::detail {

template <class From, class To>
void copy_output_fields(const From& from, To& to) {
  to.out = from.out;
  to.out_batch_stride = from.out_batch_stride;
  to.out_seq_stride = from.out_seq_stride;
  to.out_head_stride = from.out_head_stride;
  to.lse = from.lse;
  to.lse_batch_stride = from.lse_batch_stride;
  to.lse_head_stride = from.lse_head_stride;
}

// The plan and split-KV workspace pointers of a kernel's params (`layout` from
// decode_workspace_layout of the same call).
template <class From, class Layout, class To>
void copy_plan_fields(const From& from, const Layout& layout, To& to) {
  char* workspace = static_cast<char*>(from.workspace);
  to.parts = reinterpret_cast<const DecodePartRange*>(from.tile_scheduler_metadata);
  to.num_splits = from.num_splits;
  to.o_accum = reinterpret_cast<float*>(workspace + layout.o_accum_offset);
  to.lse_accum = reinterpret_cast<float*>(workspace + layout.lse_accum_offset);
}

}  // namespace flashmla::detail
