#include "api/q_tile_map.h"

#include "api/checks.h"
#include "api/tensor_map.h"
#include "flashmla/decode_schedule.h"

namespace flashmla::detail {

bool q_tile_source_aligned(const QTileSource& source) {
  const auto aligned = [](int64_t elements) { return elements > 0 && elements * 2 % 16 == 0; };
  return source.q != nullptr && source.head_dim > 0 && source.num_heads > 0 &&
         source.seqlen_q > 0 && source.batch > 0 &&
         reinterpret_cast<uintptr_t>(source.q) % 16 == 0 &&
         (source.num_heads == 1 || aligned(source.head_stride)) &&
         (source.seqlen_q == 1 || aligned(source.seq_stride)) &&
         (source.batch == 1 || aligned(source.batch_stride));
}

bool make_q_tile_map(const QTileSource& source, CUtensorMap& map) {
  if (!q_tile_source_aligned(source)) return false;
  // Dims innermost first: head_dim, head, query token, sequence (a unit dim's stride is never
  // used: any aligned value).
  const uint64_t dims[4] = {uint64_t(source.head_dim), uint64_t(source.num_heads),
                            uint64_t(source.seqlen_q), uint64_t(source.batch)};
  const auto stride_bytes = [](int count, int64_t stride) {
    return count > 1 ? uint64_t(stride) * 2 : uint64_t(16);
  };
  const uint64_t strides[3] = {stride_bytes(source.num_heads, source.head_stride),
                               stride_bytes(source.seqlen_q, source.seq_stride),
                               stride_bytes(source.batch, source.batch_stride)};
  const uint32_t box[4] = {64, uint32_t(kDecodeRowsPerBlock), 1, 1};
  try {
    map = make_tensor_map_4d_16bit(source.q, dims, strides, box, "q");
  } catch (const Error&) {
    return false;  // a layout the driver does not take: the copies serve it
  }
  return true;
}

namespace {

// Dense and sparse decode spell q's fields alike.
template <class Params>
QTileSource q_tile_source_of(const Params& params) {
  return {params.q,     params.head_dim_qk,   params.num_heads_q,  params.seqlen_q,
          params.batch, params.q_head_stride, params.q_seq_stride, params.q_batch_stride};
}

}  // namespace

QTileSource q_tile_source(const DenseDecodeParams& params) {
  return q_tile_source_of(params);
}
QTileSource q_tile_source(const SparseDecodeParams& params) {
  return q_tile_source_of(params);
}

bool q_tile_by_tma_eligible(const DenseDecodeParams& params) {
  if (params.num_heads_kv <= 0 || params.num_heads_q % params.num_heads_kv != 0) return false;
  const int heads_per_kv = params.num_heads_q / params.num_heads_kv;
  return heads_per_kv % kDecodeRowsPerBlock == 0 && q_tile_source_aligned(q_tile_source(params));
}

bool q_tile_by_tma_eligible(const SparseDecodeParams& params) {
  return params.num_heads_q > 32 && q_tile_source_aligned(q_tile_source(params));
}

}  // namespace flashmla::detail
