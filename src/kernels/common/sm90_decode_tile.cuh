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

// Output scale and log-sum-exp (natural log; -inf when the row attended nothing) of owned
// row i once all tiles are in. With kSink, the row's attention sink (in log2 units,
// -inf = none) joins the denominator of the output but not the lse.
template <bool kSink = false>
__device__ __forceinline__ void finalize_row(const RowStats& stats, int i, float& inv_sum,
                                             float& lse, float sink_log2 = -INFINITY) {
  const float sum = quad_sum(stats.sum[i]);
  const bool empty = stats.max[i] == -INFINITY || sum == 0.f;
  float denominator = sum;
  if constexpr (kSink) denominator += exp2f(sink_log2 - stats.max[i]);
  inv_sum = empty ? 0.f : 1.f / denominator;
  lse = empty ? -INFINITY : (stats.max[i] + log2f(sum)) * 0.69314718055994531f;
}

}  // namespace flashmla::sm90
