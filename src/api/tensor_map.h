// Builds TMA tensor maps on the host through the driver entry point (no libcuda link).
#pragma once

#include <cstdint>
#include <cuda.h>

namespace flashmla::detail {

// A 4-D tiled map of 16-bit elements: dims innermost first, strides in bytes for dims 1..3,
// a box of box_dims, 128-byte swizzle (box_dims[0] * 2 must be 128), out-of-bounds reads = 0.
CUtensorMap make_tensor_map_4d_16bit(const void* base, const uint64_t (&dims)[4],
                                     const uint64_t (&strides_bytes)[3],
                                     const uint32_t (&box_dims)[4], const char* argument);

}  // namespace flashmla::detail
