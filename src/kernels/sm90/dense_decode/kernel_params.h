// What the dense-decode kernels read: the public params resolved into device-facing form.
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "flashmla/device_errors.h"
#include "kernels/common/fast_divisor.h"

namespace flashmla::sm90 {

struct DenseDecodeKernelParams {
  int batch;
  int seqlen_q;              // s_q
  int num_heads_kv;          // h_kv
  int heads_per_kv;          // g = h_q / h_kv
  int rows_per_kv;           // s_q * g: query rows sharing one KV head (row r = s * g + head)
  int page_block_size;       // non-paged cache: tokens per sequence
  FastDivisor page_divisor;  // page_block_size, for locating a token without a division
  int max_blocks_per_seq;    // non-paged cache: 1
  int num_blocks;            // pages in k_cache (block-table entries must be below)
  // Rows per TMA load of a KV tile: kBlockN when a 64-token tile never crosses a page
  // boundary (page_block_size % 64 == 0, or one page per sequence), else gcd(page, 64) (or the
  // page size itself when a single page shorter than a tile holds the whole sequence).
  int load_rows;
  bool causal;
  float scale_log2;  // softmax_scale * log2(e)

  const void* q;  // [b, s_q, h_q, d_qk]
  int64_t q_batch_stride, q_seq_stride, q_head_stride;
  // Q tiles by TMA (the q_map the launch gets): every m-block is 64 heads of one query token
  // (heads_per_kv % 64 == 0) and q's base and strides suit a tensor map. Else cp.async copies.
  bool q_by_tma;
  const int32_t* block_table;  // [b, max_blocks_per_seq]; nullptr: non-paged, page = batch
  int64_t block_table_batch_stride;
  const int32_t* cache_seqlens;  // [b]

  void* out;  // [b, s_q, h_q, d_v]
  int64_t out_batch_stride, out_seq_stride, out_head_stride;
  float* lse;  // [b, h_q, s_q]
  int64_t lse_batch_stride, lse_head_stride;

  const DecodePartRange* parts;  // [num_parts]
  const int32_t* num_splits;     // [b + 1] prefix sums
  float* o_accum;                // [splits, h_kv, rows_per_kv, d_v]
  float* lse_accum;              // [splits, h_kv, rows_per_kv]

  DeviceErrorRecord* error_record;  // first bad length / table entry found on the device
};

}  // namespace flashmla::sm90
