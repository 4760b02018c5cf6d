// When the seesaw kernel loads Q tiles by TMA (api/dense_decode_q_map.h): every m-block must be
// 64 heads of one query token and q must suit a tensor map; all else takes the cp.async copies.
#include <gtest/gtest.h>

#include <cstdint>

#include "api/dense_decode_q_map.h"
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

}  // namespace
}  // namespace flashmla::testing
