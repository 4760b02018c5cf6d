// The Hopper sparse-prefill kernel body. Roles, shapes and shared-memory layout: traits.h.
//
// Per pair of 64-token blocks (i: the pair's index, both warpgroups own the same 64 rows):
//   wg0: S0 = Q K0^T; m0 = max(m, rowmax S0); P0 = exp2(S0 - m0); O0 = O0 * e^(m - m0) + P0 V0[:,
//   left] wg1: S1 = Q K1^T; m1 = max(m0, rowmax S1); P1 = exp2(S1 - m1); O1 = O1 * e^(m - m1) + P1
//   V1[:, right]
//        + (P0 e^(m0 - m1)) V0[:, right]
//   wg0: O0 = O0 * e^(m0 - m1) + P1 V1[:, left]; both now hold m = m1.
// Warpgroup 0 hands m0 and its rescaled P0 to warpgroup 1 and gets m1 and P1 back.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/sm90_decode_tile.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_online_softmax.cuh"
#include "kernels/common/sm90_output_columns.cuh"
#include "kernels/common/sm90_ptx.cuh"
#include "kernels/sm90/sparse_prefill/kernel_params.h"
#include "kernels/sm90/sparse_prefill/traits.h"

namespace flashmla::sm90 {

// Named barriers between the two consumer warpgroups (id 0 is __syncthreads).
enum SparsePrefillBarrier : uint32_t {
  kPrefillMax0Ready = 1,  // warpgroup 0 published m0
  kPrefillMax1Ready = 2,  // warpgroup 1 published m1
  kPrefillP0Ready = 3,    // P0 (rescaled to m1) is in shared memory
  kPrefillP1Ready = 4,    // P1 is in shared memory
  kPrefillSumReady = 5,   // both warpgroups' row sums are in shared memory
};

// One work item: a query token, one of its 64-head blocks and how many of its top-k entries count.
struct PrefillQuery {
  int s;
  int head_base;
  int len;        // min(topk, topk_length[s]), >= 0
  int num_pairs;  // pairs of 64-token blocks covering [0, len)
};

__device__ __forceinline__ PrefillQuery prefill_query(const SparsePrefillKernelParams& p,
                                                      int64_t item) {
  PrefillQuery query;
  query.s = int(item / p.num_head_blocks);
  query.head_base = int(item % p.num_head_blocks) * 64;
  int len = p.topk;
  if (p.topk_length != nullptr) len = min(len, max(__ldg(p.topk_length + query.s), 0));
  query.len = len;
  query.num_pairs = (len + 127) / 128;
  return query;
}

// Warpgroup 2. Thread (group g = t / 8, chunk c = t % 8) copies 16-byte chunk c of every 128-byte
// box row of rows g, g + 16, g + 32, g + 48 of each tile. Per item: Q's rows once the previous
// item's last scores freed them, then per pair the four K halves in the order the consumers
// read them (buffer 0 left, buffer 1 right, buffer 0 right, buffer 1 left), each after its last
// reader freed it, then the pair's token validity. `pair_count` (pairs of earlier items) keeps
// the barrier phases running across items.
template <class Traits>
__device__ __forceinline__ void sparse_prefill_producer_item(const SparsePrefillKernelParams& p,
                                                             const PrefillQuery& query,
                                                             typename Traits::SharedStorage& smem,
                                                             int thread_in_wg, int local_item,
                                                             uint32_t pair_count) {
  constexpr int kBoxesQK = Traits::kNumBoxesQK;
  const int group = thread_in_wg / 8;
  const int chunk = thread_in_wg % 8;

  const int32_t* indices = p.indices + int64_t(query.s) * p.indices_seq_stride;
  // The indices of a pair's 8 rows of this thread (-1 past len).
  const auto load_indices = [&](int pair, int(&index)[2][4]) {
#pragma unroll
    for (int b = 0; b < 2; ++b) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int position = (2 * pair + b) * Traits::kBlockN + 16 * r + group;
        index[b][r] = position < query.len ? __ldg(indices + position) : -1;
      }
    }
  };
  // The first pair's indices load while the previous item's last pairs are still in use.
  int next_index[2][4];
  if (query.num_pairs > 0) load_indices(0, next_index);

  if (local_item > 0) mbarrier_wait(&smem.q_free, (local_item - 1) & 1);
  {
    const __nv_bfloat16* q = p.q + int64_t(query.s) * p.q_seq_stride + chunk * 8;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = 16 * r + group;
      const int head = query.head_base + row;
      const bool valid = head < p.num_heads_q;  // padding heads are zeros
      const __nv_bfloat16* source = valid ? q + int64_t(head) * p.q_head_stride : p.q;
#pragma unroll
      for (int box = 0; box < kBoxesQK; ++box) {
        cp_async_16_or_zero<L2Policy::kEvictFirst>(
            smem_addr(smem.q[box]) + sw128_offset(row, chunk), source + box * 64, valid);
      }
    }
    cp_async_arrive_noinc(&smem.q_ready);
  }

  for (int pair = 0; pair < query.num_pairs; ++pair) {
    const uint32_t phase = (pair_count + pair) & 1;
    const __nv_bfloat16* rows[2][4];
    bool valid[2][4];
#pragma unroll
    for (int b = 0; b < 2; ++b) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int index = next_index[b][r];
        valid[b][r] = index >= 0 && index < p.num_kv_tokens;
        rows[b][r] = p.kv + (valid[b][r] ? int64_t(index) * p.kv_token_stride : 0) + chunk * 8;
      }
    }
    // The next pair's indices load while this pair's rows are copied.
    if (pair + 1 < query.num_pairs) load_indices(pair + 1, next_index);
    const auto copy_half = [&](int b, int half) {
      const int box_begin = half == 0 ? 0 : Traits::kBoxesPerHalfV;
      const int box_end = half == 0 ? Traits::kBoxesPerHalfV : kBoxesQK;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int box = box_begin; box < box_end; ++box) {
          cp_async_16_or_zero<L2Policy::kEvictLast>(
              smem_addr(smem.k[b][box]) + sw128_offset(16 * r + group, chunk),
              rows[b][r] + box * 64, valid[b][r]);
        }
      }
      cp_async_arrive_noinc(&smem.k_ready[b][half]);
    };
    mbarrier_wait(&smem.k_free[0][0], phase ^ 1);
    copy_half(0, 0);
    mbarrier_wait(&smem.k_free[1][1], phase ^ 1);
    copy_half(1, 1);
    mbarrier_wait(&smem.k_free[0][1], phase ^ 1);
    copy_half(0, 1);
    mbarrier_wait(&smem.k_free[1][0], phase ^ 1);
    copy_half(1, 0);
    // Slot `phase` was last read for pair - 2, long before the waits above let us through.
    if (chunk == 0) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
