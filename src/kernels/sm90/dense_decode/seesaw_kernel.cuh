// The Hopper dense-decode kernel with the seesaw schedule (roles, buffers and the shared-memory
// layout: seesaw_traits.h). Used for compute-bound shapes (256 or more query rows per KV head)
// when KV tiles are loaded whole (load_rows == 64: pages that are multiples of 64 tokens, or one
// page per sequence); kernel.cuh serves the rest (dense_decode.cpp chooses).
//
// One pair of tiles (t0 in buffer 0, t1 in buffer 1), with m the running row max, o_L / o_R the
// two warpgroups' halves of O and S0 / S1 computed at the end of the previous pair:
//   wg0: m0 = max(m, rowmax S0), c0 = 2^(m - m0); P0 = 2^(S0 - m0); o_L = o_L c0 + P0 V0L
//   wg1: m1 = max(m0, rowmax S1), c1 = 2^(m0 - m1); P1 = 2^(S1 - m1); o_R = o_R c0 c1 + P1 V1R
//   wg0: P0' = P0 c1 to shared memory                 wg1: P1 to shared memory
//   wg1: o_R += P0' V0R                                wg0: o_L = o_L c1 + P1 V1L
//   wg0: S0 of the next pair                           wg1: S1 of the next pair
// so both halves of O end each pair scaled to m1. Each warpgroup also keeps its share of the
// row sums (fp32, before bf16 rounding of P), in the same units; the epilogue adds them.
//
// Hand-offs: the producing side arrives on a named barrier and does not wait (a sync there
// would stall it on the other warpgroup's S); racecheck reports such arrive -> sync hand-offs
// as hazards although the barrier orders them (tests/probes/racecheck_prefill_handoffs.cu).
//
// Q tiles come by TMA where an m-block is 64 heads of one query token (else by cp.async), the
// next sequence's issued in this one's epilogue.
//
// Every box of a KV buffer completes on its own barrier, whose one arrival (with the byte count)
// comes from the warpgroup that computes the scores on it; the issuing thread only issues the
// copies. Pairs that are whole, unmasked and followed by another pair run a copy of the pair's
// code without runtime checks (steady_end): fewer instructions and branches, a compact hot loop.
// Measured against FlashMLA's kernel on the same inputs (perf-notes, "The seesaw again").
#pragma once

#include <cmath>
#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/common/sm90_decode_epilogue.cuh"
#include "kernels/common/sm90_decode_tile.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_online_softmax.cuh"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/sm90/dense_decode/kernel.cuh"
#include "kernels/sm90/dense_decode/kernel_params.h"
#include "kernels/sm90/dense_decode/load_q.cuh"
#include "kernels/sm90/dense_decode/sequence_check.cuh"
#include "kernels/sm90/dense_decode/work_range.cuh"

