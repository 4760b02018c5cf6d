// The sparse-decode producer: one warpgroup that gathers a tile's selected cache rows,
// dequantizes them to bf16 and stores them into a shared-memory stage in the SW128 layout
// wgmma reads. Shared by the 64-head kernel (kernel.cuh: one producer, both 32-token rounds of
// a tile, or with the crossover the round of its CTA, also stored into the peer CTA; the V3.2
// crossover has two producers, half the round each) and the few-heads kernel
// (few_heads_kernel.cuh: two producers, one round each, or at h_q 16 four, half a round each).
//
// What a kernel's Traits provide: kFormat, kHeadDimQK, kCrossover, kProducerRounds (rounds one
// producer gathers per tile), kProducersPerRound (1, or 2 producers sharing each round, one
// octet token a thread), kNumStages, kBoxBytes, kTileBytes, kPeerBytesPerTile (crossover),
// kUnsignedIndexCheck (token_gather.cuh, locate_token), and a SharedStorage with
// k[stage][box][...], token_valid[stage][2][4 * kProducersPerRound] and the barriers
// full_barrier (one arrival per producer thread), empty_barrier and, with the crossover,
// peer_full_barrier.
#pragma once

#include <cstdint>
#include <type_traits>

#include "flashmla/decode_schedule.h"
#include "flashmla/kv_cache_format.h"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/sm90/sparse_decode/kernel_params.h"
#include "kernels/sm90/sparse_decode/token_gather.cuh"
#include "kernels/sm90/sparse_decode/work_range.cuh"

namespace flashmla::sm90 {

// Thread 0 initialises the stage barriers: full = one arrival per producer thread, empty = one
// per consumer warp (of both CTAs with the crossover), peer_full = the crossover's own arrival
// (plus the peer's bytes). The caller synchronises before any use.
template <class Traits>
__device__ __forceinline__ void init_stage_barriers(typename Traits::SharedStorage& smem,
                                                    int thread) {
  if (thread != 0) return;
  for (int stage = 0; stage < Traits::kNumStages; ++stage) {
    mbarrier_init(&smem.full_barrier[stage], Traits::kNumProducerThreads);
    mbarrier_init(&smem.empty_barrier[stage],
                  Traits::kClusterSize * Traits::kNumConsumerThreads / 32);
    if constexpr (Traits::kCrossover) mbarrier_init(&smem.peer_full_barrier[stage], 1);
  }
  fence_barrier_init();
}

// The gather mapping a kernel's producer uses (token_gather.cuh): token octets for fp8 rows
// gathered one round a producer (the crossover, whose stores also go to the peer: -7 to -10%;
// the few-heads kernel's two producers: -1 to -2.5%), token quads otherwise (the 64-head
// kernel's single producer gathers two rounds: with octets ptxas spills there, +20% on V3.2
// h_q 64; bf16 rows: no dequantization, no crossover). Measured: docs/perf-notes.md.
template <class Traits>
using ProducerGather =
    std::conditional_t<Traits::kProducerRounds == 1 && Traits::kFormat != KVCacheFormat::kBFloat16,
                       TokenOctets<Traits::kFormat, 2 / Traits::kProducersPerRound>,
                       TokenQuarter<Traits::kFormat, Traits::kHeadDimQK>>;

// The cache indices of the tokens one producer thread gathers for a tile: kTokens (the
// mapping's tokens a thread) for each of the kRounds rounds it gathers, index[r][k].
template <int kRounds, int kTokens>
struct TileIndices {
  int32_t index[kRounds][kTokens];
  bool from_main;  // main or extra list
};

// round_token[k]: the thread's k-th token within a round, counted from the tile's first round
// this producer gathers (first_round * 32 + Gather::token_in_round).
template <int kRounds, int kTokens>
__device__ __forceinline__ TileIndices<kRounds, kTokens> load_tile_indices(
    const SparseDecodeKernelParams& p, const SparseTileCursor& cursor, int s,
    const int (&round_token)[kTokens]) {
  TileIndices<kRounds, kTokens> result;
  result.from_main = cursor.tile < cursor.tiles.main_tiles;
  const SparseTokenList& list = result.from_main ? p.main : p.extra;
  const int len = result.from_main ? cursor.tiles.main_len : cursor.tiles.extra_len;
  const int list_tile = result.from_main ? cursor.tile : cursor.tile - cursor.tiles.main_tiles;
  const int32_t* indices =
      list.indices + cursor.batch * list.indices_batch_stride + s * list.indices_seq_stride;
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) {
      const int position = list_tile * kDecodeTileTokens + r * 32 + round_token[k];
      result.index[r][k] = position < len ? __ldg(indices + position) : -1;
    }
  }
  return result;
}