#pragma unroll
        for (int r = 0; r < 4; ++r) smem.token_valid[phase][b][16 * r + group] = valid[b][r];
      }
    }
    mbarrier_arrive(&smem.valid_ready);
  }
}

// S (64x64) += Q K^T over boxes [box_begin, box_end) of K buffer k_desc (not committed).
// S's earlier values are pinned and fenced first: S lives across pairs, and without this the
// compiler sinks the last writes to it past the fence and injects a wgmma fence of its own.
template <int kBoxBytes>
__device__ __forceinline__ void issue_scores(uint64_t q_desc, uint64_t k_desc, float (&s)[32],
                                             int box_begin, int box_end, bool clear) {
  fence_registers(s);
  wgmma_fence();
#pragma unroll
  for (int box = box_begin; box < box_end; ++box) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t offset = box * kBoxBytes + k * 32;
      gmma_ss<true, cute::SM90::GMMA::Major::K, 64>(desc_advance(q_desc, offset),
                                                    desc_advance(k_desc, offset), s,
                                                    !(clear && box == box_begin && k == 0));
    }
  }
}

// Waits for a K half the producer filled with cp.async (generic proxy) before wgmma reads it.
// (FlashMLA omits the proxy fence; the memory model asks for it, and it cost nothing
// measurable here: docs/perf-notes.md.)
__device__ __forceinline__ void wait_k_half(uint64_t* ready, uint32_t phase) {
  mbarrier_wait(ready, phase);
  fence_view_async_shared();
}

// exp2(from - to) for the running max moving from `from` to `to` (>= from); 1 while both are
// still -inf (no valid token yet), so no inf - inf appears.
__device__ __forceinline__ float max_shift(float from, float to) {
  return to == -INFINITY ? 1.f : fast_exp2(from - to);
}

