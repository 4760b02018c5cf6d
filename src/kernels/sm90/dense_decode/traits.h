// Tile shapes and shared-memory layout of the Hopper dense-decode kernel.
//
// One CTA = 64 query rows x one KV head x one planner part. Two warpgroups:
//   warpgroup 0: S = Q K^T (64x64 per tile), online softmax, O[:, 0:192] += P V;
//   warpgroup 1: O[:, 192:512] += P V with P taken from shared memory; one of its threads
//                issues the TMA loads of the KV tiles (two stages).
// Q, K and P tiles live in 64-column boxes of 64 rows x 128 bytes, 128-byte swizzled: the
// layout TMA writes and wgmma reads directly.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "flashmla/decode_schedule.h"

namespace flashmla::sm90 {

template <class Element_, int kHeadDimQK_>
struct DenseDecodeTraits {
  using Element = Element_;
  static constexpr bool kIsBF16 = std::is_same_v<Element, __nv_bfloat16>;
  static_assert(kIsBF16 || std::is_same_v<Element, __half>);

  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = 512;
  static_assert(kHeadDimQK == 576 || kHeadDimQK == 512);

  static constexpr int kBlockM = kDecodeRowsPerBlock;  // query rows per CTA
  static constexpr int kBlockN = kDecodeTileTokens;    // KV tokens per tile
  static_assert(kBlockM == 64 && kBlockN == 64);

  static constexpr int kBoxCols = 64;  // 64 x 2 bytes = one 128-byte swizzle row
  static constexpr int kBoxElems = kBlockN * kBoxCols;
  static constexpr int kBoxBytes = kBoxElems * 2;
  static constexpr int kNumBoxesQK = kHeadDimQK / kBoxCols;  // Q and K tiles
  static constexpr int kNumBoxesV = kHeadDimV / kBoxCols;    // the V part of a K tile
  static constexpr int kTileBytes = kNumBoxesQK * kBoxBytes;

  static constexpr int kNumStages = 2;
  static constexpr int kNumThreads = 256;
  // Output columns per warpgroup: warpgroup 0 also computes S and the softmax, so it takes
  // the smaller share of P V (fewer accumulator registers, a shorter serial path per tile).
  static constexpr int kColsWg0 = 192;
  static constexpr int kColsWg1 = kHeadDimV - kColsWg0;    // 320 = 256 + 64
  static_assert(kColsWg0 == 192 && kColsWg1 == 256 + 64);  // the P V steps' shapes

  struct alignas(1024) SharedStorage {
    Element q[kNumBoxesQK][kBoxElems];
    Element k[kNumStages][kNumBoxesQK][kBoxElems];
    Element p[kBoxElems];                // probabilities of the current tile, for warpgroup 1
    float row_scale[kBlockM];            // rescale of O rows for the current tile
    float row_inv_sum[kBlockM];          // epilogue: 1 / row sum (0 for rows that attend nothing)
    uint32_t bad_sequence_votes[4];      // per warp of warpgroup 1: the sequence's values are bad
    uint64_t full_barrier[kNumStages];   // TMA bytes landed
    uint64_t empty_barrier[kNumStages];  // all 8 warps done reading the stage
    uint64_t q_barrier;                  // Q tile by TMA: its bytes landed
  };
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
