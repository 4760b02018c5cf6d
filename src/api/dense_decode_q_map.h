// Whether the dense-decode seesaw kernel can load its Q tiles by TMA (a tensor map over q): every
// m-block must be 64 heads of one query token, and q's base and strides must suit a tensor map.
// Otherwise the kernel copies Q with cp.async (docs/perf-notes.md, "The seesaw's Q by TMA").
#pragma once

#include "flashmla/dense_decode.h"

namespace flashmla::detail {

// heads_per_kv a multiple of 64, q 16-byte aligned, and the strides of every dim with more than
// one element positive multiples of 16 bytes.
bool q_tile_by_tma_eligible(const DenseDecodeParams& params);

}  // namespace flashmla::detail
