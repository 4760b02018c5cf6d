// Loads a tile of rows of 16-bit elements into 64-column SW128 boxes (kRows rows x 128 bytes
// each: the layout wgmma reads) with 16-byte cp.async copies: no registers held, so every copy
// of the tile is in flight at once (16-byte loads through registers, 4 in flight a thread,
// paid ~5 memory latencies per Q tile). Used for Q tiles, whose rows (query heads, possibly of
// several query tokens) are not one TMA box.
#pragma once

#include <cstdint>

#include "kernels/common/sm90_gmma.cuh"
#include "kernels/common/sm90_ptx.cuh"

namespace flashmla::sm90 {

// row_address(row) returns the first byte of tile row `row` (16-byte aligned), or nullptr for a
// row past the end, which is stored as zeros; row 0 must exist. kThreads threads call this with
// thread in [0, kThreads); it returns once this thread's copies have landed (the caller still
// fences for wgmma and synchronises the threads).
template <int kRows, int kCols, int kThreads, class RowAddress>
__device__ __forceinline__ void load_rows_sw128(void* smem, RowAddress row_address, int thread) {
  static_assert(kRows % 8 == 0 && kCols % 64 == 0);  // whole 8-row swizzle atoms
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  constexpr int kBoxBytes = kRows * 128;
  const uint32_t smem_base = smem_addr(smem);
  const char* fallback = row_address(0);  // read by nothing: a zero-byte copy's address
#pragma unroll 4
  for (int idx = thread; idx < kChunks; idx += kThreads) {
    const int row = idx / kChunksPerRow;
    const int chunk = idx % kChunksPerRow;
    const char* source = row_address(row);
    const bool valid = source != nullptr;
    cp_async_16_or_zero(smem_base + (chunk / 8) * kBoxBytes + sw128_offset(row, chunk % 8),
                        valid ? source + chunk * 16 : fallback, valid);
  }
  cp_async_wait_all();
}

}  // namespace flashmla::sm90
