// The producer's gather: one selected cache row of a tile, loaded by the 4 threads of a
// "token quad" (quarter q = 0..3 loads bytes 16q..16q+15 of every 64-value group) and stored,
// dequantized to bf16, into the stage's SW128 boxes (a box: 64 tokens x 64 columns, eight
// 16-byte chunks of 8 columns per token). One struct per cache format says where a token's
// bytes are and how to turn its quarter into bf16.
//
// Which two chunks of a box a thread stores (QuarterSlot):
//  - contiguous (bf16 rows; fp8 rows without the crossover): quarter q stores chunks 2q and
//    2q + 1, the 16 columns it loaded;
//  - paired (fp8 rows with the crossover): quarter q stores chunks 4(q/2) + q%2 and that + 2,
//    so that in each store instruction the quad's lanes write chunk pairs {2k, 2k + 1}, i.e.
//    whole 32-byte sectors of the token's row (the swizzle keeps a pair in one sector). With
//    the crossover every store is also an st.async to the peer CTA, and distributed shared
//    memory moves whole sectors: the contiguous mapping sent every sector half empty (ncu: 2x
//    the DSMEM sectors of FlashMLA's kernel for the same bytes; pairing them: -8% time on the
//    V3.2 h_q 128 rows). The fp8 bytes are still loaded 16 contiguous bytes a thread; one
//    exchange between quarters q and q ^ 1 (pair_up) turns them into the paired chunks. RoPE
//    chunks are bf16 already: loaded straight as paired.
// Either way the 16-byte stores of a warp (8 tokens x 4 quarters) spread evenly over the 32
// banks: conflict-free.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "flashmla/kv_cache_format.h"
#include "kernels/common/fp8_convert.h"
#include "kernels/common/sm90_fp8_dequant.cuh"
#include "kernels/common/sm90_gmma.cuh"
#include "kernels/sm90/sparse_decode/kernel_params.h"