namespace flashmla::sm90 {

// Named barriers (id 0 is __syncthreads).
enum DenseSeesawBarrier : uint32_t {
  kSeesawScale0Ready = 1,  // wg0 wrote m0 and c0 (wg0 arrives, wg1 syncs)
  kSeesawScale1Ready = 2,  // wg1 wrote m1 and c1 (wg1 arrives, wg0 syncs)
  kSeesawP0Ready = 3,      // wg0 stored P0' (wg0 arrives, wg1 syncs)
  kSeesawP1Issued = 4,     // wg1 stored P1 and issued P0' V0R (wg1 arrives, wg0 syncs)
  kSeesawStatsReady = 5,   // both warpgroups' row sums and votes written (both sync)
  kSeesawWarpgroup0 = 6,   // warpgroup 0 alone (6 + warpgroup)
};

// Where a tile's TMA loads read from: the page (block) and the row in it of its first token.
struct SeesawTileSource {
  int block = 0;
  int row_in_page = 0;
};

// Issues load part `part` of a tile into KV buffer `buffer` (one thread). Each box completes on
// its own barrier, so S starts on a box as soon as it has landed.
template <class Traits>
__device__ __forceinline__ void issue_seesaw_part(const CUtensorMap* k_map,
                                                  typename Traits::SharedStorage& smem, int buffer,
                                                  int part, const SeesawTileSource& source,
                                                  int kv_head) {
  const int box_begin = part == 0 ? 0 : Traits::kPartBoundary;
  const int box_end = part == 0 ? Traits::kPartBoundary : Traits::kNumBoxesQK;
  for (int box = box_begin; box < box_end; ++box) {
    // The box's byte count is announced by the warpgroup that waits for it (issue_seesaw_scores):
    // no arrival between the copies here.
    tma_load_4d(k_map, &smem.kv_barrier[buffer][box], smem.k[buffer][box], box * Traits::kBoxCols,
                source.row_in_page, kv_head, source.block);
  }
}

// Issues S (+)= Q K^T over boxes [kBegin, kEnd) of KV buffer `buffer`, each box once it has
// landed (no commit, no wait); box kFirst starts the sum. With kQBoxInRegisters the last box's A
// operand comes from q_regs.
template <class Traits, int kBegin, int kEnd, int kFirst>
__device__ __forceinline__ void issue_seesaw_scores(typename Traits::SharedStorage& smem,
                                                    int buffer, uint32_t phase, uint64_t q_desc,
                                                    uint64_t k_desc, const uint32_t (&q_regs)[16],
                                                    float (&s)[32]) {
  using cute::SM90::GMMA::Major;
  const uint64_t buffer_desc = desc_advance(k_desc, buffer * Traits::kTileBytes);
#pragma unroll
  for (int box = kBegin; box < kEnd; ++box) {
    // The one arrival a box's barrier counts: its byte count, announced by the warpgroup that
    // reads it first (the copy may complete before or after).
    if (threadIdx.x % 128 == 0) {
      mbarrier_arrive_expect_tx(&smem.kv_barrier[buffer][box], Traits::kBoxBytes);
    }
    mbarrier_wait(&smem.kv_barrier[buffer][box], phase);
    // A fence after each wait: ptxas inserts one itself when a branch (the wait loop) separates
    // the fence from the wgmma.
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t offset = box * Traits::kBoxBytes + k * 32;
      if (Traits::kQBoxInRegisters && box == Traits::kNumBoxesQK - 1) {
        gmma_rs<Traits::kIsBF16, Major::K, 64>(&q_regs[4 * k], desc_advance(buffer_desc, offset),
                                               s);
      } else {
        gmma_ss<Traits::kIsBF16, Major::K, 64>(desc_advance(q_desc, offset),
                                               desc_advance(buffer_desc, offset), s,
                                               box != kFirst || k > 0);
      }
    }
  }
}

// S = Q K^T for the tile in KV buffer `buffer`; waits for the result. kSecondPartFirst: the
// boxes of the second load part first (warpgroup 1: that part of its next tile is issued by
// itself, well before warpgroup 0 frees the first part's boxes).
template <class Traits, bool kSecondPartFirst>
__device__ __forceinline__ void seesaw_scores(typename Traits::SharedStorage& smem, int buffer,
                                              uint32_t phase, uint64_t q_desc, uint64_t k_desc,
                                              const uint32_t (&q_regs)[16], float (&s)[32]) {
  constexpr int kBoundary = Traits::kPartBoundary, kEnd = Traits::kNumBoxesQK;
  if constexpr (kSecondPartFirst) {
    issue_seesaw_scores<Traits, kBoundary, kEnd, kBoundary>(smem, buffer, phase, q_desc, k_desc,
                                                            q_regs, s);
    issue_seesaw_scores<Traits, 0, kBoundary, kBoundary>(smem, buffer, phase, q_desc, k_desc,
                                                         q_regs, s);
  } else {
    issue_seesaw_scores<Traits, 0, kEnd, 0>(smem, buffer, phase, q_desc, k_desc, q_regs, s);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_registers(s);
}

// O (one warpgroup's 256 columns) += P V with P from registers or from a shared box.
template <bool kIsBF16>
__device__ __forceinline__ void issue_pv_registers(float (&acc)[128], const uint32_t (&probs)[16],
                                                   uint64_t v_desc) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    gmma_rs<kIsBF16, cute::SM90::GMMA::Major::MN, 256>(&probs[4 * k],
                                                       desc_advance(v_desc, k * 2048), acc);
  }
}
template <bool kIsBF16>
__device__ __forceinline__ void issue_pv_shared(float (&acc)[128], uint64_t p_desc,
                                                uint64_t v_desc) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    gmma_ss<kIsBF16, cute::SM90::GMMA::Major::MN, 256>(desc_advance(p_desc, k * 32),
                                                       desc_advance(v_desc, k * 2048), acc);
  }
}

