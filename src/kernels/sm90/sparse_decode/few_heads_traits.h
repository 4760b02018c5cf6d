// Tile shapes, warpgroup roles and shared-memory layout of the Hopper sparse-decode kernel for
// few query heads (h_q <= 32: tensor-parallel shards of DeepSeek's 128 heads).
//
// The 64-head kernel (traits.h) pads such a query to 64 wgmma rows and pays the full tensor
// work and the full output accumulator for it. Here the products are swapped ("swap AB"): the
// 64 tokens of a tile are the wgmma M dimension and the query heads its N (kHeads = 16 or 32):
//   S^T (64 tokens x kHeads) = K Q^T           A = K (K-major), B = Q (K-major)
//   O^T (512 x kHeads)      += V^T P^T          A = V^T (MN-major view of the K stage),
//                                               B = P^T (K-major: a row of 64 tokens a head)
// so the tensor FLOPs scale with h_q (the wgmma count does not: a 64 x 16 x 16 product costs
// about what a 64 x 64 x 16 one does, docs/perf-notes.md) and O^T takes 512 kHeads / 128 = 64
// or 128 registers a thread. One warpgroup does all of the math; the others are producers (the
// 64-head kernel's producer code): two, one 32-token round of every tile each, so twice the
// rows are in flight; at h_q 16 with FP8 rows four, half a round each.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla::sm90 {

template <KVCacheFormat kFormat_, int kHeadDimQK_, int kHeads_>
struct SparseDecodeFewHeadsTraits {
  using Element = __nv_bfloat16;
  static constexpr bool kIsBF16 = true;
  static constexpr KVCacheFormat kFormat = kFormat_;
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = 512;
  static constexpr int kHeads = kHeads_;  // query heads of a CTA: the N of both products
  static_assert(kHeads == 16 || kHeads == 32);
  static_assert(kFormat != KVCacheFormat::kFp8V32 || kHeadDimQK == kFp8V32HeadDim);
  static_assert(kFormat != KVCacheFormat::kFp8Model1 || kHeadDimQK == kFp8Model1HeadDim);
  static_assert(kHeadDimQK == 576 || kHeadDimQK == 512);

  // The producer's view (producer.cuh): no crossover, one 32-token round per producer.
  static constexpr bool kCrossover = false;
  static constexpr int kClusterSize = 1;
  static constexpr int kProducerRounds = 1;
  // h_q 16 with FP8 rows: two producers a round, each gathering half of it (one token an
  // octet, a thread), four in all, 640 threads: -2 to -4% (docs/perf-notes.md). h_q 32 (its
  // consumer needs 200 registers, leaving 64 a producer thread, which spill there: +6-8%) and
  // bf16 rows (quads): one a round.
  static constexpr int kProducersPerRound =
      kFormat != KVCacheFormat::kBFloat16 && kHeads == 16 ? 2 : 1;
  static constexpr int kNumProducers = 2 * kProducersPerRound;
  static constexpr bool kUnsignedIndexCheck = false;  // measured: token_gather.cuh

  static constexpr int kBlockN = kDecodeTileTokens;  // selected tokens per tile
  static_assert(kBlockN == 64);
  static constexpr int kBoxCols = 64;
  static constexpr int kBoxElems = kBlockN * kBoxCols;  // a K-stage box: 64 tokens x 64 columns
  static constexpr int kBoxBytes = kBoxElems * 2;
  static constexpr int kNumBoxesQK = kHeadDimQK / kBoxCols;
  static constexpr int kNumBoxesV = kHeadDimV / kBoxCols;
  static constexpr int kTileBytes = kNumBoxesQK * kBoxBytes;
  static constexpr int kHeadBoxElems = kHeads * kBoxCols;  // Q and P^T boxes: kHeads rows
  static constexpr int kHeadBoxBytes = kHeadBoxElems * 2;
  static_assert(kHeadBoxBytes % 1024 == 0);  // whole 8-row swizzle atoms

  static constexpr int kNumStages = 2;
  static constexpr int kNumConsumerThreads = 128;  // warpgroup 0; the others produce
  static constexpr int kNumProducerThreads = 128 * kNumProducers;
  static constexpr int kNumThreads = kNumConsumerThreads + kNumProducerThreads;

  // Registers a thread after setmaxnreg (multiples of 8, summing to at most the launch's
  // 65536 / 384 = 168 or 65536 / 640 = 96 a thread times the warpgroups): the consumer holds
  // O^T (64 or 128) and S^T (8 or 16); the producers share the rest.
  static constexpr int kLaunchRegisters = 65536 / kNumThreads / 8 * 8;
  static constexpr int kWarpgroups = kNumThreads / 128;
  static constexpr int kRegistersConsumer = kHeads == 16 ? 136 : 200;
  static constexpr int kRegistersProducer =
      (kWarpgroups * kLaunchRegisters - kRegistersConsumer) / kNumProducers / 8 * 8;
  static_assert(kRegistersConsumer + kNumProducers * kRegistersProducer <=
                kWarpgroups * kLaunchRegisters);

  struct alignas(1024) SharedStorage {
    Element k[kNumStages][kNumBoxesQK][kBoxElems];
    Element q[kNumBoxesQK][kHeadBoxElems];
    Element p[2][kHeadBoxElems];      // P^T of a tile (heads x 64 tokens), alternating per tile
    float partial_max[2][kHeads][4];  // per tile (alternating): each consumer warp's maximum
    float partial_sum[kHeads][4];     // at a sequence's end: each consumer warp's sum
    // Bit j of token_valid[stage][round][warp]: token 32 round + 8 warp + j of the stage's
    // tile is attended (one word per producer warp and round).
    // With two producers a round, word 4 h + w is producer h's warp w (its bits in nibble h).
    uint32_t token_valid[kNumStages][2][4 * kProducersPerRound];
    uint64_t full_barrier[kNumStages];   // every producer thread stored its rows
    uint64_t empty_barrier[kNumStages];  // the 4 consumer warps left the stage
  };
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