template <int kRounds, int kTokens>
__device__ __forceinline__ TileIndices<kRounds, kTokens> no_tile_indices() {
  TileIndices<kRounds, kTokens> result;
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) result.index[r][k] = -1;
  }
  result.from_main = true;
  return result;
}

// Brings the rows of a tile's tokens (this thread's part of each) into L2.
template <class Gather, class Traits, int kRounds, int kTokens>
__device__ __forceinline__ void prefetch_tile_rows(const SparseDecodeKernelParams& p,
                                                   const TileIndices<kRounds, kTokens>& tile,
                                                   int part) {
  const SparseTokenList& list = tile.from_main ? p.main : p.extra;
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) {
      Gather::prefetch(
          locate_token<Traits::kFormat, Traits::kUnsignedIndexCheck>(list, tile.index[r][k]), part);
    }
  }
}

// A producer warpgroup: for every tile of the part, gathers its selected rows (with the
// kernel's ProducerGather mapping; Traits::kProducerRounds rounds of 32 tokens starting at
// round `first_round`: both rounds, or with the crossover the round of this CTA, whose rows it
// also sends to the peer CTA, or in the few-heads kernel the round of this producer; with two
// producers a round, `half` says which half of its tokens this one takes), waits
// for the stage to be free (in both CTAs), stores them dequantized, publishes which tokens are
// valid and arrives on the stage's full barrier. The row loads are issued before the wait for a
// free stage, the next tile's indices are loaded while this tile's rows are in flight, and the
// rows gathered next (the second round, or with the crossover the next tile) are prefetched
// into L2 while the current ones are stored. (Measured and reverted: prefetching the next
// tile's rows into L2, and holding them in registers while storing this tile, with and
// without the crossover: docs/perf-notes.md.)
template <class Traits>
__device__ __forceinline__ void sparse_decode_producer(const SparseDecodeKernelParams& p,
                                                       const DecodePartRange& range, int s,
                                                       typename Traits::SharedStorage& smem,
                                                       int thread_in_wg, int first_round,
                                                       int half = 0) {
  using Gather = ProducerGather<Traits>;
  using Slot = typename Gather::Slot;
  constexpr KVCacheFormat kFormat = Traits::kFormat;
  constexpr bool kCrossover = Traits::kCrossover;
  constexpr int kRounds = Traits::kProducerRounds;  // rounds this producer gathers
  constexpr int kTokens = Gather::kTokens;          // tokens a thread takes per round
  static_assert(kRounds == 1 || kRounds == 2);
  static_assert(!kCrossover || kRounds == 1);
  // With two producers a round each takes its half of the round's tokens (octets, one a thread).
  constexpr int kHalves = Traits::kProducersPerRound;
  static_assert(kHalves == 1 || (kHalves == 2 && kRounds == 1 && kTokens == 1));
  // Both rounds' loads in flight at once only when their registers fit easily (never for the
  // FP8 and BF16 quarters today: with both FP8 rounds in flight ptxas spills and the h_q 64
  // rows took 16% longer, measured side by side, docs/perf-notes.md).
  constexpr bool kOverlapRounds = kRounds * sizeof(Gather) <= 192;
  // Rows a tile ahead in registers (below) for octets, except the V3.2 crossover: measured
  // -4 to -8% on the few-heads kernels and -2 to -3% on the MODEL1 crossover, but +7% on the
  // V3.2 crossover, which keeps its loads after the stores (docs/perf-notes.md). Quads hold
  // two rounds or bf16 quarters: too many registers for a second tile.
  constexpr bool kPipelinedRows = kRounds == 1 && kFormat != KVCacheFormat::kBFloat16 &&
                                  !(kCrossover && kFormat == KVCacheFormat::kFp8V32);
  const int warp = thread_in_wg / 32, lane = thread_in_wg % 32;
  const int part = Gather::part(lane);
  int round_token[kTokens];  // the thread's tokens within its first round
  Slot slots[kRounds][kTokens];
#pragma unroll
  for (int k = 0; k < kTokens; ++k) {
    round_token[k] = first_round * 32 + Gather::token_in_round(warp, lane, k + half * kTokens);
  }
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) slots[r][k] = Gather::slot(r * 32 + round_token[k], part);
  }

  // The peer's stage 0, barriers and validity words (crossover).
  uint32_t peer_k = 0, peer_full = 0, peer_valid = 0;
  if constexpr (kCrossover) {
    const uint32_t peer = uint32_t(first_round) ^ 1;  // the CTA's rank is its round
    peer_k = peer_shared_address(smem_addr(smem.k[0][0]), peer);
    peer_full = peer_shared_address(smem_addr(&smem.peer_full_barrier[0]), peer);
    peer_valid = peer_shared_address(smem_addr(&smem.token_valid[0][0][0]), peer);
  }

  using Indices = TileIndices<kRounds, kTokens>;
  SparseTileCursor current, next;
  current.start(p, range);
  next = current;
  next.advance(p, range);

  // With the crossover the kernel's cluster barrier is split around the peer accesses: the
  // first phase (the peer's barriers initialised) is waited for just before the first store
  // into the peer's stage, so that it overlaps the first loads; the second is arrived at after
  // the last one (leave_cluster, at each return).
  bool peer_ready = false;
  const auto leave_cluster = [&] {
    if constexpr (kCrossover) {
      if (!peer_ready) cluster_wait();  // a part without tiles
      cluster_arrive();
    }
  };
  const auto wait_stage_free = [&](int stage, uint32_t phase) {
    if constexpr (kCrossover) {
      if (!peer_ready) {
        cluster_wait();
        peer_ready = true;
      }
      // Both CTAs' consumers left the stage (they arrive on each other's barriers); then
      // this CTA expects the peer's bytes for it. A CTA-scope wait: an acquire at cluster
      // scope compiles to CCTL.IVALL, invalidating the L1 lines the gathers allocate.
      mbarrier_wait(&smem.empty_barrier[stage], phase ^ 1);
      if (thread_in_wg == 0 && half == 0) {
        mbarrier_arrive_expect_tx(&smem.peer_full_barrier[stage], Traits::kPeerBytesPerTile);
      }
    } else {
      mbarrier_wait(&smem.empty_barrier[stage], phase ^ 1);
    }
  };
  const auto publish_valid = [&](int stage, int round, const bool(&valid)[kTokens],
                                 uint32_t peer_barrier) {
    const uint32_t word = Gather::valid_word(valid, half * kTokens);  // warp-collective
    if (lane == 0) {
      smem.token_valid[stage][round][4 * half + warp] = word;
      if constexpr (kCrossover) {
        const uint32_t offset = uint32_t(((stage * 2 + round) * 4 * kHalves + 4 * half + warp) * 4);
        store_async_peer(peer_valid + offset, word, peer_barrier);
      }
    }
  };

  if constexpr (kPipelinedRows) {
    // One round of octets a producer: the next tile's rows are loaded into the registers of
    // each token as soon as that token's current rows are stored, so a tile's loads are in
    // flight while the producer finishes the tile, waits for the next free stage and stores,
    // instead of being issued at the start of the tile and waited for there. Its indices are
    // loaded a tile before that, and its rows brought into L2 when they arrive.
    const auto locate = [&](const Indices& indices, int k) {
      return locate_token<kFormat, Traits::kUnsignedIndexCheck>(
          indices.from_main ? p.main : p.extra, indices.index[0][k]);
    };
    Gather data;
    bool valid[kTokens];
    {
      const Indices first = current.valid(range)
                                ? load_tile_indices<kRounds, kTokens>(p, current, s, round_token)
                                : no_tile_indices<kRounds, kTokens>();
#pragma unroll
      for (int k = 0; k < kTokens; ++k) {
        const TokenLocation loc = locate(first, k);
        valid[k] = loc.valid;
        data.load_token(k, loc, part);
      }
    }
    Indices next_indices = no_tile_indices<kRounds, kTokens>();
    if (next.valid(range))
      next_indices = load_tile_indices<kRounds, kTokens>(p, next, s, round_token);
    prefetch_tile_rows<Gather, Traits>(p, next_indices, part);
    // Only whether a current tile exists is needed from here on (fewer live registers).
    for (int tile_index = 0, more = current.valid(range); more; ++tile_index) {
      const int stage = tile_index % Traits::kNumStages;
      const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
      TokenLocation next_location[kTokens];
#pragma unroll
      for (int k = 0; k < kTokens; ++k) next_location[k] = locate(next_indices, k);
      SparseTileCursor after = next;
      after.advance(p, range);
      Indices after_indices = no_tile_indices<kRounds, kTokens>();
      if (after.valid(range)) {
        after_indices = load_tile_indices<kRounds, kTokens>(p, after, s, round_token);
      }
      const StageWriter<kCrossover> writer{reinterpret_cast<char*>(smem.k[stage]),
                                           peer_k + uint32_t(stage) * Traits::kTileBytes,
                                           peer_full + uint32_t(stage) * 8};
      wait_stage_free(stage, phase);
#pragma unroll
      for (int k = 0; k < kTokens; ++k) {
        data.template store_token<Traits::kBoxBytes>(k, writer, slots[0][k]);
        data.load_token(k, next_location[k], part);
      }
      publish_valid(stage, first_round, valid, writer.peer_barrier);
      fence_view_async_shared();  // the stores are read by wgmma (async proxy)
      mbarrier_arrive(&smem.full_barrier[stage]);
      // The rows loaded during the next tile's stores go to L2 now.
      prefetch_tile_rows<Gather, Traits>(p, after_indices, part);
#pragma unroll
      for (int k = 0; k < kTokens; ++k) valid[k] = next_location[k].valid;
      more = next.valid(range);
      next = after;
      next_indices = after_indices;
    }
    leave_cluster();
    return;
  }

  Indices current_indices = no_tile_indices<kRounds, kTokens>();
  if (current.valid(range)) {
    current_indices = load_tile_indices<kRounds, kTokens>(p, current, s, round_token);
  }
  // FP8 with one round a producer (here the V3.2 crossover): indices two tiles ahead, so that
  // the next tile's rows go to L2 a whole tile before they are loaded (-3-6% on the V3.2
  // crossover rows: docs/perf-notes.md).
  constexpr bool kTwoAhead = kRounds == 1 && kFormat != KVCacheFormat::kBFloat16;
  Indices next_carried = no_tile_indices<kRounds, kTokens>();
  if (kTwoAhead && next.valid(range)) {
    next_carried = load_tile_indices<kRounds, kTokens>(p, next, s, round_token);
  }

  for (int tile_index = 0; current.valid(range); ++tile_index) {
    const int stage = tile_index % Traits::kNumStages;
    const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
    const SparseTokenList& list = current_indices.from_main ? p.main : p.extra;
    TokenLocation location[kRounds][kTokens];
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
#pragma unroll
      for (int k = 0; k < kTokens; ++k) {
        location[r][k] =
            locate_token<kFormat, Traits::kUnsignedIndexCheck>(list, current_indices.index[r][k]);
      }
    }
    Gather data[kOverlapRounds ? kRounds : 1];
    if constexpr (kOverlapRounds) {
#pragma unroll
      for (int r = 0; r < kRounds; ++r) data[r].load(location[r], part);
    }
    Indices next_indices = no_tile_indices<kRounds, kTokens>();
    if constexpr (kTwoAhead) {
      prefetch_tile_rows<Gather, Traits>(p, next_carried, part);
      SparseTileCursor after = next;
      after.advance(p, range);
      if (after.valid(range)) {
        next_indices = load_tile_indices<kRounds, kTokens>(p, after, s, round_token);
      }
    } else {
      if (next.valid(range)) {
        next_indices = load_tile_indices<kRounds, kTokens>(p, next, s, round_token);
      }
    }

    const StageWriter<kCrossover> writer{reinterpret_cast<char*>(smem.k[stage]),
                                         peer_k + uint32_t(stage) * Traits::kTileBytes,
                                         peer_full + uint32_t(stage) * 8};
    if constexpr (kOverlapRounds) {
      wait_stage_free(stage, phase);
#pragma unroll
      for (int r = 0; r < kRounds; ++r) {
        // Round 0's loads have landed: the next tile's rows go to L2.
        if (r == 0 && !kTwoAhead) prefetch_tile_rows<Gather, Traits>(p, next_indices, part);
        data[r].template store<Traits::kBoxBytes>(writer, slots[r]);
      }
    } else {
#pragma unroll
      for (int r = 0; r < kRounds; ++r) {
        data[0].load(location[r], part);
        // The next round's rows go to L2 while this one is stored, so its loads do not pay a
        // second DRAM latency in the tile.
        if (r + 1 < kRounds) {
#pragma unroll
          for (int k = 0; k < kTokens; ++k) Gather::prefetch(location[r + 1][k], part);
        }
        if (r == 0) wait_stage_free(stage, phase);
        data[0].template store<Traits::kBoxBytes>(writer, slots[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      bool valid[kTokens];
#pragma unroll
      for (int k = 0; k < kTokens; ++k) valid[k] = location[r][k].valid;
      publish_valid(stage, first_round + r, valid, writer.peer_barrier);
    }
    fence_view_async_shared();  // the stores are read by wgmma (async proxy)
    mbarrier_arrive(&smem.full_barrier[stage]);

    current = next;
    next.advance(p, range);
    if constexpr (kTwoAhead) {
      current_indices = next_carried;
      next_carried = next_indices;
    } else {
      current_indices = next_indices;
    }
  }
  leave_cluster();
}

}  // namespace flashmla::sm90