namespace flashmla::sm90 {

// 16 bytes of a gathered row. L1 keeps the line (evict_last): the quad's loads of two adjacent
// 64-column boxes share each 128-byte line, which then costs one L2 request instead of two
// (measured: -18% time against L1::no_allocate on the top-k 16384 benchmark rows); L2 fetches
// 256-byte sectors, since a token row spans several.
__device__ __forceinline__ uint4 load_gathered_16b(const void* address) {
  uint4 v;
  asm volatile("ld.global.nc.L1::evict_last.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(address));
  return v;
}

// Asks L2 for the line holding `address` without waiting for it (no register is tied up).
// The producer holds one round of rows in registers; more spilled (docs/perf-notes.md), so the
// rows it gathers next are fetched from DRAM into L2 this way while it stores the current ones.
// (prefetch.global.L1 measured the same, side by side: its lines do not stay in the ~28 KB of L1
// left beside 227 KB of shared memory; ncu, L1 hit rate of the row loads with it: 0-26%.)
__device__ __forceinline__ void prefetch_l2(const void* address) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
}

// Touches every 128-byte line of the `bytes` bytes at `row` once across a token quad: quarter q
// takes offsets 128 q and 128 (q + 4) (the last clipped to the row's last byte), which are at
// most 128 bytes apart in order, for rows of 513 to 1024 bytes.
template <int kRowBytes>
__device__ __forceinline__ void prefetch_row_l2(const uint8_t* row, int quarter) {
  static_assert(kRowBytes > 512 && kRowBytes <= 1024);
  prefetch_l2(row + 128 * quarter);
  prefetch_l2(row + min(128 * (quarter + 4), kRowBytes - 1));
}

// Where one selected token lives (valid == false: the token is skipped and nothing is read).
struct TokenLocation {
  bool valid;
  const uint8_t* row;     // the token's row (data row for MODEL1)
  const uint8_t* scales;  // MODEL1: the token's 8-byte scale row
};

template <KVCacheFormat kFormat>
__device__ __forceinline__ TokenLocation locate_token(const SparseTokenList& list, int32_t index) {
  TokenLocation loc;
  loc.valid = index >= 0 && int64_t(index) < list.num_tokens;
  const uint32_t safe = loc.valid ? uint32_t(index) : 0u;
  const uint32_t block = safe / uint32_t(list.page_block_size);
  const uint32_t row = safe % uint32_t(list.page_block_size);
  const uint8_t* block_base = list.k_cache + int64_t(block) * list.block_stride;
  if constexpr (kFormat == KVCacheFormat::kFp8Model1) {
    loc.row = block_base + int64_t(row) * kFp8Model1RowBytes;
    loc.scales = block_base + int64_t(list.page_block_size) * kFp8Model1RowBytes +
                 int64_t(row) * kFp8Model1ScaleRowBytes;
  } else {
    loc.row = block_base + int64_t(row) * list.token_stride;
    loc.scales = nullptr;
  }
  return loc;
}

// The two chunks (of 8 columns) of every box that quarter `quarter` of a token stores.
struct QuarterChunks {
  int lo, hi;
};
__device__ __forceinline__ QuarterChunks quarter_chunks(int quarter, bool paired) {
  if (!paired) return {2 * quarter, 2 * quarter + 1};
  const int lo = 4 * (quarter >> 1) + (quarter & 1);
  return {lo, lo + 2};
}

// Where a thread's quarter of one token goes in every 64-column SW128 box of a stage: the
// byte offsets, within a box, of its two 16-byte chunks. Fixed for the thread's whole life.
struct QuarterSlot {
  uint32_t chunk_lo = 0, chunk_hi = 0;
  QuarterSlot() = default;
  __device__ __forceinline__ QuarterSlot(int token, QuarterChunks chunks)
      : chunk_lo(sw128_offset(token, chunks.lo)), chunk_hi(sw128_offset(token, chunks.hi)) {}
};

// pair_up for 16 fp8 values (chunks 2q, 2q + 1 of a 64-value group, as loaded): afterwards
// they are chunks quarter_chunks(q, true). Quarters q and q ^ 1 sit 8 lanes apart; the even
// one keeps its first chunk and takes its partner's first, the odd one keeps its second and
// takes its partner's second. Every lane of the warp must call it (shuffles).
__device__ __forceinline__ uint4 pair_up_fp8x16(const uint4& v, int quarter) {
  const bool even = (quarter & 1) == 0;
  const uint32_t send_x = even ? v.z : v.x, send_y = even ? v.w : v.y;
  const uint32_t got_x = __shfl_xor_sync(0xffffffffu, send_x, 8);
  const uint32_t got_y = __shfl_xor_sync(0xffffffffu, send_y, 8);
  return even ? make_uint4(v.x, v.y, got_x, got_y) : make_uint4(got_x, got_y, v.z, v.w);
}

// Where a producer thread's 16-byte vectors of a tile go: this CTA's stage and, with the
// crossover (two CTAs serving the two 64-head halves of one query token), the same place in
// the peer CTA's stage too, by st.async completing on the peer's barrier.
template <bool kCrossover>
struct StageWriter {
  char* local;            // this CTA's stage
  uint32_t peer;          // the peer's stage (shared::cluster address), crossover only
  uint32_t peer_barrier;  // the peer's barrier counting those bytes, crossover only

  __device__ __forceinline__ void store(uint32_t offset, const uint4& value) const {
    *reinterpret_cast<uint4*>(local + offset) = value;
    if constexpr (kCrossover) store_async_peer(peer + offset, value, peer_barrier);
  }
};

// Stores 16 bf16 values (two 16-byte vectors) as the thread's 16 columns of box `box`.
template <int kBoxBytes, class Writer>
__device__ __forceinline__ void store_quarter(const Writer& writer, const QuarterSlot& slot,
                                              int box, const uint4& lo, const uint4& hi) {
  writer.store(box * kBoxBytes + slot.chunk_lo, lo);
  writer.store(box * kBoxBytes + slot.chunk_hi, hi);
}

// kPaired: store paired chunks (fp8 rows with the crossover, whose stores go to the peer too).
template <KVCacheFormat kFormat, int kHeadDimQK, bool kPaired>
struct TokenQuarter;

// FP8 V3.2: 512 e4m3 NoPE values (8 boxes), 4 float32 scales (one per 128 values = 2 boxes),
// 64 bf16 RoPE values (box 8).
template <bool kPaired>
struct TokenQuarter<KVCacheFormat::kFp8V32, kFp8V32HeadDim, kPaired> {
  static constexpr bool kPairedChunks = kPaired;
  uint4 nope[8];
  uint4 rope[2];
  float4 scales;

