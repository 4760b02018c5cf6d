// The per-tile steps that the dense and sparse decode kernels share (64 query rows x 64 KV
// tokens, operands in 64-column SW128 boxes): S = Q K^T on the tensor cores, the hand-off of
// the probabilities P through shared memory, and the final row normalisation.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_online_softmax.cuh"

namespace flashmla::sm90 {

// S (64x64, fp32, accumulator layout) = Q K^T over kNumBoxes 64-column boxes of Q and of one
// KV stage, both as K-major SW128 boxes of kBoxBytes. Waits for the result.
template <bool kIsBF16, int kNumBoxes, int kBoxBytes>
__device__ __forceinline__ void compute_scores(uint64_t q_desc, uint64_t k_desc, float (&s)[32]) {
  wgmma_fence();
#pragma unroll
  for (int box = 0; box < kNumBoxes; ++box) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t offset = box * kBoxBytes + k * 32;
      gmma_ss<kIsBF16, cute::SM90::GMMA::Major::K, 64>(
          desc_advance(q_desc, offset), desc_advance(k_desc, offset), s, box > 0 || k > 0);
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_registers(s);
}

// Stores the packed probabilities of online_softmax (two rows per thread) into a 64 x 64
// SW128 box, the A operand of the other warpgroup's P V wgmma.
__device__ __forceinline__ void store_probs_sw128(void* p_box, const uint32_t (&probs)[16],
                                                  int warp_in_wg, int lane) {
  char* p_bytes = static_cast<char*>(p_box);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = 16 * warp_in_wg + lane / 4 + 8 * i;
      *reinterpret_cast<uint32_t*>(p_bytes + sw128_offset(row, j) + (lane % 4) * 4) =
          probs[2 * j + i];
    }
  }
}

// store_probs_sw128 with four stmatrix.x4 instead of 16 4-byte stores: probs[2 j + i] is the
// 8x8 matrix of column chunk j and row half i of the warp's 16 rows, in the layout stmatrix
// takes, and each 16-byte matrix row is one SW128 chunk. (Measured neutral where the store is
// off the critical path; the seesaw kernel stores P between its two warpgroups' hand-offs.)
__device__ __forceinline__ void store_probs_stmatrix_sw128(void* p_box, const uint32_t (&probs)[16],
                                                           int warp_in_wg, int lane) {
  const uint32_t base = smem_addr(p_box);
  const int matrix = lane / 8;  // this lane addresses row lane % 8 of matrix (2 m + matrix / 2,
                                // matrix % 2)
  const int row = 16 * warp_in_wg + 8 * (matrix % 2) + lane % 8;
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    stmatrix_x4(base + sw128_offset(row, 2 * m + matrix / 2), probs[4 * m], probs[4 * m + 1],
                probs[4 * m + 2], probs[4 * m + 3]);
  }
}

// The inverse of store_probs_sw128: a 64 x 64 SW128 box as the register A operand of four
// m64k16 wgmma steps (two rows a thread, the packing of online_softmax's probabilities).
__device__ __forceinline__ void load_a_fragment_sw128(const void* box, uint32_t (&fragment)[16],
                                                      int warp_in_wg, int lane) {
  const char* bytes = static_cast<const char*>(box);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = 16 * warp_in_wg + lane / 4 + 8 * i;
      fragment[2 * j + i] =
          *reinterpret_cast<const uint32_t*>(bytes + sw128_offset(row, j) + (lane % 4) * 4);
    }
  }
}

