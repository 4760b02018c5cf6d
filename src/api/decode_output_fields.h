// The output fields (out, lse and their strides) that the decode params structs, the kernels'
// params and the combine kernel's params all carry under the same names.
#pragma once

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

}  // namespace flashmla::detail
