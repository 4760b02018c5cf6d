// Dense decode entry point: validation -> device check -> TMA map -> split-KV kernel ->
// combine kernel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "api/checks.h"
#include "api/decode_output_fields.h"
#include "api/device_error_record.h"
#include "api/q_tile_map.h"
#include "api/dense_decode_workspace.h"
#include "api/tensor_map.h"
#include "flashmla/dense_decode.h"
#include "kernels/common/combine.h"
#include "kernels/sm90/dense_decode/dispatch.h"

namespace flashmla {

namespace {

// Rows per TMA load of a KV tile (see DenseDecodeKernelParams::load_rows).
int kv_load_rows(const DenseDecodeParams& params) {
  const int page = params.page_block_size;
  if (params.max_blocks_per_seq == 1) return std::min(page, kDecodeTileTokens);  // one page
  if (page % kDecodeTileTokens == 0) return kDecodeTileTokens;
  return std::gcd(page, kDecodeTileTokens);
}

sm90::DenseDecodeKernelParams make_kernel_params(const DenseDecodeParams& params) {
  const auto layout = detail::dense_decode_workspace_layout(params);
  sm90::DenseDecodeKernelParams k{};
  k.batch = params.batch;
  k.seqlen_q = params.seqlen_q;
  k.num_heads_kv = params.num_heads_kv;
  k.heads_per_kv = params.num_heads_q / params.num_heads_kv;
  k.rows_per_kv = params.seqlen_q * k.heads_per_kv;
  k.page_block_size = params.page_block_size;
  k.page_divisor = FastDivisor(uint32_t(std::max(params.page_block_size, 1)));
  k.max_blocks_per_seq = params.max_blocks_per_seq;
  k.num_blocks = params.num_blocks;
  k.load_rows = kv_load_rows(params);
  k.causal = params.causal && params.seqlen_q > 1;
  k.scale_log2 = params.softmax_scale * 1.4426950408889634f;
  k.q = params.q;
  k.q_batch_stride = params.q_batch_stride;
  k.q_seq_stride = params.q_seq_stride;
  k.q_head_stride = params.q_head_stride;
  k.block_table = params.block_table;
  k.block_table_batch_stride = params.block_table_batch_stride;
  k.cache_seqlens = params.cache_seqlens;
  detail::copy_output_fields(params, k);
  detail::copy_plan_fields(params, layout, k);
  k.error_record = detail::device_error_record_address();
  return k;
}

CUtensorMap make_k_cache_map(const DenseDecodeParams& params) {
  // Dims innermost first: head_dim_qk, token in page, KV head, page. Box: 64 columns x
  // load_rows tokens of one head of one page (a 128-byte swizzled box of a KV tile, or a piece
  // of one).
  const uint64_t dims[4] = {uint64_t(params.head_dim_qk), uint64_t(params.page_block_size),
                            uint64_t(params.num_heads_kv), uint64_t(params.num_blocks)};
  const uint64_t strides[3] = {uint64_t(params.k_token_stride) * 2,
                               uint64_t(params.k_head_stride) * 2,
                               uint64_t(params.k_block_stride) * 2};
  const uint32_t box[4] = {64, uint32_t(kv_load_rows(params)), 1, 1};
  return detail::make_tensor_map_4d_16bit(params.k_cache, dims, strides, box, "k_cache");
}

}  // namespace

void dense_decode(const DenseDecodeParams& params, cudaStream_t stream) {
  validate_dense_decode(params);
  if (params.batch == 0) return;
  int device = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_device_supported(device);
  // Checked mode: a fresh record before, a synchronisation and a look at it after (not while
  // capturing a graph, where nothing runs yet).
  const bool checked =
      (params.checked || checked_mode_from_environment()) && !detail::stream_is_capturing(stream);
  if (checked) clear_device_error_record(stream);

  sm90::DenseDecodeKernelParams kernel_params = make_kernel_params(params);
  const CUtensorMap k_map = make_k_cache_map(params);
  const int num_m_blocks =
      (kernel_params.rows_per_kv + kDecodeRowsPerBlock - 1) / kDecodeRowsPerBlock;
  const bool bf16 = params.dtype == ScalarType::kBFloat16;
  // The seesaw kernel (both warpgroups compute scores, their softmaxes alternate) is the faster
  // one where the tensor cores set the pace: 256 or more query rows per KV head (h_q 128 with
  // s_q >= 2), measured 1-3% ahead there and 2-7% behind with fewer rows (docs/perf-notes.md).
  // It needs whole-tile loads (its two load parts are issued by the two warpgroups); tiles loaded
  // in pieces (pages sharing less than 64 tokens with a tile) take the kernel with one softmax
  // warpgroup, whose loading warps spread the pieces.
  constexpr int kSeesawMinRows = 256;
  const bool seesaw =
      kernel_params.load_rows == kDecodeTileTokens && kernel_params.rows_per_kv >= kSeesawMinRows;
  const auto launch =
      seesaw
          ? (params.head_dim_qk == 576
                 ? (bf16 ? sm90::dense_decode_seesaw_bf16_576 : sm90::dense_decode_seesaw_fp16_576)
                 : (bf16 ? sm90::dense_decode_seesaw_bf16_512 : sm90::dense_decode_seesaw_fp16_512))
          : (params.head_dim_qk == 576
                 ? (bf16 ? sm90::dense_decode_bf16_576 : sm90::dense_decode_fp16_576)
                 : (bf16 ? sm90::dense_decode_bf16_512 : sm90::dense_decode_fp16_512));
  CUtensorMap q_map{};
  kernel_params.q_by_tma = detail::q_tile_by_tma_eligible(params) &&
                           detail::make_q_tile_map(detail::q_tile_source(params), q_map);
  launch(kernel_params, k_map, q_map, num_m_blocks, params.num_parts, stream);

  kernels::CombineParams combine{};
  combine.batch = params.batch;
  combine.seqlen_q = params.seqlen_q;
  combine.num_heads_kv = params.num_heads_kv;
  combine.heads_per_kv = kernel_params.heads_per_kv;
  combine.rows_per_kv = kernel_params.rows_per_kv;
  combine.head_dim_v = params.head_dim_v;
  combine.num_splits = params.num_splits;
  combine.num_parts = params.num_parts;
  combine.o_accum = kernel_params.o_accum;
  combine.lse_accum = kernel_params.lse_accum;
  detail::copy_output_fields(params, combine);
  kernels::launch_combine(combine, params.dtype, stream);
  if (checked) detail::throw_if_device_error(stream);
}

}  // namespace flashmla
