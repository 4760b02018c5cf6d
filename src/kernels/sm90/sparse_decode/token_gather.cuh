// The producer's gather: a tile's selected cache rows, loaded by groups of threads and stored,
// dequantized to bf16, into the stage's SW128 boxes (a box: 64 tokens x 64 columns, eight
// 16-byte chunks of 8 columns per token). One struct per (mapping, cache format) says where a
// token's bytes are and how to turn a thread's part of them into bf16. Two mappings:
//  - token quads (TokenQuarter; the 64-head kernel without the crossover, whose producer
//    gathers both rounds of a tile, and bf16 rows): the 4 threads of a quad
//    take one token, quarter q the 16 columns 16q..16q+15 of every box (one 16-byte load of
//    fp8, two 16-byte chunks stored). A warp stores 8 tokens x 4 quarters a step: the 16-byte
//    pieces spread evenly over the 32 banks (conflict-free).
//  - token octets (TokenOctets; FP8 rows gathered one round a producer: the crossover, whose
//    stores also go to the peer CTA by st.async, and the few-heads kernel's two producers):
//    the 8 threads of an octet take one token, lane c the chunk c (8 columns) of every box, two
//    tokens a thread per 32-token round (one where two producers share a round). Each 8-lane
//    phase of a store then writes one token's whole 128-byte row of a box, contiguous in the
//    peer's shared memory too. With quads every phase wrote eight 16-byte pieces of eight rows, and
//    the distributed-shared-memory traffic cost twice FlashMLA's for the same bytes (side by side,
//    peer stores alone: +1209 us against +582 us on the V3.2 h_q 128 top-k 16384 row; octets:
//    -5 to -9% time on the h_q 128 rows, docs/perf-notes.md).
// Interface (what the producer uses): kTokens (tokens a thread takes per round),
// token_in_round(warp, lane, k), part(lane), Slot / slot(token in tile, part), load, prefetch,
// store, and valid_word (the warp's 8 validity bits).
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

// 8 bytes through the read-only path, L1 evict_last; kL2Sector256 also asks L2 for the
// 256-byte sector (row data, as above; not for lone scale rows).
template <bool kL2Sector256>
__device__ __forceinline__ uint2 load_evict_last_8b(const void* address) {
  uint2 v;
  if constexpr (kL2Sector256) {
    asm volatile("ld.global.nc.L1::evict_last.L2::256B.v2.u32 {%0, %1}, [%2];"
                 : "=r"(v.x), "=r"(v.y)
                 : "l"(address));
  } else {
    asm volatile("ld.global.nc.L1::evict_last.v2.u32 {%0, %1}, [%2];"
                 : "=r"(v.x), "=r"(v.y)
                 : "l"(address));
  }
  return v;
}

