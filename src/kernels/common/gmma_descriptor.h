// Shared-memory matrix descriptors of wgmma (the 64-bit operand naming a tile in shared memory),
// built and advanced by arithmetic that the host can run too, so that tests check it on the CPU.
// Fields (PTX ISA, "Matrix Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading
// dimension byte offset >> 4, 32-45 stride dimension byte offset >> 4, 62-63 swizzle mode.
#pragma once

#include <cstdint>

#include "kernels/common/host_device.h"

namespace flashmla::sm90 {

// Descriptor of a 128B-swizzled tile at shared-memory byte address `address`.
FLASHMLA_HD_INLINE uint64_t make_sw128_desc_at(uint32_t address, uint32_t leading_bytes,
                                               uint32_t stride_bytes) {
  uint64_t desc = (uint64_t(address) & 0x3FFFF) >> 4;
  desc |= uint64_t((leading_bytes >> 4) & 0x3FFF) << 16;
  desc |= uint64_t((stride_bytes >> 4) & 0x3FFF) << 32;
  desc |= uint64_t(1) << 62;  // 128-byte swizzle
  return desc;
}

// Moves a descriptor's start address by `bytes` (a multiple of 16, staying in shared memory).
// The start-address field of a valid shared-memory operand (an address below 256 KB) never
// carries out of the low word, so the add is done there alone: one uniform add per descriptor,
// where a 64-bit add costs ptxas an add, an add with carry and moves before every wgmma
// (FlashMLA's dense kernel issues half the uniform instructions per wgmma that this add cost us).
FLASHMLA_HD_INLINE uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  const uint32_t low = static_cast<uint32_t>(desc) + (bytes >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | low;
}

}  // namespace flashmla::sm90
