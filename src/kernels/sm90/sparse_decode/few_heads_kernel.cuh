// The Hopper sparse-decode kernel for few query heads (h_q <= 32): swapped products, one
// consumer warpgroup and two producers. Shapes, roles and layout: few_heads_traits.h.
//
// Accumulator layout of a 64xN wgmma tile for thread t (warp w, lane l): register 4j + 2i + c
// holds row 16w + l/4 + 8i, column 8j + 2(l%4) + c. Here rows are tokens (S^T) or output
// columns (O^T) and columns are heads, so each thread owns kHeads / 4 heads, the same in S^T and
// O^T, and a head's softmax statistics span all 128 threads: per tile, each warp reduces its 16
// tokens by shuffles and the four warps' maxima meet in shared memory.
#pragma once

#include <cmath>
#include <cstdint>

#include "flashmla/decode_schedule.h"
#include "kernels/common/sm90_decode_epilogue.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_load_rows.cuh"
#include "kernels/common/sm90_online_softmax.cuh"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/sm90/sparse_decode/kernel_params.h"
#include "kernels/sm90/sparse_decode/producer.cuh"
#include "kernels/sm90/sparse_decode/work_range.cuh"

namespace flashmla::sm90 {

// Named barriers of the consumer warpgroup (id 0 is __syncthreads).
enum FewHeadsBarrier : uint32_t {
  kFewHeadsMaxReady = 1,    // the 4 warps' maxima of the tile are in shared memory
  kFewHeadsProbsReady = 2,  // P^T of the tile is in shared memory
  kFewHeadsSumsReady = 3,   // the 4 warps' sums of the sequence are in shared memory
  kFewHeadsQReady = 4,      // the sequence's Q is in shared memory
};

// Maximum / sum over the 8 lanes that share l % 4: a head's 16 accumulator rows in a warp.
__device__ __forceinline__ float rows_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 8));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 16));
}
__device__ __forceinline__ float rows_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 4);
  x += __shfl_xor_sync(0xffffffffu, x, 8);
  return x + __shfl_xor_sync(0xffffffffu, x, 16);
}

// Writes O^T (the thread's kHeads / 4 heads x 64 of the 512 columns) normalised: straight to
// `out` for a single split, else to the fp32 workspace. Lanes l and l ^ 4 hold neighbouring
// columns of the same heads; one exchange gives each a pair of one head (lanes with even l/4
// take head column c = 0, odd ones c = 1), written as one 4- or 8-byte store.
template <class Element, int kHeads>
__device__ __forceinline__ void write_output_transposed(const SparseDecodeKernelParams& p,
                                                        const EpilogueTarget& target,
                                                        const float (&acc)[8][kHeads / 2],
                                                        const float (&inv_sum)[kHeads / 4],
                                                        int warp, int lane) {
  const int odd = (lane >> 2) & 1;
#pragma unroll
  for (int j = 0; j < kHeads / 8; ++j) {
    const int head = 8 * j + 2 * (lane % 4) + odd;
    const bool write = head < target.num_rows;
    const int row = target.row_base + head;
    Element* out = nullptr;
    float* accum = nullptr;
    if (target.single_split) {
      out = static_cast<Element*>(p.out) + target.batch * p.out_batch_stride +
            (row / p.heads_per_kv) * p.out_seq_stride + (row % p.heads_per_kv) * p.out_head_stride;
    } else {
      accum = p.o_accum + (int64_t(target.split_slot) * p.rows_per_kv + row) * 512;
    }
#pragma unroll
    for (int box = 0; box < 8; ++box) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float mine0 = acc[box][4 * j + 2 * i] * inv_sum[2 * j];
        const float mine1 = acc[box][4 * j + 2 * i + 1] * inv_sum[2 * j + 1];
        // Even lanes send their head-1 value and keep head 0; odd lanes the other way round.
        const float got = __shfl_xor_sync(0xffffffffu, odd ? mine0 : mine1, 4);
        const float lo = odd ? got : mine0;  // column col, col + 1 of `head`
        const float hi = odd ? mine1 : got;
        const int col = 64 * box + 16 * warp + 8 * i + ((lane >> 2) & ~1);
        if (!write) continue;
        if (target.single_split) {
          *reinterpret_cast<uint32_t*>(out + col) = pack_pair<Element>(lo, hi);
        } else {
          *reinterpret_cast<float2*>(accum + col) = make_float2(lo, hi);
        }
      }
    }
  }
}