// Warpgroup 0's share of O = O * rescale + P V: columns [0, kCols) with P from registers (the
// packed probabilities of online_softmax). v_desc addresses the stage's V as an MN-major B
// operand (64-column boxes kBoxBytes apart). Issues the products; finish_pv waits for them.
template <bool kIsBF16, int kCols>
__device__ __forceinline__ void issue_pv_from_registers(float (&acc)[kCols / 2],
                                                        const uint32_t (&probs)[16],
                                                        const float (&rescale)[2],
                                                        uint64_t v_desc) {
  rescale_rows(acc, rescale);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    gmma_rs<kIsBF16, cute::SM90::GMMA::Major::MN, kCols>(&probs[4 * k],
                                                         desc_advance(v_desc, k * 2048), acc);
  }
  wgmma_commit();
}
// Waits for the products issue_pv_from_registers issued into acc.
template <int N>
__device__ __forceinline__ void finish_pv(float (&acc)[N]) {
  wgmma_wait<0>();
  fence_registers(acc);
}
// Both: issues warpgroup 0's share and waits for it.
template <bool kIsBF16, int kCols>
__device__ __forceinline__ void accumulate_pv_from_registers(float (&acc)[kCols / 2],
                                                             const uint32_t (&probs)[16],
                                                             const float (&rescale)[2],
                                                             uint64_t v_desc) {
  issue_pv_from_registers<kIsBF16, kCols>(acc, probs, rescale, v_desc);
  finish_pv(acc);
}

// Warpgroup 1's share: 320 columns as 256 + 64 (acc, acc_tail) with P from the shared box
// p_desc. v_desc / v_desc_tail address the stage's V columns of each part (64-column boxes of
// 8 KB). kMaxCols 128 issues the 256 as two m64n128 products (kernels launched with 128
// registers a thread, where one m64n256 does not fit). Waits.
template <bool kIsBF16, int kMaxCols = 256>
__device__ __forceinline__ void accumulate_pv_from_shared(float (&acc)[128], float (&acc_tail)[32],
                                                          const float (&rescale)[2],
                                                          uint64_t p_desc, uint64_t v_desc,
                                                          uint64_t v_desc_tail) {
  using cute::SM90::GMMA::Major;
  rescale_rows(acc, rescale);
  rescale_rows(acc_tail, rescale);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (kMaxCols >= 256) {
      gmma_ss<kIsBF16, Major::MN, 256>(desc_advance(p_desc, k * 32), desc_advance(v_desc, k * 2048),
                                       acc);
    } else {
      float(&lo)[64] = *reinterpret_cast<float(*)[64]>(&acc[0]);
      float(&hi)[64] = *reinterpret_cast<float(*)[64]>(&acc[64]);
      gmma_ss<kIsBF16, Major::MN, 128>(desc_advance(p_desc, k * 32), desc_advance(v_desc, k * 2048),
                                       lo);
      gmma_ss<kIsBF16, Major::MN, 128>(desc_advance(p_desc, k * 32),
                                       desc_advance(v_desc, 2 * 8192 + k * 2048), hi);
    }
    gmma_ss<kIsBF16, Major::MN, 64>(desc_advance(p_desc, k * 32),
                                    desc_advance(v_desc_tail, k * 2048), acc_tail);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_registers(acc);
  fence_registers(acc_tail);
}

// The two owned rows' factors of a 64-row array in shared memory (row scale, 1 / row sum).
__device__ __forceinline__ void load_owned_rows(const float* rows, int warp_in_wg, int lane,
                                                float (&values)[2]) {
  values[0] = rows[16 * warp_in_wg + lane / 4];
  values[1] = rows[16 * warp_in_wg + lane / 4 + 8];
}

// Output scale and log-sum-exp (natural log; -inf when the row attended nothing) of a row
// once all tiles are in, from its running max and its whole sum. With kSink, the row's
// attention sink (in log2 units, -inf = none) joins the denominator of the output but not the
// lse.
template <bool kSink = false>
__device__ __forceinline__ void finalize_row_sum(float row_max, float sum, float& inv_sum,
                                                 float& lse, float sink_log2 = -INFINITY) {
  const bool empty = row_max == -INFINITY || sum == 0.f;
  float denominator = sum;
  if constexpr (kSink) denominator += exp2f(sink_log2 - row_max);
  inv_sum = empty ? 0.f : 1.f / denominator;
  lse = empty ? -INFINITY : (row_max + log2f(sum)) * 0.69314718055994531f;
}
// The same for owned row i of `stats`, whose sum is still this thread's share of its quad's.
template <bool kSink = false>
__device__ __forceinline__ void finalize_row(const RowStats& stats, int i, float& inv_sum,
                                             float& lse, float sink_log2 = -INFINITY) {
  finalize_row_sum<kSink>(stats.max[i], quad_sum(stats.sum[i]), inv_sum, lse, sink_log2);
}

}  // namespace flashmla::sm90
