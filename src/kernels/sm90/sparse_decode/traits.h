// Tile shapes, warpgroup roles and shared-memory layout of the Hopper sparse-decode kernel.
//
// One CTA = 64 query heads of one query token x one planner part. Three warpgroups:
//   warpgroup 0: S = Q K^T (64x64 per tile), online softmax, O[:, 0:192] += P V;
//   warpgroup 1: O[:, 192:512] += P V with P taken from shared memory;
//   warpgroup 2: the producer: gathers the tile's 64 selected cache rows with 16-byte loads,
//                dequantizes them to bf16 and stores them in the SW128 layout wgmma reads
//                (the V3.2 crossover: warpgroups 2 and 3, half of its CTA's round each).
// The consumer side is the dense-decode kernel's (shared pieces in kernels/common/); only the
// producer differs: indices replace the block table, and a dequantizing gather replaces TMA.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla::sm90 {

template <KVCacheFormat kFormat_, int kHeadDimQK_, bool kCrossover_ = false>
struct SparseDecodeTraits {
  using Element = __nv_bfloat16;
  static constexpr bool kIsBF16 = true;
  static constexpr KVCacheFormat kFormat = kFormat_;
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = 512;
  // Crossover (64 < h_q <= 128): the two CTAs of a cluster serve the two 64-head halves of one
  // query token; each producer gathers one of the tile's two 32-token rounds and stores it into
  // both CTAs' shared memory, halving the gather and dequantization work of each.
  static constexpr bool kCrossover = kCrossover_;
  static constexpr int kClusterSize = kCrossover ? 2 : 1;
  static constexpr int kProducerRounds = kCrossover ? 1 : 2;  // 32-token rounds it gathers
  // The bounds-check form (token_gather.cuh, measured); bf16 rows spill 2.5x more unsigned.
  static constexpr bool kUnsignedIndexCheck = kFormat != KVCacheFormat::kBFloat16;
  static_assert(kFormat != KVCacheFormat::kFp8V32 || kHeadDimQK == kFp8V32HeadDim);
  static_assert(kFormat != KVCacheFormat::kFp8Model1 || kHeadDimQK == kFp8Model1HeadDim);
  static_assert(kHeadDimQK == 576 || kHeadDimQK == 512);

  static constexpr int kBlockM = kDecodeRowsPerBlock;  // query heads per CTA
  static constexpr int kBlockN = kDecodeTileTokens;    // selected tokens per tile
  static_assert(kBlockM == 64 && kBlockN == 64);

  static constexpr int kBoxCols = 64;
  static constexpr int kBoxElems = kBlockN * kBoxCols;
  static constexpr int kBoxBytes = kBoxElems * 2;
  static constexpr int kNumBoxesQK = kHeadDimQK / kBoxCols;
  static constexpr int kNumBoxesV = kHeadDimV / kBoxCols;
  static constexpr int kTileBytes = kNumBoxesQK * kBoxBytes;

  static constexpr int kNumStages = 2;
  // Producer warpgroups sharing each round: the V3.2 crossover has two, each gathering half of
  // its CTA's 32 tokens (one token an octet), so that twice the warps issue a tile's loads and
  // stores; their 64 registers a thread hold one token's row. Measured -3% on the V3.2 h_q 128
  // rows and +8-10% on MODEL1's (which keeps one producer, its rows a tile ahead in registers):
  // docs/perf-notes.md.
  static constexpr int kProducersPerRound = kCrossover && kFormat == KVCacheFormat::kFp8V32 ? 2 : 1;
  static constexpr int kNumProducerThreads = 128 * kProducersPerRound;
  static constexpr int kNumConsumerThreads = 256;
  static constexpr int kNumThreads = kNumConsumerThreads + kNumProducerThreads;
  static constexpr int kProducerWarpgroup = 2;  // the first producer
  static constexpr int kColsWg0 = 192;  // as in dense decode: warpgroup 0 also runs the softmax
  static constexpr int kColsWg1 = kHeadDimV - kColsWg0;
  static_assert(kColsWg0 == 192 && kColsWg1 == 256 + 64);  // the P V steps' shapes

  // Registers per thread after setmaxnreg (multiples of 8). setmaxnreg only moves registers
  // within what the CTA was launched with (65536 / 384 or 512 threads rounded down to 8: 168 or
  // 128 a thread), so the roles must sum to at most that many, or setmaxnreg.inc waits forever.
  static constexpr int kLaunchRegisters = 65536 / kNumThreads / 8 * 8;
  // The crossover's producer gets 24 more (184 / 192 / 128): the MODEL1 crossover holds the
  // next tile's rows in registers and spills at 120; V3.2 measured the same at 192 / 120 and
  // 184 / 128 with one producer, and its two producers take 64 each. Without the crossover
  // 184 / 192 / 128 spills (FP8 V3.2) and was 15% slower.
  static constexpr int kRegistersWg0 = kCrossover ? 184 : 208;
  static constexpr int kRegistersWg1 = 192;
  static constexpr int kRegistersProducer = kProducersPerRound == 2 ? 64 : (kCrossover ? 128 : 104);
  static_assert(kRegistersWg0 + kRegistersWg1 + kProducersPerRound * kRegistersProducer <=
                kNumThreads / 128 * kLaunchRegisters);
  // Every instruction must fit the launch's registers whatever setmaxnreg gives its region: at
  // 512 threads (128 a thread) warpgroup 1's P V is issued as m64n128 products.
  static constexpr int kMaxPvCols = kLaunchRegisters >= 168 ? 256 : 128;

  struct alignas(1024) SharedStorage {
    Element q[kNumBoxesQK][kBoxElems];
    Element k[kNumStages][kNumBoxesQK][kBoxElems];
    Element p[kBoxElems];  // probabilities of the current tile, for warpgroup 1
    float row_scale[kBlockM];
    float row_inv_sum[kBlockM];
    // Bit j of token_valid[stage][round][warp]: token 32 round + 8 warp + j of the stage's
    // tile is attended (one word per producer warp and round, so a peer can send its own).
    // With two producers a round, word 4 h + w is producer h's warp w (its bits in nibble h).
    uint32_t token_valid[kNumStages][2][4 * kProducersPerRound];
    uint64_t full_barrier[kNumStages];       // this CTA's producer threads stored their rows
    uint64_t peer_full_barrier[kNumStages];  // crossover: the peer's rows arrived (bytes)
    uint64_t empty_barrier[kNumStages];      // the consumer warps (of both CTAs) left the stage
    uint64_t q_barrier;                      // Q tile by TMA: its bytes landed
  };
  // Bytes the peer's producers send into a stage per tile (crossover): 32 rows of every box and
  // 4 token_valid words each.
  static constexpr uint32_t kPeerBytesPerTile = 32 * kNumBoxesQK * 128 + 4 * 4 * kProducersPerRound;
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