// Warpgroup 0: per tile, S^T = K Q^T, the online softmax per head, P^T to shared memory and
// O^T += V^T P^T; per sequence, Q in and the normalised output out.
template <class Traits>
__device__ __forceinline__ void few_heads_consumer(const SparseDecodeKernelParams& p,
                                                   const DecodePartRange& range, int s,
                                                   typename Traits::SharedStorage& smem,
                                                   int thread) {
  using cute::SM90::GMMA::Major;
  using Element = typename Traits::Element;
  constexpr int N = Traits::kHeads;
  constexpr int kOwned = N / 4;  // heads a thread owns: 8j + 2(l%4) + c, index 2j + c
  const int warp = thread / 32, lane = thread % 32;

  // S^T: A = the stage's K (rows = tokens), B = Q (rows = heads), both K-major SW128 boxes.
  const uint64_t k_desc = make_sw128_desc(smem.k[0][0], 16, 1024);
  const uint64_t q_desc = make_sw128_desc(smem.q[0], 16, 1024);
  // O^T: A = V^T, the stage's first 8 boxes read MN-major (64 columns of a box = M, tokens = K;
  // 8-token groups 1024 bytes apart); B = P^T (rows = heads, K-major).
  const uint64_t v_desc = make_sw128_desc(smem.k[0][0], Traits::kBoxBytes, 1024);
  const uint64_t p_desc = make_sw128_desc(smem.p[0], 16, 1024);

  float sink_log2[kOwned];
#pragma unroll
  for (int h = 0; h < kOwned; ++h) {
    const int head = 8 * (h / 2) + 2 * (lane % 4) + h % 2;
    sink_log2[h] = p.attn_sink != nullptr && head < p.num_heads_q
                       ? p.attn_sink[head] * 1.4426950408889634f
                       : -INFINITY;
  }

  int tile_index = 0;
  for (int batch = range.begin_batch; batch <= range.end_batch; ++batch) {
    const SparseBatchTiles tiles = sparse_batch_tiles(p, range, batch);
    const int splits_before = p.num_splits[batch];
    EpilogueTarget target;
    target.batch = batch;
    target.kv_head = 0;
    target.row_base = s * p.num_heads_q;
    target.num_rows = p.num_heads_q;
    target.single_split = p.num_splits[batch + 1] - splits_before == 1;
    target.split_slot = splits_before + (batch == range.begin_batch ? range.begin_split : 0);

    // Q rows: the heads of query token s (rows past h_q are zeros). The previous sequence's
    // reads of Q (its S^T products) are ordered before this by the sums barrier.
    const auto* q = static_cast<const char*>(p.q);
    const auto q_row = [&](int row) -> const char* {
      if (row >= p.num_heads_q) return nullptr;
      return q + (batch * p.q_batch_stride + s * p.q_seq_stride + row * p.q_head_stride) * 2;
    };
    load_rows_sw128<N, Traits::kHeadDimQK, Traits::kNumConsumerThreads>(smem.q, q_row, thread);
    fence_view_async_shared();
    named_barrier_sync(kFewHeadsQReady, Traits::kNumConsumerThreads);

    float acc[8][N / 2];
#pragma unroll
    for (int box = 0; box < 8; ++box) {
#pragma unroll
      for (int i = 0; i < N / 2; ++i) acc[box][i] = 0.f;
    }
    float running_max[kOwned], running_sum[kOwned];
#pragma unroll
    for (int h = 0; h < kOwned; ++h) {
      running_max[h] = -INFINITY;
      running_sum[h] = 0.f;  // this thread's tokens only; reduced at the end
    }

    for (int tile = tiles.first; tile < tiles.last; ++tile, ++tile_index) {
      const int stage = tile_index % Traits::kNumStages;
      const uint32_t phase = (tile_index / Traits::kNumStages) & 1;
      const int parity = tile_index & 1;
      mbarrier_wait(&smem.full_barrier[stage], phase);

      float st[N / 2];
      wgmma_fence();
#pragma unroll
      for (int box = 0; box < Traits::kNumBoxesQK; ++box) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          gmma_ss<true, Major::K, N>(
              desc_advance(k_desc, stage * Traits::kTileBytes + box * Traits::kBoxBytes + k * 32),
              desc_advance(q_desc, box * Traits::kHeadBoxBytes + k * 32), st, box > 0 || k > 0);
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(st);

      // Token validity: lane 0, the thread that later releases the stage, reads the producers'
      // words (every read then precedes its arrival) and shares them.
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
      const int token0 = 16 * warp + lane / 4;
      const bool valid[2] = {((valid_bits >> token0) & 1) != 0,
                             ((valid_bits >> (token0 + 8)) & 1) != 0};

      // Each warp's maximum per head over its 16 tokens, then over the 4 warps.
      float tile_max[kOwned];
#pragma unroll
      for (int h = 0; h < kOwned; ++h) {
        const int j = h / 2, c = h % 2;
        float m = -INFINITY;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float& x = st[4 * j + 2 * i + c];
          // Select rather than add: an invalid token's row is zeros, but keep it out anyway.
          x = valid[i] ? x : -INFINITY;
          m = fmaxf(m, x);
        }
        tile_max[h] = rows_max(m);
      }
      if (lane < 4) {
#pragma unroll
        for (int h = 0; h < kOwned; ++h) {
          smem.partial_max[parity][8 * (h / 2) + 2 * lane + h % 2][warp] = tile_max[h];
        }
      }
      named_barrier_sync(kFewHeadsMaxReady, Traits::kNumConsumerThreads);

      float rescale[kOwned];
#pragma unroll
      for (int h = 0; h < kOwned; ++h) {
        const int head = 8 * (h / 2) + 2 * (lane % 4) + h % 2;
        const float4 warps = *reinterpret_cast<const float4*>(smem.partial_max[parity][head]);
        const float m = fmaxf(fmaxf(warps.x, warps.y), fmaxf(warps.z, warps.w)) * p.scale_log2;
        const float new_max = fmaxf(running_max[h], m);
        // A head that has seen no valid token keeps max -inf; subtract 0 then so exp2 gives 0.
        const float subtract = new_max == -INFINITY ? 0.f : new_max;
        rescale[h] = fast_exp2(running_max[h] - subtract);
        running_max[h] = new_max;
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float& x = st[4 * (h / 2) + 2 * i + h % 2];
          x = fast_exp2(fmaf(x, p.scale_log2, -subtract));
          sum += x;
        }
        running_sum[h] = running_sum[h] * rescale[h] + sum;
      }

      // P^T (row = head, 64 tokens of 2 bytes) into this tile's box.
      char* p_bytes = reinterpret_cast<char*>(smem.p[parity]);
#pragma unroll
      for (int h = 0; h < kOwned; ++h) {
        const int head = 8 * (h / 2) + 2 * (lane % 4) + h % 2;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int token = token0 + 8 * i;
          *reinterpret_cast<Element*>(p_bytes + sw128_offset(head, token / 8) + (token % 8) * 2) =
              Element(st[4 * (h / 2) + 2 * i + h % 2]);
        }
      }
      fence_view_async_shared();
      named_barrier_sync(kFewHeadsProbsReady, Traits::kNumConsumerThreads);

