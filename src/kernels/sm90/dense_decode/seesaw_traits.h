// Tile shapes and shared-memory layout of the Hopper dense-decode "seesaw" kernel (the schedule
// of FlashMLA's deep-dive document, written for our pieces; kernel body: seesaw_kernel.cuh).
//
// One CTA = 64 query rows x one KV head x one planner part; KV tiles go in pairs (t0, t1) into
// two buffers. Each warpgroup owns half of O (256 columns) and computes S for one tile of the
// pair: warpgroup 0 for t0, warpgroup 1 for t1, so one warpgroup's softmax runs while the other
// one's matrix products keep the tensor cores busy. The running row max is shared through
// shared memory and each P crosses over once (P0 to warpgroup 1, P1 to warpgroup 0), rescaled
// to the pair's final max.
//
// A tile is loaded in two parts: boxes [0, 4) (the V columns warpgroup 0 reads) issued by
// warpgroup 0, the rest by warpgroup 1, each part as soon as its readers are done with the
// previous tile; every box completes on its own barrier.
//
// Shared memory with d_qk 576 does not hold Q's 9 boxes, two 9-box KV buffers and two P boxes
// (232 KB > 227 KB): Q's last (RoPE) box lives in registers (16 a thread, as the register A
// operand of S's last k-steps). It is loaded into the first P box and read from there once per
// query tile.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "flashmla/decode_schedule.h"

namespace flashmla::sm90 {

template <class Element_, int kHeadDimQK_>
struct DenseDecodeSeesawTraits {
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
  static constexpr int kNumBoxesQK = kHeadDimQK / kBoxCols;
  static constexpr int kTileBytes = kNumBoxesQK * kBoxBytes;

  static constexpr int kNumThreads = 256;
  static constexpr int kColsPerWarpgroup = kHeadDimV / 2;                  // 256
  static constexpr int kBoxesPerWarpgroup = kColsPerWarpgroup / kBoxCols;  // V boxes of each half

  // Q's last box in registers (d_qk 576 only, see above).
  static constexpr bool kQBoxInRegisters = kNumBoxesQK == 9;
  static constexpr int kQBoxesShared = kQBoxInRegisters ? kNumBoxesQK - 1 : kNumBoxesQK;

  // The two load parts of a tile: boxes [0, kPartBoundary) and [kPartBoundary, kNumBoxesQK).
  static constexpr int kPartBoundary = kBoxesPerWarpgroup;

  struct alignas(1024) SharedStorage {
    // Q's shared boxes, then the P boxes of the pair's two tiles (P0: warpgroup 0 -> 1, P1:
    // 1 -> 0). A Q tile is loaded whole from box 0, so its register box lands in P0's place.
    Element boxes[kQBoxesShared + 2][kBoxElems];
    Element k[2][kNumBoxesQK][kBoxElems];  // the pair's two KV tiles
    float row_max[kBlockM];                // running max (log2 units), shared by both warpgroups
    float scale0[kBlockM];                 // O rescale of warpgroup 0's softmax step
    float scale1[kBlockM];                 // O rescale of warpgroup 1's softmax step
    float row_sum[2][kBlockM];             // epilogue: each warpgroup's share of the row sums
    uint32_t bad_sequence_votes[4];        // per warp of warpgroup 1: the sequence's values are bad
    uint64_t kv_barrier[2][kNumBoxesQK];   // [buffer][box]: TMA bytes landed
    uint64_t q_barrier;                    // Q tile by TMA: its bytes landed
  };
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