// 8 bytes of a gathered row (an octet lane's chunk of fp8 values).
__device__ __forceinline__ uint2 load_gathered_8b(const void* address) {
  return load_evict_last_8b</*kL2Sector256=*/true>(address);
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

// A short chain of integer work per token (one producer warp per SM sub-partition runs it at
// a few cycles an instruction, on the path the consumers wait on): the page as a
// multiply-high instead of a division, and 32 x 32 -> 64-bit address products. The bounds
// check is one unsigned compare (negative indices wrap above 2^31) or two signed ones: the
// same answer, but the 64-head kernels ran 5% faster on V3.2 h_q 64 with the first and the
// few-heads kernels 6-8% slower on h_q 16, for no reason found in their SASS beyond ptxas's
// register allocation (docs/perf-notes.md); each kernel's traits pick the form.
template <KVCacheFormat kFormat, bool kUnsignedIndexCheck>
__device__ __forceinline__ TokenLocation locate_token(const SparseTokenList& list, int32_t index) {
  TokenLocation loc;
  if constexpr (kUnsignedIndexCheck) {
    loc.valid = uint32_t(index) < list.num_tokens;
  } else {
    loc.valid = index >= 0 && int64_t(index) < int64_t(list.num_tokens);
  }
  const uint32_t safe = loc.valid ? uint32_t(index) : 0u;
  const uint32_t block = list.page_block_size.quotient(safe);
  const uint32_t row = safe - block * list.page_block_size.divisor;
  const uint8_t* block_base = list.k_cache + uint64_t(block) * uint64_t(list.block_stride);
  if constexpr (kFormat == KVCacheFormat::kFp8Model1) {
    loc.row = block_base + uint64_t(row) * uint32_t(kFp8Model1RowBytes);
    loc.scales =
        block_base + list.scale_rows_offset + uint64_t(row) * uint32_t(kFp8Model1ScaleRowBytes);
  } else {
    loc.row = block_base + uint64_t(row) * uint64_t(list.token_stride);
    loc.scales = nullptr;
  }
  return loc;
}

// Where a thread's quarter of one token goes in every 64-column SW128 box of a stage: the
// byte offsets, within a box, of its two 16-byte chunks (2q and 2q + 1). Fixed for the
// thread's whole life.
struct QuarterSlot {
  uint32_t chunk_lo = 0, chunk_hi = 0;
  QuarterSlot() = default;
  __device__ __forceinline__ QuarterSlot(int token, int quarter)
      : chunk_lo(sw128_offset(token, 2 * quarter)),
        chunk_hi(sw128_offset(token, 2 * quarter + 1)) {}
};

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

// The quad mapping's part of TokenQuarter: one token a thread, quarter = lane / 8 (the quad
// of token j of a warp's 8 is lanes j, j + 8, j + 16, j + 24).
struct QuadMapping {
  static constexpr int kTokens = 1;
  using Slot = QuarterSlot;
  static __device__ __forceinline__ int token_in_round(int warp, int lane, int) {
    return warp * 8 + (lane & 7);
  }
  static __device__ __forceinline__ int part(int lane) { return lane >> 3; }
  static __device__ __forceinline__ Slot slot(int token, int quarter) {
    return QuarterSlot(token, quarter);
  }
  // Lanes 0..7 hold the warp's 8 tokens in order (quads never share a round: no first token).
  static __device__ __forceinline__ uint32_t valid_word(const bool (&valid)[1], int) {
    return __ballot_sync(0xffffffffu, valid[0]) & 0xffu;
  }
};

// The octet mapping's part of TokenOctets: kTokensPerThread tokens a thread; octet o = lane / 8
// of warp w takes tokens 8w + 4k + o of the round (k = 0, 1: both, or with two producers a
// round the producer's one, k = its half), lane c = lane % 8 their chunk c.
template <int kTokensPerThread>
struct OctetMapping {
  static constexpr int kTokens = kTokensPerThread;
  static_assert(kTokens == 1 || kTokens == 2);
  using Slot = uint32_t;  // byte offset of the thread's chunk of the token within a box
  static __device__ __forceinline__ int token_in_round(int warp, int lane, int k) {
    return warp * 8 + 4 * k + (lane >> 3);
  }
  static __device__ __forceinline__ int part(int lane) { return lane & 7; }
  static __device__ __forceinline__ Slot slot(int token, int chunk) {
    return sw128_offset(token, chunk);
  }
  // Bit 4k + o: token 8w + 4k + o (first_k: the k of the thread's first token).
  static __device__ __forceinline__ uint32_t valid_word(const bool (&valid)[kTokens], int first_k) {
    uint32_t word = 0;
#pragma unroll
    for (int k = 0; k < kTokens; ++k) {
      const uint32_t ballot = __ballot_sync(0xffffffffu, valid[k]);
#pragma unroll
      for (int o = 0; o < 4; ++o) word |= ((ballot >> (8 * o)) & 1u) << (4 * (k + first_k) + o);
    }
    return word;
  }
};

// FP8 V3.2: 512 e4m3 NoPE values (8 boxes), 4 float32 scales (one per 128 values = 2 boxes),
// 64 bf16 RoPE values (box 8).
__device__ __forceinline__ float4 load_v32_scales(const uint8_t* row) {
  const uint4 raw = load_gathered_16b(row + kFp8V32ScaleOffset);
  return make_float4(__uint_as_float(raw.x), __uint_as_float(raw.y), __uint_as_float(raw.z),
                     __uint_as_float(raw.w));
}

// One dequantization decision per token: every quantizer-written cache takes the fast path.
__device__ __forceinline__ bool v32_fast_scales(const float4& scales) {
  return is_fast_dequant_scale(scales.x) && is_fast_dequant_scale(scales.y) &&
         is_fast_dequant_scale(scales.z) && is_fast_dequant_scale(scales.w);
}

// MODEL1: an e8m0 byte e is the scale 2^(e - 127). The fast path takes e in [127 - 117,
// 127 + 7], and its bf16x2 multiplier 2^(e - 127 + 120) is the bf16 with exponent field
// e + 120 (no float decode).
__device__ __forceinline__ uint32_t model1_exponent(const uint2& scales, int box) {
  return ((box < 4 ? scales.x : scales.y) >> (8 * (box % 4))) & 0xffu;
}
__device__ __forceinline__ bool model1_fast_scales(const uint2& scales) {
  bool fast = true;
#pragma unroll
  for (int box = 0; box < 7; ++box) {
    const uint32_t e = model1_exponent(scales, box);
    fast = fast && e >= 127 - 117 && e <= 127 + 7;
  }
  return fast;
}
__device__ __forceinline__ uint32_t model1_fast_multiplier(const uint2& scales, int box) {
  const uint32_t bf16 = (model1_exponent(scales, box) + 120u) << 7;  // 2^(e - 127) * 2^120
  return bf16 | (bf16 << 16);
}
// A token's 8-byte scale row: one line of its own, so no 256-byte L2 sector.
__device__ __forceinline__ uint2 load_model1_scales(const uint8_t* scale_row) {
  return load_evict_last_8b</*kL2Sector256=*/false>(scale_row);
}
constexpr uint32_t kModel1UnitScales = 0x7f7f7f7fu;  // e8m0 127 = 2^0 in every byte

// What the gathers need to know of an fp8 row format: NoPE boxes, where the RoPE box is, the
// token's scales (load, unit value, fast-path test, per-box multiplier / scale), and which
// lines of the token a quad's quarter q or an octet's lane c prefetches.
template <KVCacheFormat kFormat>
struct Fp8RowFormat;

template <>
struct Fp8RowFormat<KVCacheFormat::kFp8V32> {
  static constexpr int kNopeBoxes = 8;
  static constexpr int kRopeOffset = kFp8V32RopeOffset;
  static constexpr int kHeadDim = kFp8V32HeadDim;
  using Scales = float4;  // one float32 scale per 128 values (2 boxes)
  static __device__ __forceinline__ Scales load_scales(const TokenLocation& loc) {
    return load_v32_scales(loc.row);
  }
  static __device__ __forceinline__ Scales unit_scales() { return make_float4(1.f, 1.f, 1.f, 1.f); }
  static __device__ __forceinline__ bool fast(const Scales& scales) {
    return v32_fast_scales(scales);
  }
  static __device__ __forceinline__ float box_scale(const Scales& scales, int box) {
    const float group[4] = {scales.x, scales.y, scales.z, scales.w};
    return group[box / 2];
  }
  static __device__ __forceinline__ uint32_t fast_multiplier(const Scales& scales, int box) {
    return fast_dequant_multiplier(box_scale(scales, box));
  }
  // The quad covers the row.
  static __device__ __forceinline__ void prefetch_quad(const TokenLocation& loc, int quarter) {
    prefetch_row_l2<kFp8V32TokenBytes>(loc.row, quarter);
  }
  // Lanes 0..6 touch every line of the row (bytes 0, 128, ..., 640 and the last).
  static __device__ __forceinline__ void prefetch_octet(const TokenLocation& loc, int chunk) {
    if (chunk < 7) prefetch_l2(loc.row + min(chunk * 128, kFp8V32TokenBytes - 1));
  }
};

template <>
struct Fp8RowFormat<KVCacheFormat::kFp8Model1> {
  static constexpr int kNopeBoxes = 7;
  static constexpr int kRopeOffset = kFp8Model1RopeOffset;
  static constexpr int kHeadDim = kFp8Model1HeadDim;
  using Scales = uint2;  // 7 e8m0 bytes and a pad byte
  static __device__ __forceinline__ Scales load_scales(const TokenLocation& loc) {
    return load_model1_scales(loc.scales);
  }
  static __device__ __forceinline__ Scales unit_scales() {
    return make_uint2(kModel1UnitScales, kModel1UnitScales);
  }
  static __device__ __forceinline__ bool fast(const Scales& scales) {
    return model1_fast_scales(scales);
  }
  static __device__ __forceinline__ float box_scale(const Scales& scales, int box) {
    return fp8::e8m0_to_float(uint8_t(model1_exponent(scales, box)));
  }
  static __device__ __forceinline__ uint32_t fast_multiplier(const Scales& scales, int box) {
    return model1_fast_multiplier(scales, box);
  }
  // The quad covers the data row, quarter 0 also takes the scale row.
  static __device__ __forceinline__ void prefetch_quad(const TokenLocation& loc, int quarter) {
    prefetch_row_l2<kFp8Model1RowBytes>(loc.row, quarter);
    if (quarter == 0) prefetch_l2(loc.scales);
  }
  // Lanes 0..5 touch every line of the data row (bytes 0, ..., 512 and the last), lane 6 the
  // scale row.
  static __device__ __forceinline__ void prefetch_octet(const TokenLocation& loc, int chunk) {
    if (chunk < 6) prefetch_l2(loc.row + min(chunk * 128, kFp8Model1RowBytes - 1));
    if (chunk == 6) prefetch_l2(loc.scales);
  }
};

// FP8 rows (V3.2: 512 e4m3 NoPE values in 8 boxes, 4 float32 scales, one per 2 boxes, 64 bf16
// RoPE values in box 8; MODEL1: 448 e4m3 NoPE values in 7 boxes with one e8m0 scale each, 64
// bf16 RoPE values in box 7, which is also the last 64 columns of V). Quarter q holds the 16
// fp8 values 16q..16q+15 of every NoPE box and 16 bf16 values of the RoPE box.
template <KVCacheFormat kFormat, int kHeadDimQK>
struct TokenQuarter : QuadMapping {
  using Format = Fp8RowFormat<kFormat>;
  static_assert(kHeadDimQK == Format::kHeadDim);
  static constexpr int kNopeBoxes = Format::kNopeBoxes;
  uint4 nope[kNopeBoxes];
  uint4 rope[2];
  typename Format::Scales scales;

  __device__ __forceinline__ void load(const TokenLocation (&locations)[1], int quarter) {
    const TokenLocation& loc = locations[0];
    if (!loc.valid) {
#pragma unroll
      for (int i = 0; i < kNopeBoxes; ++i) nope[i] = make_uint4(0, 0, 0, 0);
      rope[0] = rope[1] = make_uint4(0, 0, 0, 0);
      scales = Format::unit_scales();
      return;
    }
    scales = Format::load_scales(loc);
#pragma unroll
    for (int i = 0; i < kNopeBoxes; ++i) {
      nope[i] = load_gathered_16b(loc.row + i * 64 + quarter * 16);
    }
    const int rope_lo = Format::kRopeOffset + 2 * quarter * 16;
    rope[0] = load_gathered_16b(loc.row + rope_lo);
    rope[1] = load_gathered_16b(loc.row + (rope_lo + 16));
  }

  // Brings the token's rows into L2 ahead of load().
  static __device__ __forceinline__ void prefetch(const TokenLocation& loc, int quarter) {
    if (loc.valid) Format::prefetch_quad(loc, quarter);
  }

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const Slot (&slots)[1]) const {
    const Slot& slot = slots[0];
    const bool fast = Format::fast(scales);  // one decision per token
    if (fast) {
#pragma unroll
      for (int box = 0; box < kNopeBoxes; ++box) {
        uint4 lo, hi;
        dequant_e4m3x16_fast(nope[box], Format::fast_multiplier(scales, box), lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    } else {
#pragma unroll
      for (int box = 0; box < kNopeBoxes; ++box) {
        uint4 lo, hi;
        dequant_e4m3x16_exact(nope[box], Format::box_scale(scales, box), lo, hi);
        store_quarter<kBoxBytes>(stage, slot, box, lo, hi);
      }
    }
    store_quarter<kBoxBytes>(stage, slot, kNopeBoxes, rope[0], rope[1]);
  }
};

// Plain bf16 rows: every box is a copy.
template <int kHeadDimQK>
struct TokenQuarter<KVCacheFormat::kBFloat16, kHeadDimQK> : QuadMapping {
  static constexpr int kBoxes = kHeadDimQK / 64;
  uint4 chunks[kBoxes][2];

  __device__ __forceinline__ void load(const TokenLocation (&locations)[1], int quarter) {
    const TokenLocation& loc = locations[0];
#pragma unroll
    for (int box = 0; box < kBoxes; ++box) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        chunks[box][i] = loc.valid ? load_gathered_16b(loc.row + box * 128 + quarter * 32 + i * 16)
                                   : make_uint4(0, 0, 0, 0);
      }
    }
  }

  // Not measured for bf16 rows (1024 / 1152 bytes): no prefetch.
  static __device__ __forceinline__ void prefetch(const TokenLocation&, int) {}

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const Slot (&slots)[1]) const {
#pragma unroll
    for (int box = 0; box < kBoxes; ++box) {
      store_quarter<kBoxBytes>(stage, slots[0], box, chunks[box][0], chunks[box][1]);
    }
  }
};