#pragma unroll
      for (int box = 0; box < 8; ++box) {
#pragma unroll
        for (int r = 0; r < N / 2; ++r) acc[box][r] *= rescale[2 * (r / 4) + r % 2];
      }
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k) {
#pragma unroll
        for (int box = 0; box < 8; ++box) {
          gmma_ss<true, Major::K, N, Major::MN>(
              desc_advance(v_desc, stage * Traits::kTileBytes + box * Traits::kBoxBytes + k * 2048),
              desc_advance(p_desc, parity * Traits::kHeadBoxBytes + k * 32), acc[box]);
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int box = 0; box < 8; ++box) fence_registers(acc[box]);
      if (lane == 0) mbarrier_arrive(&smem.empty_barrier[stage]);
    }
    if (batch == range.end_batch && thread == 0) {
      allow_dependent_launch();  // the combine may be scheduled (sm90_ptx.cuh)
    }

    // The heads' sums over all 128 threads, the output scale and the log-sum-exp.
#pragma unroll
    for (int h = 0; h < kOwned; ++h) {
      const float warp_sum = rows_sum(running_sum[h]);
      if (lane < 4) smem.partial_sum[8 * (h / 2) + 2 * lane + h % 2][warp] = warp_sum;
    }
    named_barrier_sync(kFewHeadsSumsReady, Traits::kNumConsumerThreads);
    float inv_sum[kOwned];