  __device__ __forceinline__ void load(const TokenLocation& loc, int quarter) {
    if (!loc.valid) {
#pragma unroll
      for (int i = 0; i < 8; ++i) nope[i] = make_uint4(0, 0, 0, 0);
      rope[0] = rope[1] = make_uint4(0, 0, 0, 0);
      scales = make_float4(1.f, 1.f, 1.f, 1.f);
      return;
    }
    const uint4 raw_scales = load_gathered_16b(loc.row + kFp8V32ScaleOffset);
    scales = make_float4(__uint_as_float(raw_scales.x), __uint_as_float(raw_scales.y),
                         __uint_as_float(raw_scales.z), __uint_as_float(raw_scales.w));
#pragma unroll
    for (int i = 0; i < 8; ++i) nope[i] = load_gathered_16b(loc.row + i * 64 + quarter * 16);
    const QuarterChunks rope_chunks = quarter_chunks(quarter, kPairedChunks);
    rope[0] = load_gathered_16b(loc.row + kFp8V32RopeOffset + rope_chunks.lo * 16);
    rope[1] = load_gathered_16b(loc.row + kFp8V32RopeOffset + rope_chunks.hi * 16);
  }

  // Brings the token's row into L2 ahead of load() (the quad covers the row).
  static __device__ __forceinline__ void prefetch(const TokenLocation& loc, int quarter) {
    if (loc.valid) prefetch_row_l2<kFp8V32TokenBytes>(loc.row, quarter);
  }