// Rows at or past `valid` of a warpgroup's V half (4 boxes from `first_box`) may hold NaN read
// from unused cache rows; P is 0 there but 0 * NaN is NaN, so they are zeroed before any P V
// product reads them. Synchronises the warpgroup.
template <class Traits>
__device__ __forceinline__ void zero_v_rows_past(
    typename Traits::Element (*buffer)[Traits::kBoxElems], int first_box, int valid,
    int thread_in_wg, uint32_t barrier) {
  valid = max(valid, 0);
  constexpr int kChunksPerRow = Traits::kBoxesPerWarpgroup * 8;  // 16-byte chunks
  const int chunks = (Traits::kBlockN - valid) * kChunksPerRow;
  for (int idx = thread_in_wg; idx < chunks; idx += 128) {
    const int row = valid + idx / kChunksPerRow;
    const int box = first_box + (idx / 8) % Traits::kBoxesPerWarpgroup;
    char* dst = reinterpret_cast<char*>(buffer[box]) + row * 128 + (idx % 8) * 16;
    *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
  fence_view_async_shared();
  named_barrier_sync(barrier, 128);
}

// The two owned rows' running max from shared memory, and the write-back of a new value (one
// lane of each quad, after all four have read).
__device__ __forceinline__ void publish_owned_rows(float* rows, const float (&values)[2],
                                                   int warp_in_wg, int lane) {
  __syncwarp();
  if (lane % 4 == 0) {
    rows[16 * warp_in_wg + lane / 4] = values[0];
    rows[16 * warp_in_wg + lane / 4 + 8] = values[1];
  }
}

// One warpgroup's softmax step of a pair: the running max read from shared memory, `row_sum`
// (this thread's share) brought to that max's units by `carry` and updated, the scores masked by
// each row's token limit (no mask in a steady pair), then the new max and the step's rescale factor
// published for the other warpgroup.
template <class Element, bool kSteady>
__device__ __forceinline__ void seesaw_softmax(float (&s)[32], uint32_t (&probs)[16],
                                               float (&row_sum)[2], float (&factor)[2],
                                               const float (&carry)[2], float* row_max,
                                               float* factor_rows, int token0,
                                               const int (&limit)[2], float scale_log2,
                                               int warp_in_wg, int lane) {
  RowStats stats;
  load_owned_rows(row_max, warp_in_wg, lane, stats.max);
  stats.sum[0] = row_sum[0] * carry[0];
  stats.sum[1] = row_sum[1] * carry[1];
  if constexpr (kSteady) {
    online_softmax<Element>(s, probs, stats, factor, scale_log2, AllValidMask{}, lane);
  } else {
    const RowLimitMask mask(token0, limit);
    online_softmax_unless_all_valid<Element>(!mask.any_masked, s, probs, stats, factor, scale_log2,
                                             mask, lane);
  }
  row_sum[0] = stats.sum[0];
  row_sum[1] = stats.sum[1];
  publish_owned_rows(row_max, stats.max, warp_in_wg, lane);
  publish_owned_rows(factor_rows, factor, warp_in_wg, lane);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    dense_decode_seesaw_kernel(const __grid_constant__ DenseDecodeKernelParams p,
                               const __grid_constant__ CUtensorMap k_map,
                               const __grid_constant__ CUtensorMap q_map) {
  using Element = typename Traits::Element;
  using SharedStorage = typename Traits::SharedStorage;
  constexpr bool kIsBF16 = Traits::kIsBF16;

  extern __shared__ char smem_raw[];
  SharedStorage& smem = aligned_shared_storage<SharedStorage>(smem_raw);

  const int m_block = blockIdx.x;
  const int kv_head = blockIdx.y;
  const DecodePartRange range = p.parts[blockIdx.z];
  if (range.begin_batch > range.end_batch) return;  // empty part: uniform over the CTA

  const int thread = threadIdx.x;
  const int warpgroup = thread / 128;
  const int thread_in_wg = thread % 128;
  const int warp_in_wg = thread_in_wg / 32;
  const int lane = thread % 32;
  const bool issuer = thread_in_wg == 0;  // issues this warpgroup's load part of every tile
  const uint32_t own_barrier = kSeesawWarpgroup0 + warpgroup;

  if (thread == 0) {
    for (int buffer = 0; buffer < 2; ++buffer) {
      for (int box = 0; box < Traits::kNumBoxesQK; ++box) {
        mbarrier_init(&smem.kv_barrier[buffer][box], 1);
      }
    }
    mbarrier_init(&smem.q_barrier, 1);
    fence_barrier_init();
    prefetch_tma_descriptor(&k_map);
    if (p.q_by_tma) prefetch_tma_descriptor(&q_map);
  }
  __syncthreads();

  const uint64_t q_desc = make_sw128_desc(smem.boxes[0], 16, 1024);
  const uint64_t k_desc = make_sw128_desc(smem.k[0][0], 16, 1024);
  const uint64_t p0_desc = make_sw128_desc(smem.boxes[Traits::kQBoxesShared], 16, 1024);
  const uint64_t p1_desc = make_sw128_desc(smem.boxes[Traits::kQBoxesShared + 1], 16, 1024);
  // This warpgroup's V half (MN-major B operand, 64-column chunks whole boxes apart).
  const uint64_t v_desc =
      make_sw128_desc(smem.k[0][Traits::kBoxesPerWarpgroup * warpgroup], Traits::kBoxBytes, 1024);
  const auto v_buffer = [&](int buffer) {
    return desc_advance(v_desc, buffer * Traits::kTileBytes);
  };
  Element* const p0_box = smem.boxes[Traits::kQBoxesShared];
  Element* const p1_box = smem.boxes[Traits::kQBoxesShared + 1];

  uint32_t phase[2] = {0, 0};  // parity of each buffer's current tile on its barriers
  uint32_t q_phase = 0;        // parity of the current Q tile on q_barrier (Q by TMA)

  for (int batch = range.begin_batch; batch <= range.end_batch; ++batch) {
    const BatchTiles tiles = decode_batch_tiles(p, range, batch, m_block);
    const int splits_before = p.num_splits[batch];
    EpilogueTarget target;
    target.batch = batch;
    target.kv_head = kv_head;
    target.row_base = m_block * Traits::kBlockM;
    target.num_rows = p.rows_per_kv - target.row_base;
    target.single_split = p.num_splits[batch + 1] - splits_before == 1;
    target.split_slot = splits_before + (batch == range.begin_batch ? range.begin_split : 0);

    if (batch != range.begin_batch) __syncthreads();  // previous Q, P and epilogue data consumed
    // The first pair's loads: each warpgroup issues its part of both tiles.
    const auto tile_source = [&](int tile) {
      SeesawTileSource source;
      locate_token(p, batch, tile * Traits::kBlockN, source.block, source.row_in_page);
      return source;
    };
    if (tiles.first < tiles.last) {
      // Every thread of the warpgroup locates the tiles (uniform loads and arithmetic).
      const SeesawTileSource first = tile_source(tiles.first);
      const SeesawTileSource second =
          tiles.first + 1 < tiles.last ? tile_source(tiles.first + 1) : first;
      if (issuer) {
        issue_seesaw_part<Traits>(&k_map, smem, 0, warpgroup, first, kv_head);
        if (tiles.first + 1 < tiles.last) {
          issue_seesaw_part<Traits>(&k_map, smem, 1, warpgroup, second, kv_head);
        }
      }
    }
    __syncwarp();
    if (p.q_by_tma) {
      // By TMA from one thread, issued here for the part's first sequence and in the previous
      // sequence's epilogue for the others: the cp.async copies took ~4 us at each sequence
      // start, even from L2 (stamped; docs/perf-notes.md). Into the boxes from box 0: with d_qk
      // 576 the last lands in the first P box.
      if (thread == 0 && batch == range.begin_batch) {
        issue_q_tile<Traits>(&q_map, &smem.q_barrier, smem.boxes, batch, kv_head, m_block,
                             p.heads_per_kv);
      }
    } else {
      load_q_tile<Traits>(p, smem.boxes, batch, kv_head, m_block, thread);
    }
    if (thread < Traits::kBlockM) smem.row_max[thread] = -INFINITY;
    fence_view_async_shared();
    __syncthreads();
    if (p.q_by_tma) {
      mbarrier_wait(&smem.q_barrier, q_phase);
      q_phase ^= 1;
    }

    uint32_t q_regs[16];
    if constexpr (Traits::kQBoxInRegisters) {
      load_a_fragment_sw128(smem.boxes[Traits::kQBoxesShared], q_regs, warp_in_wg, lane);
    }

    // Rows this thread owns and how many tokens each may attend.
    int row_limit[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = m_block * Traits::kBlockM + 16 * warp_in_wg + lane / 4 + 8 * i;
      const int s = row / p.heads_per_kv;
      row_limit[i] = p.causal ? min(tiles.seqlen, tiles.seqlen - p.seqlen_q + s + 1) : tiles.seqlen;
    }
    const auto partial = [&](int tile) { return (tile + 1) * Traits::kBlockN > tiles.seqlen; };
    // Pairs whose two tiles are whole and unmasked for every row of the block (rows' limits
    // grow with the row, so the first row's is the least) and that another pair follows run a
    // copy of the pair's code without any of the runtime checks: fewer instructions and branches
    // a pair, and a compact hot loop for the instruction cache. Steady pairs are t0 < steady_end.
    const int first_row_s = m_block * Traits::kBlockM / p.heads_per_kv;
    const int least_limit =
        p.causal ? min(tiles.seqlen, tiles.seqlen - p.seqlen_q + first_row_s + 1) : tiles.seqlen;
    const int last_steady_t0 = min(tiles.last - 4, least_limit / Traits::kBlockN - 2);
    const int steady_end = last_steady_t0 >= tiles.first
                               ? last_steady_t0 + 2 - (last_steady_t0 - tiles.first) % 2
                               : tiles.first;

    float acc[Traits::kColsPerWarpgroup / 2];
#pragma unroll
    for (int i = 0; i < Traits::kColsPerWarpgroup / 2; ++i) acc[i] = 0.f;
    float row_sum[2] = {0.f, 0.f};  // this thread's share, in the units of the running max
    float s[32];
    uint32_t probs[16];

    if (warpgroup == 0) {
      if (tiles.first < tiles.last) {
        seesaw_scores<Traits, false>(smem, 0, phase[0], q_desc, k_desc, q_regs, s);
      }
      const auto pair0 = [&]<bool kSteady>(const int t0) {
        const bool has_t1 = kSteady || t0 + 1 < tiles.last;
        const bool next_t0 = kSteady || t0 + 2 < tiles.last;
        const bool next_t1 = kSteady || t0 + 3 < tiles.last;
        // The next pair's pages. (Computed instead while P0 V0L runs, the wait for the table
        // load moved there and a pair took 7560 cycles instead of 7180: perf-notes.)
        SeesawTileSource next_source[2];
        if (next_t0) next_source[0] = tile_source(t0 + 2);
        if (next_t1) next_source[1] = tile_source(t0 + 3);

        // m0, c0, P0 (s keeps P0 in fp32 for P0' below).
        float c0[2];
        constexpr float kNoCarry[2] = {1.f, 1.f};  // o_L's sum is already in m's units
        seesaw_softmax<Element, kSteady>(s, probs, row_sum, c0, kNoCarry, smem.row_max, smem.scale0,
                                         t0 * Traits::kBlockN, row_limit, p.scale_log2, warp_in_wg,
                                         lane);
        // o_L's rescale before the arrival (as FlashMLA orders it): after it, warpgroup 1's
        // softmax runs on the same SM sub-partitions and would share the FMA pipes with it.
        rescale_rows(acc, c0);
        named_barrier_arrive(kSeesawScale0Ready, Traits::kNumThreads);

        // o_L = o_L c0 + P0 V0L.
        if (!kSteady && partial(t0)) {
          zero_v_rows_past<Traits>(smem.k[0], 0, tiles.seqlen - t0 * Traits::kBlockN, thread_in_wg,
                                   own_barrier);
        }
        wgmma_fence();
        issue_pv_registers<kIsBF16>(acc, probs, v_buffer(0));
        wgmma_commit();
        wgmma_wait<0>();
        fence_registers(acc);

        // P0' = P0 c1 for warpgroup 1.
        named_barrier_sync(kSeesawScale1Ready, Traits::kNumThreads);
        // Buffer 0's first part (S0 and V0L, both read) takes the next t0: issued after the
        // sync, so that the issuing thread does not hold up the warpgroup's wait for c1.
        if (issuer && next_t0)
          issue_seesaw_part<Traits>(&k_map, smem, 0, 0, next_source[0], kv_head);
        __syncwarp();
        float c1[2];
        load_owned_rows(smem.scale1, warp_in_wg, lane, c1);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            probs[2 * j + i] =
                pack_pair<Element>(s[4 * j + 2 * i] * c1[i], s[4 * j + 2 * i + 1] * c1[i]);
          }
        }
        store_probs_stmatrix_sw128(p0_box, probs, warp_in_wg, lane);
        fence_view_async_shared();
        named_barrier_arrive(kSeesawP0Ready, Traits::kNumThreads);

        // o_L = o_L c1 + P1 V1L.
        if (has_t1) {
          if (!kSteady && partial(t0 + 1)) {
            zero_v_rows_past<Traits>(smem.k[1], 0, tiles.seqlen - (t0 + 1) * Traits::kBlockN,
                                     thread_in_wg, own_barrier);
          }
          named_barrier_sync(kSeesawP1Issued, Traits::kNumThreads);
          rescale_rows(acc, c1);
          row_sum[0] *= c1[0];
          row_sum[1] *= c1[1];
          wgmma_fence();
          issue_pv_shared<kIsBF16>(acc, p1_desc, v_buffer(1));
          wgmma_commit();
        }
        phase[0] ^= 1;
        if (has_t1) phase[1] ^= 1;

        // S0 of the next pair, its first part while P1 V1L runs.
        if (next_t0) {
          issue_seesaw_scores<Traits, 0, Traits::kPartBoundary, 0>(smem, 0, phase[0], q_desc,
                                                                   k_desc, q_regs, s);
          wgmma_commit();
          if (has_t1) {
            wgmma_wait<1>();  // P1 V1L done: buffer 1's first part takes the next t1
            if (issuer && next_t1) {
              issue_seesaw_part<Traits>(&k_map, smem, 1, 0, next_source[1], kv_head);
            }
            __syncwarp();
          }
          issue_seesaw_scores<Traits, Traits::kPartBoundary, Traits::kNumBoxesQK, 0>(
              smem, 0, phase[0], q_desc, k_desc, q_regs, s);
          wgmma_commit();
          wgmma_wait<0>();
          fence_registers(s);
        } else {
          wgmma_wait<0>();
        }
        fence_registers(acc);
      };
      int t0 = tiles.first;
      for (; t0 < steady_end; t0 += 2) pair0.template operator()<true>(t0);
      for (; t0 < tiles.last; t0 += 2) pair0.template operator()<false>(t0);
      if (batch == range.end_batch && thread_in_wg == 0) allow_dependent_launch();
    } else {
      if (tiles.first + 1 < tiles.last) {
        seesaw_scores<Traits, true>(smem, 1, phase[1], q_desc, k_desc, q_regs, s);
      }
      // A bad length or table entry marks the whole sequence (every CTA serving it agrees); one
      // vote per warp, read by both warpgroups after kSeesawStatsReady.
      const bool found_bad = check_sequence_values(p, tiles, batch, thread_in_wg, 128);
      const bool warp_found_bad = __any_sync(0xffffffff, found_bad);
      if (lane == 0) smem.bad_sequence_votes[warp_in_wg] = warp_found_bad;

      const auto pair1 = [&]<bool kSteady>(const int t0) {
        const int t1 = t0 + 1;
        const bool has_t1 = kSteady || t1 < tiles.last;
        const bool next_t0 = kSteady || t0 + 2 < tiles.last;
        const bool next_t1 = kSteady || t0 + 3 < tiles.last;

        // m1, c1, P1; o_R = o_R c0 c1 (+ P1 V1R below). Without t1 every column is masked:
        // m1 = m0, c1 = 1 (0 while no row token was valid yet, when o_R and the sum are 0).
        named_barrier_sync(kSeesawScale0Ready, Traits::kNumThreads);
        float c0[2], c1[2];
        load_owned_rows(smem.scale0, warp_in_wg, lane, c0);
        const int t1_limit[2] = {has_t1 ? row_limit[0] : 0, has_t1 ? row_limit[1] : 0};
        seesaw_softmax<Element, kSteady>(s, probs, row_sum, c1, c0, smem.row_max, smem.scale1,
                                         t1 * Traits::kBlockN, t1_limit, p.scale_log2, warp_in_wg,
                                         lane);
        const float c01[2] = {c0[0] * c1[0], c0[1] * c1[1]};
        rescale_rows(acc, c01);  // before the arrival, as warpgroup 0's (above)
        named_barrier_arrive(kSeesawScale1Ready, Traits::kNumThreads);

        if (has_t1) {
          store_probs_stmatrix_sw128(p1_box, probs, warp_in_wg, lane);
          if (!kSteady && partial(t1)) {
            zero_v_rows_past<Traits>(smem.k[1], Traits::kBoxesPerWarpgroup,
                                     tiles.seqlen - t1 * Traits::kBlockN, thread_in_wg,
                                     own_barrier);
          }
          wgmma_fence();
          issue_pv_registers<kIsBF16>(acc, probs, v_buffer(1));
          wgmma_commit();
          fence_view_async_shared();  // P1 for warpgroup 0's wgmma
        }

        // o_R += P0' V0R.
        named_barrier_sync(kSeesawP0Ready, Traits::kNumThreads);
        if (!kSteady && partial(t0)) {
          zero_v_rows_past<Traits>(smem.k[0], Traits::kBoxesPerWarpgroup,
                                   tiles.seqlen - t0 * Traits::kBlockN, thread_in_wg, own_barrier);
        }
        wgmma_fence();
        issue_pv_shared<kIsBF16>(acc, p0_desc, v_buffer(0));
        wgmma_commit();
        if (has_t1) named_barrier_arrive(kSeesawP1Issued, Traits::kNumThreads);
        SeesawTileSource next_source[2];  // the next pair's pages, while the products run
        if (next_t0) next_source[0] = tile_source(t0 + 2);
        if (next_t1) next_source[1] = tile_source(t0 + 3);
        phase[0] ^= 1;
        if (has_t1) phase[1] ^= 1;

        // Buffer 1's second part (S1, V1R) takes the next t1, buffer 0's (S0, V0R) the next t0.
        if (has_t1) {
          wgmma_wait<1>();
          if (issuer && next_t1)
            issue_seesaw_part<Traits>(&k_map, smem, 1, 1, next_source[1], kv_head);
          __syncwarp();
        }
        wgmma_wait<0>();
        fence_registers(acc);
        if (issuer && next_t0)
          issue_seesaw_part<Traits>(&k_map, smem, 0, 1, next_source[0], kv_head);
        __syncwarp();

        if (next_t1) seesaw_scores<Traits, true>(smem, 1, phase[1], q_desc, k_desc, q_regs, s);
      };
      int t0 = tiles.first;
      for (; t0 < steady_end; t0 += 2) pair1.template operator()<true>(t0);
      for (; t0 < tiles.last; t0 += 2) pair1.template operator()<false>(t0);
    }

    // Epilogue: both warpgroups' sums are in the units of the final running max.
#pragma unroll
    for (int i = 0; i < 2; ++i) row_sum[i] = quad_sum(row_sum[i]);
    publish_owned_rows(smem.row_sum[warpgroup], row_sum, warp_in_wg, lane);
    named_barrier_sync(kSeesawStatsReady, Traits::kNumThreads);
    // Every product of this sequence is done: the next sequence's Q loads while the output is
    // written.
    if (p.q_by_tma && thread == 0 && batch < range.end_batch) {
      issue_q_tile<Traits>(&q_map, &smem.q_barrier, smem.boxes, batch + 1, kv_head, m_block,
                           p.heads_per_kv);
    }
    float row_max[2], sum0[2], sum1[2];
    load_owned_rows(smem.row_max, warp_in_wg, lane, row_max);
    load_owned_rows(smem.row_sum[0], warp_in_wg, lane, sum0);
    load_owned_rows(smem.row_sum[1], warp_in_wg, lane, sum1);
    const bool bad = sequence_marked_bad(smem);
    float inv_sum[2], lse[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      finalize_row_sum(row_max[i], sum0[i] + sum1[i], inv_sum[i], lse[i]);
      // Warpgroup 1's verdict on the sequence's values: out and lse become NaN.
      if (bad) inv_sum[i] = lse[i] = NAN;
    }
    if (warpgroup == 0 && lane % 4 == 0) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        write_row_lse(p, target, 16 * warp_in_wg + lane / 4 + 8 * i, lse[i]);
      }
    }
    write_output_cols<Element, Traits::kHeadDimV, Traits::kColsPerWarpgroup>(
        p, target, acc, Traits::kColsPerWarpgroup * warpgroup, inv_sum, thread_in_wg);
  }
}

}  // namespace flashmla::sm90