// Warpgroups 0 and 1 (kWarpgroup); see the top of the file for the arithmetic.
// One item; `local_item` and `pair_count` as for the producer.
template <class Traits, int kWarpgroup>
__device__ __forceinline__ void sparse_prefill_consumer_item(const SparsePrefillKernelParams& p,
                                                             const PrefillQuery& query,
                                                             typename Traits::SharedStorage& smem,
                                                             int thread_in_wg, int local_item,
                                                             uint32_t pair_count) {
  using Element = typename Traits::Element;
  using cute::SM90::GMMA::Major;
  constexpr int kBoxBytes = Traits::kBoxBytes;
  constexpr int kBoxesQK = Traits::kNumBoxesQK;
  constexpr int kHalf = Traits::kBoxesPerHalfV;
  constexpr int kOwn = kWarpgroup;  // the K buffer whose scores this warpgroup computes
  const int warp = thread_in_wg / 32, lane = thread_in_wg % 32;

  Element* p0_box = Traits::kP0InRopeBox ? smem.k[0][kBoxesQK - 1] : smem.p0;
  Element* own_p = kWarpgroup == 0 ? p0_box : smem.p1;
  const uint64_t other_p_desc = make_sw128_desc(kWarpgroup == 0 ? smem.p1 : p0_box, 16, 1024);
  const uint64_t q_desc = make_sw128_desc(smem.q[0], 16, 1024);
  const uint64_t k_desc = make_sw128_desc(smem.k[kOwn][0], 16, 1024);
  // This warpgroup's V columns (MN-major B operand) in buffer 0 and 1.
  const uint64_t v_desc[2] = {make_sw128_desc(smem.k[0][kWarpgroup * kHalf], kBoxBytes, 1024),
                              make_sw128_desc(smem.k[1][kWarpgroup * kHalf], kBoxBytes, 1024)};

  float acc[Traits::kColsPerWarpgroup / 2];
#pragma unroll
  for (int i = 0; i < Traits::kColsPerWarpgroup / 2; ++i) acc[i] = 0.f;
  float scores[32];
  uint32_t probs[16];
  RowStats stats = {{-INFINITY, -INFINITY}, {0.f, 0.f}};
  const int row0 = 16 * warp + lane / 4;  // owned rows: row0, row0 + 8
  const int num_rows = min(Traits::kBlockM, p.num_heads_q - query.head_base);
  // The sinks of the owned rows, read now: after the loop the load's latency (~0.8 us, stamped)
  // would sit in the epilogue, where the tensor cores wait for the next item.
  float sink_log2[2] = {-INFINITY, -INFINITY};
  if (p.attn_sink != nullptr) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (row0 + 8 * i < num_rows) {
        sink_log2[i] =
            ldg_float_now(p.attn_sink + query.head_base + row0 + 8 * i) * 1.4426950408889634f;
      }
    }
  }

  // S of the own block: warpgroup 0 reads its buffer's halves in the producer's order (left
  // first), warpgroup 1 right first. Warpgroup 0 commits each half separately so that it can
  // start the next pair's left half while its last P V still runs.
  const auto issue_left = [&](uint32_t phase, bool clear) {
    wait_k_half(&smem.k_ready[kOwn][0], phase);
    issue_scores<kBoxBytes>(q_desc, k_desc, scores, 0, kHalf, clear);
  };
  const auto issue_right = [&](uint32_t phase, bool clear) {
    wait_k_half(&smem.k_ready[kOwn][1], phase);
    issue_scores<kBoxBytes>(q_desc, k_desc, scores, kHalf, kBoxesQK, clear);
  };
  const auto rescale = [&](const float(&factor)[2]) {
    rescale_rows(acc, factor);
#pragma unroll
    for (int i = 0; i < 2; ++i) stats.sum[i] *= factor[i];
  };
  const auto issue_pv_from_registers = [&](uint64_t v) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      gmma_rs<true, Major::MN, Traits::kColsPerWarpgroup>(&probs[4 * k], desc_advance(v, k * 2048),
                                                          acc);
    }
  };
  const auto issue_pv_from_shared = [&](uint64_t v) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      gmma_ss<true, Major::MN, Traits::kColsPerWarpgroup>(desc_advance(other_p_desc, k * 32),
                                                          desc_advance(v, k * 2048), acc);
    }
  };

  mbarrier_wait(&smem.q_ready, local_item & 1);
  fence_view_async_shared();

  for (int pair = 0; pair < query.num_pairs; ++pair) {
    const uint32_t phase = (pair_count + pair) & 1;
    if (kWarpgroup == 1 || pair == 0) {
      if constexpr (kWarpgroup == 0) {
        issue_left(phase, true);
        wgmma_commit();
        issue_right(phase, false);
      } else {
        issue_right(phase, true);
        issue_left(phase, false);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(scores);
    }
    // The item's last scores are done (warpgroup 0 computed them one pair ahead): Q's buffer
    // may take the next item's rows.
    if (pair + 1 == query.num_pairs) mbarrier_arrive(&smem.q_free);
    mbarrier_wait(&smem.valid_ready, phase);
    const TokenByteMask mask{smem.token_valid[phase][kOwn]};
    float factor[2];

    if constexpr (kWarpgroup == 0) {
      online_softmax<Element>(scores, probs, stats, factor, p.scale_log2, mask, lane);
      if (lane % 4 == 0) {
        smem.row_max[row0] = stats.max[0];
        smem.row_max[row0 + 8] = stats.max[1];
      }
      named_barrier_arrive(kPrefillMax0Ready, 256);
      rescale_rows(acc, factor);
      wgmma_fence();
      issue_pv_from_registers(v_desc[0]);
      wgmma_commit();
      wgmma_wait<0>();
      fence_registers(acc);
      mbarrier_arrive(&smem.k_free[0][0]);

      // m1 from warpgroup 1: rescale P0 (the fp32 probabilities still in `scores`) for it.
      named_barrier_sync(kPrefillMax1Ready, 256);
      float shift[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float m1 = smem.row_max[row0 + 8 * i];
        shift[i] = max_shift(stats.max[i], m1);
        stats.max[i] = m1;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          probs[2 * j + i] = pack_pair<Element>(scores[4 * j + 2 * i] * shift[i],
                                                scores[4 * j + 2 * i + 1] * shift[i]);
        }
      }
      store_probs_sw128(own_p, probs, warp, lane);
      fence_view_async_shared();
      named_barrier_arrive(kPrefillP0Ready, 256);

      named_barrier_sync(kPrefillP1Ready, 256);
      rescale(shift);
      wgmma_fence();
      issue_pv_from_shared(v_desc[1]);
      wgmma_commit();
      if (pair + 1 < query.num_pairs) {
        // The next pair's scores overlap this P V.
        issue_left(phase ^ 1, true);
        wgmma_commit();
        wgmma_wait<1>();
        fence_registers(acc);
        mbarrier_arrive(&smem.k_free[1][0]);
        issue_right(phase ^ 1, false);
        wgmma_commit();
        wgmma_wait<0>();
        fence_registers(scores);
      } else {
        wgmma_wait<0>();
        fence_registers(acc);
        mbarrier_arrive(&smem.k_free[1][0]);
      }
    } else {
      // Join warpgroup 0's running max m0 (>= this warpgroup's, which is the previous pair's
      // m1) before the softmax, so that its max becomes m1 = max(m0, rowmax S1).
      named_barrier_sync(kPrefillMax0Ready, 256);
      float join[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float m0 = smem.row_max[row0 + 8 * i];
        join[i] = max_shift(stats.max[i], m0);
        stats.sum[i] *= join[i];
        stats.max[i] = m0;
      }
      online_softmax<Element>(scores, probs, stats, factor, p.scale_log2, mask, lane);
      __syncwarp();  // the quad's reads of m0 come before lane 0 overwrites it
      if (lane % 4 == 0) {
        smem.row_max[row0] = stats.max[0];
        smem.row_max[row0 + 8] = stats.max[1];
      }
      named_barrier_arrive(kPrefillMax1Ready, 256);
#pragma unroll
      for (int i = 0; i < 2; ++i) factor[i] *= join[i];
      rescale_rows(acc, factor);
      wgmma_fence();
      issue_pv_from_registers(v_desc[1]);
      wgmma_commit();
      store_probs_sw128(own_p, probs, warp, lane);
      named_barrier_sync(kPrefillP0Ready, 256);
      issue_pv_from_shared(v_desc[0]);
      wgmma_commit();
      fence_view_async_shared();
      named_barrier_arrive(kPrefillP1Ready, 256);
      wgmma_wait<1>();
      mbarrier_arrive(&smem.k_free[1][1]);
      wgmma_wait<0>();
      fence_registers(acc);
      mbarrier_arrive(&smem.k_free[0][1]);
    }
  }

  if (query.num_pairs == 0) mbarrier_arrive(&smem.q_free);

  // Both warpgroups hold the same rows and the same final max; the row sum is the sum of both.
  // (Two slots by item parity: the next item's sums may be written before the other warpgroup
  // read these when that item has no valid token.)
  float(&row_sum)[2][Traits::kBlockM] = smem.row_sum[local_item & 1];
  float total[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    total[i] = quad_sum(stats.sum[i]);
    if (lane % 4 == 0) row_sum[kWarpgroup][row0 + 8 * i] = total[i];
  }
  named_barrier_sync(kPrefillSumReady, 256);
  float inv_sum[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + 8 * i;
    total[i] += row_sum[1 - kWarpgroup][row];
    const int head = query.head_base + row;
    const bool empty = total[i] == 0.f;  // no valid token (a valid one adds at least 1)
    inv_sum[i] = empty ? 0.f : 1.f / (total[i] + exp2f(sink_log2[i] - stats.max[i]));
    if (kWarpgroup == 0 && lane % 4 == 0 && row < num_rows) {
      constexpr float kLn2 = 0.69314718055994531f;
      p.max_logits[int64_t(query.s) * p.max_logits_seq_stride + head] =
          empty ? -INFINITY : stats.max[i] * kLn2;
      p.lse[int64_t(query.s) * p.lse_seq_stride + head] =
          empty ? INFINITY : (stats.max[i] + log2f(total[i])) * kLn2;
    }
  }

  // Straight from registers (no staging): Q's buffer, the only one free after the last scores,
  // already takes the next item's rows.
  const int col0 = kWarpgroup * Traits::kColsPerWarpgroup + 8 * (lane % 4);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + 8 * i;
    Element* out = p.out + int64_t(query.s) * p.out_seq_stride +
                   int64_t(query.head_base + row) * p.out_head_stride + col0;