  // The loaded NoPE quarters into paired chunks (all lanes of the warp, before any branch).
  __device__ __forceinline__ void pair_up(int quarter) {
    if constexpr (kPaired) {
#pragma unroll
      for (int i = 0; i < 8; ++i) nope[i] = pair_up_fp8x16(nope[i], quarter);
    }
  }

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const QuarterSlot& slot) const {
    const float group_scales[4] = {scales.x, scales.y, scales.z, scales.w};
    // One decision per token: every quantizer-written cache takes the fast path.
    const bool fast = is_fast_dequant_scale(scales.x) && is_fast_dequant_scale(scales.y) &&
                      is_fast_dequant_scale(scales.z) && is_fast_dequant_scale(scales.w);
    if (fast) {
#pragma unroll
      for (int box = 0; box < 8; ++box) {
        uint4 lo, hi;
        dequant_e4m3x16_fast(nope[box], fast_dequant_multiplier(group_scales[box / 2]), lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    } else {
#pragma unroll
      for (int box = 0; box < 8; ++box) {
        uint4 lo, hi;
        dequant_e4m3x16_exact(nope[box], group_scales[box / 2], lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    }
    store_quarter<kBoxBytes>(stage, slot, 8, rope[0], rope[1]);
  }
};

// FP8 MODEL1: 448 e4m3 NoPE values (7 boxes, one e8m0 scale each), 64 bf16 RoPE values
// (box 7, which is also the last 64 columns of V).
template <bool kPaired>
struct TokenQuarter<KVCacheFormat::kFp8Model1, kFp8Model1HeadDim, kPaired> {
  static constexpr bool kPairedChunks = kPaired;
  uint4 nope[7];
  uint4 rope[2];
  uint2 scales;  // 7 e8m0 bytes and a pad byte

  __device__ __forceinline__ void load(const TokenLocation& loc, int quarter) {
    if (!loc.valid) {
#pragma unroll
      for (int i = 0; i < 7; ++i) nope[i] = make_uint4(0, 0, 0, 0);
      rope[0] = rope[1] = make_uint4(0, 0, 0, 0);
      scales = make_uint2(0x7f7f7f7fu, 0x7f7f7f7fu);  // 2^0
      return;
    }
    asm volatile("ld.global.nc.L1::evict_last.v2.u32 {%0, %1}, [%2];"
                 : "=r"(scales.x), "=r"(scales.y)
                 : "l"(loc.scales));
#pragma unroll
    for (int i = 0; i < 7; ++i) nope[i] = load_gathered_16b(loc.row + i * 64 + quarter * 16);
    const QuarterChunks rope_chunks = quarter_chunks(quarter, kPairedChunks);
    rope[0] = load_gathered_16b(loc.row + kFp8Model1RopeOffset + rope_chunks.lo * 16);
    rope[1] = load_gathered_16b(loc.row + kFp8Model1RopeOffset + rope_chunks.hi * 16);
  }

  // Brings the token's data row and scale row into L2 ahead of load().
  static __device__ __forceinline__ void prefetch(const TokenLocation& loc, int quarter) {
    if (!loc.valid) return;
    prefetch_row_l2<kFp8Model1RowBytes>(loc.row, quarter);
    if (quarter == 0) prefetch_l2(loc.scales);
  }

  // The loaded NoPE quarters into paired chunks (all lanes of the warp, before any branch).
  __device__ __forceinline__ void pair_up(int quarter) {
    if constexpr (kPaired) {
#pragma unroll
      for (int i = 0; i < 7; ++i) nope[i] = pair_up_fp8x16(nope[i], quarter);
    }
  }

  __device__ __forceinline__ uint32_t exponent(int box) const {
    return ((box < 4 ? scales.x : scales.y) >> (8 * (box % 4))) & 0xffu;
  }

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const QuarterSlot& slot) const {
    // An e8m0 byte e is the scale 2^(e - 127): the fast path takes e in [127 - 117, 127 + 7],
    // and its bf16x2 multiplier 2^(e - 127 + 120) is the bf16 with exponent field e + 120
    // (no float decode). One decision per token.
    bool fast = true;
#pragma unroll
    for (int box = 0; box < 7; ++box) {
      fast = fast && exponent(box) >= 127 - 117 && exponent(box) <= 127 + 7;
    }
    if (fast) {
#pragma unroll
      for (int box = 0; box < 7; ++box) {
        const uint32_t bf16 = (exponent(box) + 120u) << 7;  // 2^(e - 127) * 2^120
        uint4 lo, hi;
        dequant_e4m3x16_fast(nope[box], bf16 | (bf16 << 16), lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    } else {
#pragma unroll
      for (int box = 0; box < 7; ++box) {
        uint4 lo, hi;
        dequant_e4m3x16_exact(nope[box], fp8::e8m0_to_float(uint8_t(exponent(box))), lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    }
    store_quarter<kBoxBytes>(stage, slot, 7, rope[0], rope[1]);
  }
};

// Plain bf16 rows: every box is a copy.
template <int kHeadDimQK, bool kPaired>
struct TokenQuarter<KVCacheFormat::kBFloat16, kHeadDimQK, kPaired> {
  // No crossover for bf16 rows (no dequantization to share), so nothing goes to a peer.
  static_assert(!kPaired);
  static constexpr bool kPairedChunks = false;
  static constexpr int kBoxes = kHeadDimQK / 64;
  uint4 chunks[kBoxes][2];

  __device__ __forceinline__ void load(const TokenLocation& loc, int quarter) {
#pragma unroll
    for (int box = 0; box < kBoxes; ++box) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        chunks[box][i] = loc.valid ? load_gathered_16b(loc.row + box * 128 + quarter * 32 + i * 16)
                                   : make_uint4(0, 0, 0, 0);
      }
    }
  }

  __device__ __forceinline__ void pair_up(int) {}

  // Not measured for bf16 rows (1024 / 1152 bytes): no prefetch.
  static __device__ __forceinline__ void prefetch(const TokenLocation&, int) {}

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const QuarterSlot& slot) const {
#pragma unroll
    for (int box = 0; box < kBoxes; ++box) {
      store_quarter<kBoxBytes>(stage, slot, box, chunks[box][0], chunks[box][1]);
    }
  }
};

}  // namespace flashmla::sm90