#pragma unroll
    for (int h = 0; h < kOwned; ++h) {
      const int head = 8 * (h / 2) + 2 * (lane % 4) + h % 2;
      const float4 warps = *reinterpret_cast<const float4*>(smem.partial_sum[head]);
      const float sum = (warps.x + warps.y) + (warps.z + warps.w);
      // finalize_row's formula (sm90_decode_tile.cuh) over the cross-warp sum. (Through a shared
      // helper ptxas scheduled the h_q 16 kernels differently, not measured: kept written out.)
      const bool empty = running_max[h] == -INFINITY || sum == 0.f;
      // The sink joins the output's denominator only where this CTA writes the final output;
      // split results are combined first and the combine kernel applies it.
      float denominator = sum;
      if (target.single_split) denominator += exp2f(sink_log2[h] - running_max[h]);
      inv_sum[h] = empty ? 0.f : 1.f / denominator;
      const float lse = empty ? -INFINITY : (running_max[h] + log2f(sum)) * 0.69314718055994531f;
      if (warp == 0 && lane < 4) write_row_lse(p, target, head, lse);
    }
    write_output_transposed<Element, N>(p, target, acc, inv_sum, warp, lane);
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    sparse_decode_few_heads_kernel(const __grid_constant__ SparseDecodeKernelParams p,
                                   const __grid_constant__ CUtensorMap /*q_map: unused*/) {
  using SharedStorage = typename Traits::SharedStorage;
  extern __shared__ char smem_raw[];
  SharedStorage& smem = aligned_shared_storage<SharedStorage>(smem_raw);

  const int s = blockIdx.y;
  const DecodePartRange range = p.parts[blockIdx.z];
  if (range.begin_batch > range.end_batch) return;  // empty part: uniform over the CTA

  const int thread = threadIdx.x;
  const int warpgroup = thread / 128;
  init_stage_barriers<Traits>(smem, thread);
  __syncthreads();

  if (warpgroup == 0) {
    warpgroup_registers_set<Traits::kRegistersConsumer, Traits::kLaunchRegisters>();
    few_heads_consumer<Traits>(p, range, s, smem, thread);
  } else {
    warpgroup_registers_set<Traits::kRegistersProducer, Traits::kLaunchRegisters>();
    // Producers 1 (and 2) gather the first 32 tokens of every tile, the others the last 32.
    const int producer = warpgroup - 1;
    sparse_decode_producer<Traits>(p, range, s, smem, thread % 128,
                                   producer / Traits::kProducersPerRound,
                                   producer % Traits::kProducersPerRound);
  }
}

}  // namespace flashmla::sm90
