// Sparse decode entry point: validation -> device check -> sparse split-KV kernel -> combine.
#include <algorithm>
#include <cstdint>

#include "api/checks.h"
#include "api/decode_output_fields.h"
#include "api/dense_decode_workspace.h"
#include "api/q_tile_map.h"
#include "flashmla/sparse_decode.h"
#include "kernels/common/combine.h"
#include "kernels/sm90/sparse_decode/dispatch.h"

namespace flashmla {

namespace {

detail::DenseDecodeWorkspaceLayout sparse_workspace_layout(const SparseDecodeParams& params) {
  // Every sequence has one split and every part boundary adds at most one more.
  const int64_t max_splits = int64_t(std::max(params.batch, 0)) + std::max(params.num_parts, 1);
  const int64_t rows = int64_t(std::max(params.seqlen_q, 0)) * std::max(params.num_heads_q, 0);
  return detail::decode_workspace_layout(max_splits, rows, std::max(params.head_dim_v, 0));
}

sm90::SparseTokenList make_token_list(const SparseTokenSource& source) {
  sm90::SparseTokenList list{};
  list.k_cache = static_cast<const uint8_t*>(source.k_cache);
  list.block_stride = source.block_stride;
  list.token_stride = source.token_stride;
  list.page_block_size = FastDivisor(uint32_t(source.page_block_size));
  list.scale_rows_offset = int64_t(source.page_block_size) * kFp8Model1RowBytes;
  list.num_tokens = uint32_t(
      std::min<int64_t>(int64_t(source.num_blocks) * source.page_block_size, int64_t(1) << 31));
  list.indices = source.indices;
  list.indices_batch_stride = source.indices_batch_stride;
  list.indices_seq_stride = source.indices_seq_stride;
  list.topk = source.topk;
  list.topk_length = source.topk_length;
  return list;
}

sm90::SparseDecodeKernelParams make_kernel_params(const SparseDecodeParams& params) {
  const auto layout = sparse_workspace_layout(params);
  sm90::SparseDecodeKernelParams k{};
  k.batch = params.batch;
  k.seqlen_q = params.seqlen_q;
  k.num_heads_q = params.num_heads_q;
  k.num_heads_kv = 1;
  k.heads_per_kv = params.num_heads_q;
  k.rows_per_kv = params.seqlen_q * params.num_heads_q;
  k.scale_log2 = params.softmax_scale * 1.4426950408889634f;
  k.q = params.q;
  k.q_batch_stride = params.q_batch_stride;
  k.q_seq_stride = params.q_seq_stride;
  k.q_head_stride = params.q_head_stride;
  k.main = make_token_list(params.main);
  if (params.extra.k_cache != nullptr) {
    k.extra = make_token_list(params.extra);
  } else {
    k.extra = sm90::SparseTokenList{};  // topk 0: no extra list
  }
  k.attn_sink = params.attn_sink;
  detail::copy_output_fields(params, k);
  detail::copy_plan_fields(params, layout, k);
  return k;
}

using SparseDecodeLauncher = void (*)(const sm90::SparseDecodeKernelParams&, const CUtensorMap&,
                                      int, int, cudaStream_t);

// The kernel instance for a call: h_q <= 32 takes the few-heads kernels (swapped products sized
// to h_q instead of 64 padded rows, two producers); on FP8 caches 64 < h_q <= 128 takes the
// crossover kernels (a 2-CTA cluster per query token gathers and dequantizes each tile once for
// both m-blocks); the rest the 64-head kernel, one CTA per 64 heads.
SparseDecodeLauncher select_kernel(const SparseDecodeParams& params, int num_m_blocks) {
  const bool few_heads = params.num_heads_q <= 32;
  const bool heads16 = params.num_heads_q <= 16;
  const bool crossover = num_m_blocks == 2;
  switch (params.kv_format) {
    case KVCacheFormat::kFp8V32:
      if (few_heads) {
        return heads16 ? sm90::sparse_decode_fp8_v32_few_heads16
                       : sm90::sparse_decode_fp8_v32_few_heads32;
      }
      return crossover ? sm90::sparse_decode_fp8_v32_crossover : sm90::sparse_decode_fp8_v32;
    case KVCacheFormat::kFp8Model1:
      if (few_heads) {
        return heads16 ? sm90::sparse_decode_fp8_model1_few_heads16
                       : sm90::sparse_decode_fp8_model1_few_heads32;
      }
      return crossover ? sm90::sparse_decode_fp8_model1_crossover : sm90::sparse_decode_fp8_model1;
    default:
      if (params.head_dim_qk == 576) {
        if (few_heads) {
          return heads16 ? sm90::sparse_decode_bf16_576_few_heads16
                         : sm90::sparse_decode_bf16_576_few_heads32;
        }
        return sm90::sparse_decode_bf16_576;
      }
      if (few_heads) {
        return heads16 ? sm90::sparse_decode_bf16_512_few_heads16
                       : sm90::sparse_decode_bf16_512_few_heads32;
      }
      return sm90::sparse_decode_bf16_512;
  }
}

}  // namespace

size_t sparse_decode_workspace_bytes(const SparseDecodeParams& params) {
  return static_cast<size_t>(sparse_workspace_layout(params).total_bytes);
}

void sparse_decode(const SparseDecodeParams& params, cudaStream_t stream) {
  validate_sparse_decode(params);
  int device = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_device_supported(device);

  sm90::SparseDecodeKernelParams kernel_params = make_kernel_params(params);
  CUtensorMap q_map{};
  kernel_params.q_by_tma = detail::q_tile_by_tma_eligible(params) &&
                           detail::make_q_tile_map(detail::q_tile_source(params), q_map);
  const int num_m_blocks = (params.num_heads_q + kDecodeRowsPerBlock - 1) / kDecodeRowsPerBlock;
  const auto launch = select_kernel(params, num_m_blocks);
  launch(kernel_params, q_map, num_m_blocks, params.num_parts, stream);

  kernels::CombineParams combine{};
  combine.batch = params.batch;
  combine.seqlen_q = params.seqlen_q;
  combine.num_heads_kv = 1;
  combine.heads_per_kv = params.num_heads_q;
  combine.rows_per_kv = kernel_params.rows_per_kv;
  combine.head_dim_v = params.head_dim_v;
  combine.num_splits = params.num_splits;
  combine.num_parts = params.num_parts;
  combine.o_accum = kernel_params.o_accum;
  combine.lse_accum = kernel_params.lse_accum;
  detail::copy_output_fields(params, combine);
  combine.attn_sink = params.attn_sink;
  kernels::launch_combine(combine, ScalarType::kBFloat16, stream);
}

}  // namespace flashmla