#pragma unroll
    for (int jj = 0; jj < Traits::kColsPerWarpgroup / 8; jj += 4) {
      const uint4 v = quad_transposed_block<Element>(acc, i, jj, inv_sum[i], lane);
      if (row < num_rows) __stcs(reinterpret_cast<uint4*>(out + 8 * jj), v);
    }
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    sparse_prefill_kernel(const __grid_constant__ SparsePrefillKernelParams p) {
  using SharedStorage = typename Traits::SharedStorage;
  extern __shared__ char smem_raw[];
  SharedStorage& smem = aligned_shared_storage<SharedStorage>(smem_raw);

  const int thread = threadIdx.x;
  const int warpgroup = thread / 128;
  if (thread == 0) {
    mbarrier_init(&smem.q_ready, 128);
    for (int b = 0; b < 2; ++b) {
      for (int half = 0; half < 2; ++half) {
        mbarrier_init(&smem.k_ready[b][half], 128);  // the producer's cp.async arrivals
        mbarrier_init(&smem.k_free[b][half], 128);   // the last reader warpgroup
      }
    }
    mbarrier_init(&smem.valid_ready, 128);
    mbarrier_init(&smem.q_free, 256);  // both consumer warpgroups
    fence_barrier_init();
  }
  __syncthreads();

  // Persistent: items blockIdx.x, + gridDim.x, ... (with an even grid the two head blocks of
  // a token run side by side on neighbouring CTAs and share their gathers through L2). Each
  // role walks the same items; the next item's Q and first pair load while the consumers
  // finish the previous one's last products and write its output.
  const auto for_each_item = [&](auto&& body) {
    int local_item = 0;
    uint32_t pair_count = 0;  // only its parity matters (wraps harmlessly)
    for (int64_t item = blockIdx.x; item < p.num_items; item += gridDim.x, ++local_item) {
      const PrefillQuery query = prefill_query(p, item);
      body(query, local_item, pair_count);
      pair_count += query.num_pairs;
    }
  };
  if (warpgroup == Traits::kProducerWarpgroup) {
    warpgroup_registers_decrease<Traits::kRegistersProducer>();
    for_each_item([&](const PrefillQuery& query, int local_item, uint32_t pair_count) {
      sparse_prefill_producer_item<Traits>(p, query, smem, thread % 128, local_item, pair_count);
    });
  } else if (warpgroup == 0) {
    warpgroup_registers_increase<Traits::kRegistersConsumer>();
    for_each_item([&](const PrefillQuery& query, int local_item, uint32_t pair_count) {
      sparse_prefill_consumer_item<Traits, 0>(p, query, smem, thread % 128, local_item, pair_count);
    });
  } else {
    warpgroup_registers_increase<Traits::kRegistersConsumer>();
    for_each_item([&](const PrefillQuery& query, int local_item, uint32_t pair_count) {
      sparse_prefill_consumer_item<Traits, 1>(p, query, smem, thread % 128, local_item, pair_count);
    });
  }
}

}  // namespace flashmla::sm90
