// Tile shapes, warpgroup roles and shared-memory layout of the Hopper sparse-prefill kernel.
//
// One work item = 64 query heads of one query token, over all of its top-k tokens (no split);
// a persistent CTA walks several items (kernel.cuh). The tokens go in blocks of 64, two blocks (a
// "pair") at a time: block 2i into K buffer 0, block 2i + 1 into buffer 1. Three warpgroups:
//   warpgroup 0: S0 = Q K0^T, its half of the online softmax, O[:, 0:256] += P0 V0 + P1 V1;
//   warpgroup 1: S1 = Q K1^T, its half of the online softmax, O[:, 256:512] += P1 V1 + P0 V0;
//   warpgroup 2: the producer: gathers each block's selected rows with 16-byte cp.async
//                straight into the SW128 layout wgmma reads (invalid tokens zero-filled).
// Each consumer computes the scores of its own block and half of every P V product, so both
// do the same work; they exchange the running row max and their probabilities through shared
// memory (P0 for warpgroup 1, P1 for warpgroup 0). The K buffers are split into a left half
// (columns 0..255: warpgroup 0's V) and a right half (256..d_qk), each with its own ready and
// free barriers, so a half is refilled as soon as its last reader is done.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

namespace flashmla::sm90 {

template <int kHeadDimQK_>
struct SparsePrefillTraits {
  using Element = __nv_bfloat16;
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = 512;
  static_assert(kHeadDimQK == 576 || kHeadDimQK == 512);

  static constexpr int kBlockM = 64;  // query heads per work item
  static constexpr int kBlockN = 64;  // tokens per block

  static constexpr int kBoxCols = 64;
  static constexpr int kBoxElems = kBlockN * kBoxCols;
  static constexpr int kBoxBytes = kBoxElems * 2;
  static constexpr int kNumBoxesQK = kHeadDimQK / kBoxCols;
  static constexpr int kNumBoxesV = kHeadDimV / kBoxCols;
  static constexpr int kBoxesPerHalfV = kNumBoxesV / 2;  // left half: boxes [0, 4)
  static constexpr int kColsPerWarpgroup = kHeadDimV / 2;

  static constexpr int kNumThreads = 384;
  static constexpr int kProducerWarpgroup = 2;
  // Registers per thread after setmaxnreg; the three must sum to at most 3 x 168 (the launch
  // share of 65536 / 384), or setmaxnreg.inc waits forever.
  static constexpr int kLaunchRegisters = 65536 / kNumThreads / 8 * 8;
  static constexpr int kRegistersConsumer = 216;
  static constexpr int kRegistersProducer = 72;
  static_assert(2 * kRegistersConsumer + kRegistersProducer <= 3 * kLaunchRegisters);

  // With d_qk 576 the last box of K buffer 0 (RoPE columns, never part of V) holds P0 once
  // warpgroup 0's scores are done; with 512 there is no such box and P0 has its own.
  static constexpr bool kP0InRopeBox = kHeadDimQK == 576;

  struct alignas(1024) SharedStorage {
    Element q[kNumBoxesQK][kBoxElems];  // Q; refilled for the next item once its scores are done
    Element k[2][kNumBoxesQK][kBoxElems];
    Element p1[kBoxElems];                     // warpgroup 1's probabilities
    Element p0[kP0InRopeBox ? 8 : kBoxElems];  // warpgroup 0's (unless in the RoPE box)
    float row_max[kBlockM];                    // the running max handed between warpgroups
    float row_sum[2][2][kBlockM];              // [item parity][warpgroup], for the final sum
    uint8_t token_valid[2][2][kBlockN];        // [pair parity][buffer][token]
    uint64_t q_ready;
    uint64_t k_ready[2][2];  // [buffer][half]
    uint64_t k_free[2][2];
    uint64_t valid_ready;  // token_valid of the pair written
    uint64_t q_free;       // both consumers' last scores of an item are done
  };
  static constexpr int kSharedBytes = sizeof(SharedStorage) + 1024;  // + alignment slack
  static_assert(kSharedBytes <= 232448, "exceeds the 227 KB of shared memory per block");
};

}  // namespace flashmla::sm90