// Token octets, fp8 rows only (the crossover's formats; bf16 rows have no crossover). Lane c
// holds, for each of its tokens (two, or one where two producers share a round), the 8 fp8
// values of chunk c of every NoPE box (8-byte loads) and the 8 bf16 values of chunk c of the
// RoPE box.
template <KVCacheFormat kFormat, int kTokensPerThread = 2>
struct TokenOctets : OctetMapping<kTokensPerThread> {
  using Mapping = OctetMapping<kTokensPerThread>;
  using Mapping::kTokens;
  using Slot = typename Mapping::Slot;
  using Format = Fp8RowFormat<kFormat>;
  static constexpr int kNopeBoxes = Format::kNopeBoxes;
  uint2 nope[kTokens][kNopeBoxes];
  // The RoPE chunk as two 8-byte halves: as one 16-byte vector it needs an aligned register
  // quad, and in the MODEL1 crossover (rows a tile ahead) ptxas gave it a temporary quad and
  // moved a word out right after the load, so the producer waited the load's whole latency
  // each tile (ncu: 18% of its stall samples on that move; -5.5% on MODEL1 top-k 16384).
  uint2 rope[kTokens][2];
  typename Format::Scales scales[kTokens];

  // Token k's rows (zeros and unit scales when the token is invalid: nothing is read).
  __device__ __forceinline__ void load_token(int k, const TokenLocation& loc, int chunk) {
    if (!loc.valid) {
#pragma unroll
      for (int i = 0; i < kNopeBoxes; ++i) nope[k][i] = make_uint2(0, 0);
      rope[k][0] = rope[k][1] = make_uint2(0, 0);
      scales[k] = Format::unit_scales();
      return;
    }
    scales[k] = Format::load_scales(loc);
#pragma unroll
    for (int i = 0; i < kNopeBoxes; ++i)
      nope[k][i] = load_gathered_8b(loc.row + i * 64 + chunk * 8);
    rope[k][0] = load_gathered_8b(loc.row + Format::kRopeOffset + chunk * 16);
    rope[k][1] = load_gathered_8b(loc.row + Format::kRopeOffset + chunk * 16 + 8);
  }

