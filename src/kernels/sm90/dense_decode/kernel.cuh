// The Hopper dense-decode kernel body: split-KV over a paged cache, TMA + wgmma.
// Shapes, roles and shared-memory layout: traits.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/common/sm90_decode_epilogue.cuh"
#include "kernels/common/sm90_decode_tile.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_online_softmax.cuh"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/sm90/dense_decode/kernel_params.h"
#include "kernels/sm90/dense_decode/load_q.cuh"
#include "kernels/sm90/dense_decode/sequence_check.cuh"
#include "kernels/sm90/dense_decode/work_range.cuh"

namespace flashmla::sm90 {

// Named barriers (id 0 is __syncthreads). Both warpgroups sync (rather than one arriving)
// on the hand-overs: the other side is already waiting there in the steady state, so it costs
// nothing, and every shared-memory hand-off is then a full barrier for racecheck too.
enum DenseDecodeBarrier : uint32_t {
  kProbsReady = 1,    // warpgroup 0 wrote P and the row rescale factors
  kProbsFree = 2,     // warpgroup 1 finished reading P
  kStatsReady = 3,    // warpgroup 0 wrote the epilogue row statistics
  kSoftmaxGroup = 4,  // warpgroup 0 alone
};

// Walks the KV tiles of a part in order, for the warp that issues the TMA loads.
struct TileCursor {
  int batch;
  int tile;
  int last;
  int seqlen;  // clamped length of `batch`
};

// The page holding `token` of sequence `batch` and the token's row in it. Non-paged caches are
// one page per sequence. Table entries outside [0, num_blocks) make TMA read zeros (bounds
// check), never foreign memory; the sequence check reports them.
__device__ __forceinline__ void locate_token(const DenseDecodeKernelParams& p, int batch, int token,
                                             int& block, int& row_in_page) {
  const int page = static_cast<int>(p.page_divisor.quotient(static_cast<uint32_t>(token)));
  row_in_page = token - page * p.page_block_size;
  block = p.block_table == nullptr
              ? batch
              : __ldg(p.block_table + batch * p.block_table_batch_stride + page);
}

// Whether warp `producer_warp` (0..3) of warpgroup 1 takes part in issuing KV loads: only the
// first when tiles are loaded whole, all four when they are loaded in pieces.
__device__ __forceinline__ bool issues_kv_loads(const DenseDecodeKernelParams& p,
                                                int producer_warp) {
  return producer_warp == 0 || p.load_rows != kDecodeTileTokens;
}

// A whole tile's page, read from the block table one tile before its loads are issued, so the
// table's load latency is not paid between a stage's release and its refill.
struct LocatedTile {
  int block;
  int row_in_page;
};

template <class Traits>
__device__ __forceinline__ void issue_whole_kv_tile(const CUtensorMap* k_map,
                                                    typename Traits::SharedStorage& smem, int stage,
                                                    const LocatedTile& located, int kv_head,
                                                    int lane) {
  if (lane == 0) {
    mbarrier_arrive_expect_tx(&smem.full_barrier[stage], Traits::kTileBytes);
#pragma unroll
    for (int box = 0; box < Traits::kNumBoxesQK; ++box) {
      tma_load_4d(k_map, &smem.full_barrier[stage], smem.k[stage][box], box * Traits::kBoxCols,
                  located.row_in_page, kv_head, located.block);
    }
  }
}

// Issues the TMA loads of the cursor's tile into `stage`. A tile that lies in one page
// (load_rows == kBlockN): lane 0 of warp 0 loads one box per 64 columns. Otherwise pieces of
// load_rows tokens (which divides both the page size and 64, so a piece never crosses a page),
// one box per piece and 64 columns, spread evenly over the lanes of all four warps of
// warpgroup 1: TMA issue is serial within a warp, so four warps issue a tile's 36 loads (pages
// of 16) in about the time one issues a whole tile's 9. Pieces past the sequence end are not
// loaded: their rows keep stale values, which the consumers mask (S) and zero (V) like the
// garbage rows of a page.
template <class Traits>
__device__ __forceinline__ void issue_kv_tile(const DenseDecodeKernelParams& p,
                                              const CUtensorMap* k_map,
                                              typename Traits::SharedStorage& smem, int stage,
                                              const TileCursor& cursor, int kv_head,
                                              int producer_warp, int lane) {
  const int rows = p.load_rows;
  const int token0 = cursor.tile * Traits::kBlockN;
  if (rows == Traits::kBlockN) {
    if (lane == 0) {
      LocatedTile located;
      locate_token(p, cursor.batch, token0, located.block, located.row_in_page);
      issue_whole_kv_tile<Traits>(k_map, smem, stage, located, kv_head, lane);
    }
    return;
  }
  const int valid = min(Traits::kBlockN, cursor.seqlen - token0);  // >= 1 for a planned tile
  const int num_loads = (valid + rows - 1) / rows * Traits::kNumBoxesQK;
  if (producer_warp == 0 && lane == 0) {
    // Another warp's load may complete first: the transaction count may dip below zero, but
    // the phase cannot complete before this arrival.
    mbarrier_arrive_expect_tx(&smem.full_barrier[stage],
                              uint32_t(num_loads) * rows * Traits::kBoxCols * 2);
  }
  for (int load = lane * 4 + producer_warp; load < num_loads; load += 128) {
    const int piece = load / Traits::kNumBoxesQK;
    const int box = load - piece * Traits::kNumBoxesQK;
    int block, row_in_page;
    locate_token(p, cursor.batch, token0 + piece * rows, block, row_in_page);
    tma_load_4d(k_map, &smem.full_barrier[stage],
                smem.k[stage][box] + piece * rows * Traits::kBoxCols, box * Traits::kBoxCols,
                row_in_page, kv_head, block);
  }
}

// Whether warpgroup 1 found the current sequence's values bad (valid after kStatsReady).
template <class SharedStorage>
__device__ __forceinline__ bool sequence_marked_bad(const SharedStorage& smem) {
  return (smem.bad_sequence_votes[0] | smem.bad_sequence_votes[1] | smem.bad_sequence_votes[2] |
          smem.bad_sequence_votes[3]) != 0;
}

// Advances `cursor` to the next tile of the part (skipping sequences with no tiles).
__device__ __forceinline__ void advance_cursor(const DenseDecodeKernelParams& p,
                                               const DecodePartRange& range, int m_block,
                                               TileCursor& cursor) {
  ++cursor.tile;
  while (cursor.tile >= cursor.last && cursor.batch < range.end_batch) {
    ++cursor.batch;
    const BatchTiles t = decode_batch_tiles(p, range, cursor.batch, m_block);
    cursor.tile = t.first;
    cursor.last = t.last;
    cursor.seqlen = t.seqlen;
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    dense_decode_kernel(const __grid_constant__ DenseDecodeKernelParams p,
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
  // Warps of warpgroup 1 issue the KV loads (see issues_kv_loads).
  const bool kv_loader = warpgroup == 1 && issues_kv_loads(p, warp_in_wg);

  // Tiles of the whole part, so both warpgroups agree on barrier counts and stages.
  int total_tiles = 0;
  for (int b = range.begin_batch; b <= range.end_batch; ++b) {
    const BatchTiles t = decode_batch_tiles(p, range, b, m_block);
    total_tiles += t.last - t.first;
  }

  if (thread == 0) {
    for (int stage = 0; stage < Traits::kNumStages; ++stage) {
      mbarrier_init(&smem.full_barrier[stage], 1);
      mbarrier_init(&smem.empty_barrier[stage], Traits::kNumThreads / 32);
    }
    mbarrier_init(&smem.q_barrier, 1);
    fence_barrier_init();
    if (p.q_by_tma) prefetch_tma_descriptor(&q_map);
  }
  __syncthreads();

  // The loading warps keep their own cursor, running kNumStages tiles ahead of the consumers.
  TileCursor cursor;
  // Whole tiles: after the first stages are issued, `cursor` is the next tile to issue and
  // `ahead` its page.
  const bool locate_ahead = p.load_rows == Traits::kBlockN;
  LocatedTile ahead = {0, 0};
  if (kv_loader) {
    if (thread == 128) prefetch_tma_descriptor(&k_map);
    const BatchTiles t = decode_batch_tiles(p, range, range.begin_batch, m_block);
    cursor = {range.begin_batch, t.first - 1, t.last, t.seqlen};
    for (int i = 0; i < Traits::kNumStages && i < total_tiles; ++i) {
      advance_cursor(p, range, m_block, cursor);
      issue_kv_tile<Traits>(p, &k_map, smem, i, cursor, kv_head, warp_in_wg, lane);
    }
    if (locate_ahead && Traits::kNumStages < total_tiles) {
      advance_cursor(p, range, m_block, cursor);
      locate_token(p, cursor.batch, cursor.tile * Traits::kBlockN, ahead.block, ahead.row_in_page);
    }
    __syncwarp();
  }

  const uint64_t q_desc = make_sw128_desc(smem.q[0], 16, 1024);
  const uint64_t k_desc = make_sw128_desc(smem.k[0][0], 16, 1024);
  const uint64_t p_desc = make_sw128_desc(smem.p, 16, 1024);
  // V (the first 512 columns of a K tile) as an MN-major B operand: 64-column chunks are
  // whole boxes apart, 8-token groups 1024 bytes apart. Warpgroup 0 reads columns [0, 192),
  // warpgroup 1 columns [192, 448) and [448, 512).
  constexpr int kBoxWg1 = Traits::kColsWg0 / Traits::kBoxCols;
  const uint64_t v_desc =
      make_sw128_desc(smem.k[0][warpgroup == 0 ? 0 : kBoxWg1], Traits::kBoxBytes, 1024);
  const uint64_t v_desc_tail = make_sw128_desc(smem.k[0][kBoxWg1 + 4], Traits::kBoxBytes, 1024);
  constexpr uint32_t kStageBytes = Traits::kTileBytes;  // one KV stage holds one tile

  int tile_index = 0;    // position in the part's tile sequence (stage = index % stages)
  uint32_t q_phase = 0;  // parity of the current Q tile on q_barrier (Q by TMA)
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

    if (batch != range.begin_batch) __syncthreads();  // previous Q and epilogue data consumed
    // The part's first Q tile is copied by every thread; where an m-block is 64 heads of one
    // query token and q suits a tensor map (DenseDecodeKernelParams::q_by_tma), the next ones
    // come by TMA, issued by thread 0 after the statistics barrier below so that they land
    // while the output is written, and only warpgroup 0 (S) waits for them (as the sparse
    // kernels do; the seesaw kernel loads them all so).
    if (p.q_by_tma && batch != range.begin_batch) {
      if (warpgroup == 0) mbarrier_wait(&smem.q_barrier, q_phase);
      q_phase ^= 1;
    } else {
      load_q_tile<Traits>(p, smem.q, batch, kv_head, m_block, thread);
      fence_view_async_shared();
      __syncthreads();
    }

    // Rows this thread owns and how many tokens each may attend.
    int row_limit[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = m_block * Traits::kBlockM + 16 * warp_in_wg + lane / 4 + 8 * i;
      const int s = row / p.heads_per_kv;
      row_limit[i] = p.causal ? min(tiles.seqlen, tiles.seqlen - p.seqlen_q + s + 1) : tiles.seqlen;
    }

    if (warpgroup == 0) {
      float acc[Traits::kColsWg0 / 2];
#pragma unroll
      for (int i = 0; i < Traits::kColsWg0 / 2; ++i) acc[i] = 0.f;
      RowStats stats = {{-INFINITY, -INFINITY}, {0.f, 0.f}};
      for (int tile = tiles.first; tile < tiles.last; ++tile, ++tile_index) {
        const int stage = tile_index % Traits::kNumStages;
        const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
        const int token0 = tile * Traits::kBlockN;
        mbarrier_wait(&smem.full_barrier[stage], phase);

        // S = Q K^T over all head_dim_qk columns.
        float s[32];
        compute_scores<kIsBF16, Traits::kNumBoxesQK, Traits::kBoxBytes>(
            opaque_desc(q_desc), desc_advance(opaque_desc(k_desc), stage * kStageBytes), s);

        uint32_t probs[16];
        float rescale[2];
        const RowLimitMask mask(token0, row_limit);
        online_softmax_unless_all_valid<Element>(!mask.any_masked, s, probs, stats, rescale,
                                                 p.scale_log2, mask, lane);

        // Rows past the sequence end may hold NaN; P is 0 there but 0 * NaN is NaN, so zero
        // the V part of those rows before any P V product reads them.
        if (token0 + Traits::kBlockN > tiles.seqlen) {
          const int valid = tiles.seqlen - token0;
          const int chunks = (Traits::kBlockN - valid) * Traits::kNumBoxesV * 8;
          for (int idx = thread_in_wg; idx < chunks; idx += 128) {
            const int row = valid + idx / (Traits::kNumBoxesV * 8);
            const int box = (idx / 8) % Traits::kNumBoxesV;
            char* dst = reinterpret_cast<char*>(smem.k[stage][box]) + row * 128 + (idx % 8) * 16;
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
          }
          fence_view_async_shared();
          named_barrier_sync(kSoftmaxGroup, 128);
        }

        // Hand P and the rescale factors to warpgroup 1.
        // Within a sequence only: across sequences the __syncthreads before loading Q orders it
        // (and warpgroup 1 must not block here while warpgroup 0 waits in its epilogue).
        if (tile > tiles.first) named_barrier_sync(kProbsFree, Traits::kNumThreads);
        {
          store_probs_sw128(smem.p, probs, warp_in_wg, lane);
          if (lane % 4 == 0) {
            smem.row_scale[16 * warp_in_wg + lane / 4] = rescale[0];
            smem.row_scale[16 * warp_in_wg + lane / 4 + 8] = rescale[1];
          }
        }
        fence_view_async_shared();
        named_barrier_sync(kProbsReady, Traits::kNumThreads);

        // O[:, 0:192] = O * rescale + P V.
        accumulate_pv_from_registers<kIsBF16, Traits::kColsWg0>(
            acc, probs, rescale, desc_advance(v_desc, stage * kStageBytes));
        if (lane == 0) mbarrier_arrive(&smem.empty_barrier[stage]);
      }
      if (batch == range.end_batch && thread_in_wg == 0) allow_dependent_launch();

      // Row statistics for both warpgroups' epilogues.
      float inv_sum[2], lse[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        finalize_row(stats, i, inv_sum[i], lse[i]);
        if (lane % 4 == 0) smem.row_inv_sum[16 * warp_in_wg + lane / 4 + 8 * i] = inv_sum[i];
      }
      named_barrier_sync(kStatsReady, Traits::kNumThreads);
      // Every S of this sequence is done (each thread of warpgroup 0 waited for its own before
      // the barrier): the next sequence's Q may land while the output is written.
      if (p.q_by_tma && thread == 0 && batch < range.end_batch) {
        issue_q_tile<Traits>(&q_map, &smem.q_barrier, smem.q, batch + 1, kv_head, m_block,
                             p.heads_per_kv);
      }
      // Warpgroup 1's verdict on the sequence's values (see below): out and lse become NaN.
      if (sequence_marked_bad(smem)) {
#pragma unroll
        for (int i = 0; i < 2; ++i) inv_sum[i] = lse[i] = NAN;
      }
      if (lane % 4 == 0) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
          write_row_lse(p, target, 16 * warp_in_wg + lane / 4 + 8 * i, lse[i]);
      }
      write_output_cols<Element, Traits::kHeadDimV, Traits::kColsWg0>(p, target, acc, 0, inv_sum,
                                                                      thread_in_wg);
    } else {
      float acc[128], acc_tail[32];  // columns [192, 448) and [448, 512)
#pragma unroll
      for (int i = 0; i < 128; ++i) acc[i] = 0.f;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc_tail[i] = 0.f;
      // A bad length or table entry marks the whole sequence (every CTA serving it agrees).
      // Warpgroup 1 checks while warpgroup 0 computes the first S, so the table loads stay off
      // the critical path; one vote per warp, read by both warpgroups after kStatsReady.
      const bool found_bad = check_sequence_values(p, tiles, batch, thread_in_wg, 128);
      const bool warp_found_bad = __any_sync(0xffffffff, found_bad);
      if (lane == 0) smem.bad_sequence_votes[warp_in_wg] = warp_found_bad;
      for (int tile = tiles.first; tile < tiles.last; ++tile, ++tile_index) {
        const int stage = tile_index % Traits::kNumStages;
        const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
        named_barrier_sync(kProbsReady, Traits::kNumThreads);
        float rescale[2];
        load_owned_rows(smem.row_scale, warp_in_wg, lane, rescale);
        // O[:, 192:512] = O * rescale + P V with P from shared memory.
        accumulate_pv_from_shared<kIsBF16>(acc, acc_tail, rescale, p_desc,
                                           desc_advance(v_desc, stage * kStageBytes),
                                           desc_advance(v_desc_tail, stage * kStageBytes));
        if (lane == 0) mbarrier_arrive(&smem.empty_barrier[stage]);

        // Refill this stage with the tile kNumStages ahead once all 8 warps have left it.
        if (kv_loader && tile_index + Traits::kNumStages < total_tiles) {
          mbarrier_wait(&smem.empty_barrier[stage], phase);
          if (locate_ahead) {
            issue_whole_kv_tile<Traits>(&k_map, smem, stage, ahead, kv_head, lane);
            if (tile_index + Traits::kNumStages + 1 < total_tiles) {
              advance_cursor(p, range, m_block, cursor);
              locate_token(p, cursor.batch, cursor.tile * Traits::kBlockN, ahead.block,
                           ahead.row_in_page);
            }
          } else {
            advance_cursor(p, range, m_block, cursor);
            issue_kv_tile<Traits>(p, &k_map, smem, stage, cursor, kv_head, warp_in_wg, lane);
          }
        }
        __syncwarp();  // reconverge the producer's warp before the next aligned barrier
        if (tile + 1 < tiles.last) named_barrier_sync(kProbsFree, Traits::kNumThreads);
      }
      named_barrier_sync(kStatsReady, Traits::kNumThreads);
      float inv_sum[2];
      load_owned_rows(smem.row_inv_sum, warp_in_wg, lane, inv_sum);
      if (sequence_marked_bad(smem)) inv_sum[0] = inv_sum[1] = NAN;
      write_output_cols_wg1<Element, Traits::kHeadDimV>(p, target, acc, acc_tail, inv_sum,
                                                        thread_in_wg);
    }
  }
}

}  // namespace flashmla::sm90
