// Tile shapes, warpgroup roles and shared-memory layout of the Hopper sparse-decode kernel.
//
// One CTA = 64 query heads of one query token x one planner part. Three warpgroups:
//   warpgroup 0: S = Q K^T (64x64 per tile), online softmax, O[:, 0:192] += P V;
//   warpgroup 1: O[:, 192:512] += P V with P taken from shared memory;
//   warpgroup 2: the producer: gathers the tile's 64 selected cache rows with 16-byte loads,
//                dequantizes them to bf16 and stores them in the SW128 layout wgmma reads.
// The consumer side is the dense-decode kernel's (shared pieces in kernels/common/); only the
// producer differs: indices replace the block table, and a dequantizing gather replaces TMA.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"

namespace flashmla::sm90 {

template <KVCacheFormat kFormat_, int kHeadDimQK_>
struct SparseDecodeTraits {
  using Element = __nv_bfloat16;
  static constexpr bool kIsBF16 = true;
  static constexpr KVCacheFormat kFormat = kFormat_;
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = 512;
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
  static constexpr int kNumThreads = 384;
  static constexpr int kNumConsumerThreads = 256;
  static constexpr int kProducerWarpgroup = 2;
  static constexpr int kColsWg0 = 192;  // as in dense decode: warpgroup 0 also runs the softmax
  static constexpr int kColsWg1 = kHeadDimV - kColsWg0;
  static_assert(kColsWg0 == 192 && kColsWg1 == 256 + 64);  // the P V steps' shapes

  // Registers per thread after setmaxnreg (multiples of 8). setmaxnreg only moves registers
  // within what the CTA was launched with (65536 / 384 rounded down to 8 = 168 a thread), so
  // the three must sum to at most 3 x 168, or setmaxnreg.inc waits forever.
  static constexpr int kLaunchRegisters = 65536 / kNumThreads / 8 * 8;
  static constexpr int kRegistersWg0 = 208;
  static constexpr int kRegistersWg1 = 192;
  static constexpr int kRegistersProducer = 104;
  static_assert(kRegistersWg0 + kRegistersWg1 + kRegistersProducer <= 3 * kLaunchRegisters);

  struct alignas(1024) SharedStorage {
    Element q[kNumBoxesQK][kBoxElems];
    Element k[kNumStages][kNumBoxesQK][kBoxElems];
    Element p[kBoxElems];  // probabilities of the current tile, for warpgroup 1
    float row_scale[kBlockM];
    float row_inv_sum[kBlockM];
    uint64_t token_valid[kNumStages];    // bit t: token t of the stage's tile is attended
    uint64_t full_barrier[kNumStages];   // the producer's 128 threads stored the tile
    uint64_t empty_barrier[kNumStages];  // the 8 consumer warps are done with the stage
  };
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
