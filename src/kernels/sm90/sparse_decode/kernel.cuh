// The Hopper sparse-decode kernel body: split-KV over gathered top-k tokens. Roles, shapes and
// shared-memory layout: traits.h. The consumer warpgroups run the dense kernel's tile steps
// (kernels/common/sm90_decode_tile.cuh); warpgroup 2 gathers and dequantizes the tiles.
#pragma once

#include <cmath>
#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/common/sm90_decode_epilogue.cuh"
#include "kernels/common/sm90_decode_tile.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_load_rows.cuh"
#include "kernels/common/sm90_online_softmax.cuh"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/common/sm90_q_tile_tma.cuh"
#include "kernels/sm90/sparse_decode/kernel_params.h"
#include "kernels/sm90/sparse_decode/producer.cuh"
#include "kernels/sm90/sparse_decode/work_range.cuh"

namespace flashmla::sm90 {

// Named barriers over the two consumer warpgroups (id 0 is __syncthreads).
enum SparseDecodeBarrier : uint32_t {
  kSparseProbsReady = 1,  // warpgroup 0 wrote P and the row rescale factors
  kSparseProbsFree = 2,   // warpgroup 1 finished reading P
  kSparseStatsReady = 3,  // warpgroup 0 wrote the epilogue row statistics
  kSparseQReady = 4,      // the Q tile of the next sequence is in shared memory
};

// The Q tile of query token s of `batch` (heads of m-block m_block) by TMA, onto q_barrier.
template <class Traits>
__device__ __forceinline__ void issue_sparse_q(const CUtensorMap* q_map,
                                               typename Traits::SharedStorage& smem, int batch,
                                               int s, int m_block) {
  issue_q_tile_tma<Traits::kNumBoxesQK, Traits::kBoxBytes>(
      q_map, &smem.q_barrier, [&](int box) { return smem.q[box]; }, m_block * Traits::kBlockM, s,
      batch);
}

// Warpgroups 0 and 1 (kWarpgroup): the dense kernel's consumer side over the part's tiles.
// A template per role, so that each role's code sits in its own branch after setmaxnreg and
// ptxas gives it that role's register budget.
template <class Traits, int kWarpgroup>
__device__ __forceinline__ void sparse_decode_consumer(const SparseDecodeKernelParams& p,
                                                       const CUtensorMap* q_map,
                                                       const DecodePartRange& range, int m_block,
                                                       int s, typename Traits::SharedStorage& smem,
                                                       int thread) {
  using Element = typename Traits::Element;
  constexpr int kConsumers = Traits::kNumConsumerThreads;
  const int thread_in_wg = thread % 128;
  const int warp_in_wg = thread_in_wg / 32;
  const int lane = thread % 32;

  const int head_base = m_block * Traits::kBlockM;
  const uint64_t q_desc = make_sw128_desc(smem.q[0], 16, 1024);
  const uint64_t k_desc = make_sw128_desc(smem.k[0][0], 16, 1024);
  const uint64_t p_desc = make_sw128_desc(smem.p, 16, 1024);
  constexpr int kBoxWg1 = Traits::kColsWg0 / Traits::kBoxCols;
  const uint64_t v_desc =
      make_sw128_desc(smem.k[0][kWarpgroup == 0 ? 0 : kBoxWg1], Traits::kBoxBytes, 1024);
  const uint64_t v_desc_tail = make_sw128_desc(smem.k[0][kBoxWg1 + 4], Traits::kBoxBytes, 1024);
  constexpr uint32_t kStageBytes = Traits::kTileBytes;
  // Leaving a stage: with the crossover the peer's producer writes into it too, so the
  // arrival goes to both CTAs' empty barriers.
  const uint32_t peer_empty =
      Traits::kCrossover
          ? peer_shared_address(smem_addr(&smem.empty_barrier[0]), cluster_cta_rank() ^ 1)
          : 0;
  const auto release_stage = [&](int stage) {
    mbarrier_arrive(&smem.empty_barrier[stage]);
    if constexpr (Traits::kCrossover) mbarrier_arrive_peer(peer_empty + uint32_t(stage) * 8);
  };

  // The attention sink of the two rows (heads) this thread owns in warpgroup 0, log2 units.
  float sink_log2[2] = {-INFINITY, -INFINITY};
  if (kWarpgroup == 0 && p.attn_sink != nullptr) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int head = head_base + 16 * warp_in_wg + lane / 4 + 8 * i;
      if (head < p.num_heads_q) sink_log2[i] = p.attn_sink[head] * 1.4426950408889634f;
    }
  }

  int tile_index = 0;
  uint32_t q_phase = 0;  // parity of the current Q tile on q_barrier (Q by TMA)
  for (int batch = range.begin_batch; batch <= range.end_batch; ++batch) {
    const SparseBatchTiles tiles = sparse_batch_tiles(p, range, batch);
    const int splits_before = p.num_splits[batch];
    EpilogueTarget target;
    target.batch = batch;
    target.kv_head = 0;
    target.row_base = s * p.num_heads_q + head_base;
    target.num_rows = p.num_heads_q - head_base;
    target.single_split = p.num_splits[batch + 1] - splits_before == 1;
    target.split_slot = splits_before + (batch == range.begin_batch ? range.begin_split : 0);

    // Q rows: the heads of query token s. The part's first sequence's are copied by both
    // warpgroups (cp.async; the previous sequence's last reads of Q, warpgroup 0's S, are
    // ordered before this by the statistics barrier, and warpgroup 1's of the row arrays by
    // the barrier after the copy). The next ones come by
    // TMA where q suits it, issued by thread 0 after the statistics barrier below, so that they
    // land while the output is written; only warpgroup 0, which computes S, waits for them.
    // (The first one by TMA too, issued at the kernel's start, made the one-sequence parts of
    // sparse b 2 1.5 us slower: docs/perf-notes.md.)
    if (p.q_by_tma && batch > range.begin_batch) {
      // Without tiles, nothing else would order warpgroup 1's reads of the previous sequence's
      // row_inv_sum (after the statistics barrier) before warpgroup 0 writes this one's (both
      // warpgroups agree on the count; with tiles the first P hand-off orders it).
      if (tiles.first == tiles.last) named_barrier_sync(kSparseQReady, kConsumers);
      if constexpr (kWarpgroup == 0) mbarrier_wait(&smem.q_barrier, q_phase);
      q_phase ^= 1;
    } else {
      const auto* q = static_cast<const char*>(p.q);
      const auto q_row = [&](int row) -> const char* {
        const int head = head_base + row;
        if (head >= p.num_heads_q) return nullptr;
        return q + (batch * p.q_batch_stride + s * p.q_seq_stride + head * p.q_head_stride) * 2;
      };
      load_rows_sw128<Traits::kBlockM, Traits::kHeadDimQK, kConsumers>(smem.q, q_row, thread);
      // The peer's barriers are initialised (the cluster barrier's first phase) before this
      // thread's first arrival on them, at the end of its first tile.
      if (Traits::kCrossover && batch == range.begin_batch) cluster_wait();
      fence_view_async_shared();
      named_barrier_sync(kSparseQReady, kConsumers);
    }

    if constexpr (kWarpgroup == 0) {
      float acc[Traits::kColsWg0 / 2];
#pragma unroll
      for (int i = 0; i < Traits::kColsWg0 / 2; ++i) acc[i] = 0.f;
      RowStats stats = {{-INFINITY, -INFINITY}, {0.f, 0.f}};
      for (int tile = tiles.first; tile < tiles.last; ++tile, ++tile_index) {
        const int stage = tile_index % Traits::kNumStages;
        const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
        mbarrier_wait(&smem.full_barrier[stage], phase);
        if constexpr (Traits::kCrossover) mbarrier_wait(&smem.peer_full_barrier[stage], phase);

        float scores[32];
        compute_scores<true, Traits::kNumBoxesQK, Traits::kBoxBytes>(
            opaque_desc(q_desc), desc_advance(opaque_desc(k_desc), stage * kStageBytes), scores);
        uint32_t probs[16];
        float rescale[2];
        // Invalid tokens were stored as zeros (no NaN reaches P V); their logits are masked.
        // Only lane 0, the thread that later arrives on the stage's empty barrier, reads the
        // producer's mask word, so that every read is ordered before an arrival (probe:
        // tests/probes/racecheck_mbarrier_handoff.cu); the others get it by shuffle.
        uint64_t valid_bits = 0;
        if (lane == 0) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
#pragma unroll
            for (int w = 0; w < 4 * Traits::kProducersPerRound; ++w) {
              valid_bits |= uint64_t(smem.token_valid[stage][r][w]) << (32 * r + 8 * (w % 4));
            }
          }
        }
        valid_bits = __shfl_sync(0xffffffffu, valid_bits, 0);
        online_softmax<Element>(scores, probs, stats, rescale, p.scale_log2,
                                TokenBitMask{valid_bits}, lane);

        if (tile > tiles.first) named_barrier_sync(kSparseProbsFree, kConsumers);
        store_probs_sw128(smem.p, probs, warp_in_wg, lane);
        if (lane % 4 == 0) {
          smem.row_scale[16 * warp_in_wg + lane / 4] = rescale[0];
          smem.row_scale[16 * warp_in_wg + lane / 4 + 8] = rescale[1];
        }
        fence_view_async_shared();
        // This warpgroup's P V enters the tensor pipe before warpgroup 1's (-1%, perf-notes).
        issue_pv_from_registers<true, Traits::kColsWg0>(acc, probs, rescale,
                                                        desc_advance(v_desc, stage * kStageBytes));
        named_barrier_sync(kSparseProbsReady, kConsumers);
        finish_pv(acc);
        if (lane == 0) release_stage(stage);
      }
      // Its last arrival on the peer's barriers is made: the end-of-kernel cluster barrier
      // need not wait for the output stores below.
      if (Traits::kCrossover && batch == range.end_batch) cluster_arrive();
      // (With the crossover the producer allows it: here it made ptxas spill in that kernel.)
      if (!Traits::kCrossover && batch == range.end_batch && thread_in_wg == 0) {
        allow_dependent_launch();
      }

      float inv_sum[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float lse;
        // The sink joins the output's denominator only where this CTA writes the final
        // output; split results are combined first and the combine kernel applies it.
        finalize_row<true>(stats, i, inv_sum[i], lse,
                           target.single_split ? sink_log2[i] : -INFINITY);
        const int row = 16 * warp_in_wg + lane / 4 + 8 * i;
        if (lane % 4 == 0) {
          smem.row_inv_sum[row] = inv_sum[i];
          write_row_lse(p, target, row, lse);
        }
      }
      named_barrier_sync(kSparseStatsReady, kConsumers);
      // Every S of this sequence is done (each thread of warpgroup 0 waited for its own before
      // the barrier): the next sequence's Q may land while the output is written.
      if (p.q_by_tma && thread == 0 && batch < range.end_batch) {
        issue_sparse_q<Traits>(q_map, smem, batch + 1, s, m_block);
      }
      write_output_cols<Element, Traits::kHeadDimV, Traits::kColsWg0>(p, target, acc, 0, inv_sum,
                                                                      thread_in_wg);
    } else {
      float acc[128], acc_tail[32];  // columns [192, 448) and [448, 512)
#pragma unroll
      for (int i = 0; i < 128; ++i) acc[i] = 0.f;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc_tail[i] = 0.f;
      for (int tile = tiles.first; tile < tiles.last; ++tile, ++tile_index) {
        const int stage = tile_index % Traits::kNumStages;
        named_barrier_sync(kSparseProbsReady, kConsumers);
        float rescale[2];
        load_owned_rows(smem.row_scale, warp_in_wg, lane, rescale);
        accumulate_pv_from_shared<true, Traits::kMaxPvCols>(
            acc, acc_tail, rescale, p_desc, desc_advance(v_desc, stage * kStageBytes),
            desc_advance(v_desc_tail, stage * kStageBytes));
        if (lane == 0) release_stage(stage);
        if (tile + 1 < tiles.last) named_barrier_sync(kSparseProbsFree, kConsumers);
      }
      if (Traits::kCrossover && batch == range.end_batch) cluster_arrive();
      named_barrier_sync(kSparseStatsReady, kConsumers);
      float inv_sum[2];
      load_owned_rows(smem.row_inv_sum, warp_in_wg, lane, inv_sum);
      write_output_cols_wg1<Element, Traits::kHeadDimV>(p, target, acc, acc_tail, inv_sum,
                                                        thread_in_wg);
    }
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    sparse_decode_kernel(const __grid_constant__ SparseDecodeKernelParams p,
                         const __grid_constant__ CUtensorMap q_map) {
  using SharedStorage = typename Traits::SharedStorage;
  extern __shared__ char smem_raw[];
  SharedStorage& smem = aligned_shared_storage<SharedStorage>(smem_raw);

  const int m_block = blockIdx.x;
  const int s = blockIdx.y;
  const DecodePartRange range = p.parts[blockIdx.z];
  if (range.begin_batch > range.end_batch) return;  // empty part: uniform over the CTA

  const int thread = threadIdx.x;
  const int warpgroup = thread / 128;
  init_stage_barriers<Traits>(smem, thread);
  if (thread == 0) {
    mbarrier_init(&smem.q_barrier, 1);
    fence_barrier_init();
    if (p.q_by_tma) prefetch_tma_descriptor(&q_map);
  }
  __syncthreads();
  // With the crossover the peer arrives on these barriers and writes into this CTA's shared
  // memory: both CTAs' barriers must be initialised first, and neither may exit while the
  // other can still reach it. Two phases of the cluster barrier, each split: every thread
  // arrives here and waits just before its first access to the peer (producer: its first
  // stores; consumers: their first stage release), then arrives after its last such access
  // and waits at the end. Stamped at sparse b 2, the whole barrier at each end cost ~1 us
  // (the end one behind the output stores).
  if constexpr (Traits::kCrossover) cluster_arrive();

  if (warpgroup >= Traits::kProducerWarpgroup) {
    warpgroup_registers_decrease<Traits::kRegistersProducer>();
    // With the crossover the CTA's rank is its round; otherwise the producer gathers both.
    const int first_round = Traits::kCrossover ? int(cluster_cta_rank()) : 0;
    const int half =  // the producer's share of the round
        Traits::kProducersPerRound == 1 ? 0 : warpgroup - Traits::kProducerWarpgroup;
    sparse_decode_producer<Traits>(p, range, s, smem, thread % 128, first_round, half);
    // Its last tile is gathered: the consumers' last tile and epilogue remain. (In the kernel
    // without the crossover warpgroup 0 allows it: here it made ptxas spill in that one.)
    if (Traits::kCrossover && thread == 128 * Traits::kProducerWarpgroup) allow_dependent_launch();
  } else if (warpgroup == 0) {
    warpgroup_registers_increase<Traits::kRegistersWg0>();
    sparse_decode_consumer<Traits, 0>(p, &q_map, range, m_block, s, smem, thread);
  } else {
    warpgroup_registers_increase<Traits::kRegistersWg1>();
    sparse_decode_consumer<Traits, 1>(p, &q_map, range, m_block, s, smem, thread);
  }
  if constexpr (Traits::kCrossover) cluster_wait();
}

}  // namespace flashmla::sm90