  __device__ __forceinline__ void load(const TokenLocation (&locations)[kTokens], int chunk) {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) load_token(k, locations[k], chunk);
  }

  static __device__ __forceinline__ void prefetch(const TokenLocation& loc, int chunk) {
    if (loc.valid) Format::prefetch_octet(loc, chunk);
  }

  // Token k's chunk, dequantized, at `slot` of every box of the stage.
  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store_token(int k, const Writer& stage, const Slot& slot) const {
    const bool fast = Format::fast(scales[k]);  // one decision per token
    if (fast) {
#pragma unroll
      for (int box = 0; box < kNopeBoxes; ++box) {
        stage.store(box * kBoxBytes + slot,
                    dequant_e4m3x8_fast(nope[k][box], Format::fast_multiplier(scales[k], box)));
      }
    } else {
#pragma unroll
      for (int box = 0; box < kNopeBoxes; ++box) {
        stage.store(box * kBoxBytes + slot,
                    dequant_e4m3x8_exact(nope[k][box], Format::box_scale(scales[k], box)));
      }
    }
    stage.store(kNopeBoxes * kBoxBytes + slot,
                make_uint4(rope[k][0].x, rope[k][0].y, rope[k][1].x, rope[k][1].y));
  }

  template <int kBoxBytes, class Writer>
  __device__ __forceinline__ void store(const Writer& stage, const Slot (&slots)[kTokens]) const {
#pragma unroll
    for (int k = 0; k < kTokens; ++k) store_token<kBoxBytes>(k, stage, slots[k]);
  }
};

}  // namespace flashmla::sm90
