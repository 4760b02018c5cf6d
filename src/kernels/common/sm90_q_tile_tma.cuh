// A decode kernel's Q tile by TMA (api/q_tile_map.h builds the map): 64 heads of one query
// token, as boxes of 64 columns x 64 heads in the SW128 layout S = Q K^T reads, all completing
// on one mbarrier. One thread issues it; heads past h_q land as zeros and count in the bytes.
#pragma once

#include <cstdint>
#include <cuda.h>

#include "kernels/common/sm90_ptx.cuh"

namespace flashmla::sm90 {

// box_address(box): where box `box` (columns 64 box .. 64 box + 63) goes in shared memory.
template <int kNumBoxes, int kBoxBytes, class BoxAddress>
__device__ __forceinline__ void issue_q_tile_tma(const CUtensorMap* q_map, uint64_t* barrier,
                                                 BoxAddress box_address, int first_head, int s,
                                                 int batch) {
  mbarrier_arrive_expect_tx(barrier, kNumBoxes * kBoxBytes);
#pragma unroll 1
  for (int box = 0; box < kNumBoxes; ++box) {
    tma_load_4d(q_map, barrier, box_address(box), box * 64, first_head, s, batch);
  }
}

}  // namespace flashmla::sm90
