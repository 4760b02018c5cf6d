// FLASHMLA_HD_INLINE: an inline function compiled for both the host (CPU reference, cache
// tools, tests) and the device, from one definition.
#pragma once

#if defined(__CUDACC__)
#define FLASHMLA_HD_INLINE __host__ __device__ __forceinline__
#else
#define FLASHMLA_HD_INLINE inline
#endif
