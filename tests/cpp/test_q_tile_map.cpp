// When the decode kernels load Q tiles by TMA (api/q_tile_map.h): dense decode's seesaw kernel
// where every m-block is 64 heads of one query token, sparse decode's 64-head kernels (h_q > 32),
// both only where q suits a tensor map; all else takes the cp.async copies.
#include <gtest/gtest.h>

#include <cstdint>

#include "api/q_tile_map.h"
#include "dense_decode_valid_params.h"

namespace flashmla::testing {
namespace {

DenseDecodeParams heads(int num_heads_q, int num_heads_kv) {
  DenseDecodeParams p = valid_dense_decode_params();
  p.num_heads_q = num_heads_q;
  p.num_heads_kv = num_heads_kv;
  set_dense_strides(p);
  return p;
}

TEST(DenseQTileByTma, EligibleWhereAnMBlockIsOneTokensHeads) {
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(heads(128, 1)));
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(heads(64, 1)));
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(heads(128, 2)));  // 64 heads a KV head
  // An m-block would span query tokens or KV heads: the copies.
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(heads(126, 1)));
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(heads(32, 1)));
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(heads(128, 4)));
}

TEST(DenseQTileByTma, NotWhereQDoesNotSuitATensorMap) {
  DenseDecodeParams p = heads(128, 1);
  p.q = static_cast<const char*>(p.q) + 2;  // one bf16 element off a 16-byte boundary
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = heads(128, 1);
  p.q_head_stride = 577;  // 1154 bytes
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = heads(128, 1);
  p.q_seq_stride += 4;  // 8 bytes more
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = heads(128, 1);
  p.q_batch_stride += 1;
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = heads(128, 1);
  p.q_head_stride = 576 + 64;  // padded heads: still aligned
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(p));
}

TEST(DenseQTileByTma, AUnitDimensionsStrideIsNeverRead) {
  DenseDecodeParams p = heads(128, 1);
  p.seqlen_q = 1;
  p.q_seq_stride = 3;
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(p));
  p.batch = 1;
  p.q_batch_stride = 5;
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(p));
  p.batch = 2;
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));
}

SparseDecodeParams sparse_q(int num_heads_q, int seqlen_q, int batch) {
  SparseDecodeParams p;
  p.batch = batch;
  p.seqlen_q = seqlen_q;
  p.num_heads_q = num_heads_q;
  p.head_dim_qk = 576;
  p.q = reinterpret_cast<const void*>(uintptr_t(1) << 20);
  p.q_head_stride = 576;
  p.q_seq_stride = int64_t(num_heads_q) * 576;
  p.q_batch_stride = int64_t(seqlen_q) * num_heads_q * 576;
  return p;
}

TEST(SparseQTileByTma, EligibleForTheSixtyFourHeadKernels) {
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(sparse_q(128, 2, 4)));
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(sparse_q(64, 1, 1)));
  // Any head count past 32: a box's heads past h_q land as zeros.
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(sparse_q(100, 3, 2)));
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(sparse_q(33, 1, 2)));
  // The few-heads kernels copy their rows.
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(sparse_q(32, 2, 4)));
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(sparse_q(1, 1, 1)));
}

TEST(SparseQTileByTma, NotWhereQDoesNotSuitATensorMap) {
  SparseDecodeParams p = sparse_q(128, 2, 4);
  p.q = static_cast<const char*>(p.q) + 2;
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = sparse_q(128, 2, 4);
  p.q_head_stride = 580;  // 1160 bytes
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = sparse_q(128, 2, 4);
  p.q_seq_stride += 1;
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));

  p = sparse_q(128, 1, 4);
  p.q_seq_stride = 7;  // a unit dimension: never read
  EXPECT_TRUE(detail::q_tile_by_tma_eligible(p));

  p = sparse_q(128, 2, 0);  // nothing to map
  EXPECT_FALSE(detail::q_tile_by_tma_eligible(p));
}

}  // namespace
}  // namespace flashmla::testing
