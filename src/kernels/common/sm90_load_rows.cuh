// Loads a tile of rows of 16-bit elements into 64-column SW128 boxes (kRows rows x 128 bytes
// each: the layout wgmma reads) with 16-byte loads. Used for Q tiles, whose rows (query
// heads, possibly of several query tokens) are not one TMA box.
#pragma once

#include <cstdint>

#include "kernels/common/sm90_gmma.cuh"

namespace flashmla::sm90 {

// row_address(row) returns the first byte of tile row `row` (16-byte aligned), or nullptr for a
// row past the end, which is stored as zeros. kThreads threads call this with thread in
// [0, kThreads).
template <int kRows, int kCols, int kThreads, class RowAddress>
__device__ __forceinline__ void load_rows_sw128(void* smem, RowAddress row_address, int thread) {
  static_assert(kRows % 8 == 0 && kCols % 64 == 0);  // whole 8-row swizzle atoms
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  constexpr int kBoxBytes = kRows * 128;
  char* smem_bytes = static_cast<char*>(smem);
#pragma unroll 4
  for (int idx = thread; idx < kChunks; idx += kThreads) {
    const int row = idx / kChunksPerRow;
    const int chunk = idx % kChunksPerRow;
    const char* source = row_address(row);
    uint4 value = make_uint4(0, 0, 0, 0);
    if (source != nullptr) value = __ldg(reinterpret_cast<const uint4*>(source) + chunk);
    *reinterpret_cast<uint4*>(smem_bytes + (chunk / 8) * kBoxBytes + sw128_offset(row, chunk % 8)) =
        value;
  }
}

}  // namespace flashmla::sm90
