// The driver's answer for the decode kernels' Q tile maps (api/q_tile_map.h): every layout the
// kernels should load by TMA gets a map (a refused one silently falls back to the cp.async
// copies, a speed loss no output test would show), including unit dimensions, whose stride is
// never read and is given as 16 bytes. Needs a GPU (the driver's cuTensorMapEncodeTiled);
// built by CMake, run by scripts/gpu_tests.sh.
#include <gtest/gtest.h>

#include <cuda.h>

#include <cstdint>

#include "api/q_tile_map.h"
#include "device_buffer.h"

namespace flashmla {
namespace {

using testing::DeviceBuffer;

struct Layout {
  const char* name;
  int head_dim, num_heads, seqlen_q, batch;
  int64_t head_stride;  // elements; the other strides follow, contiguous
};

TEST(QTileMapGpu, TheDriverTakesEveryAlignedDecodeLayout) {
  const Layout layouts[] = {
      {"h128 s_q 1 b 1 (unit dims)", 576, 128, 1, 1, 576},
      {"h128 s_q 2 b 4", 576, 128, 2, 4, 576},
      {"h64 s_q 4 b 3, padded heads", 512, 64, 4, 3, 640},
      {"h100 s_q 3 b 2 (a partial m-block)", 576, 100, 3, 2, 576},
      {"h33 s_q 1 b 321", 576, 33, 1, 321, 576},
  };
  for (const Layout& l : layouts) {
    const int64_t seq_stride = l.head_stride * l.num_heads;
    const int64_t batch_stride = seq_stride * l.seqlen_q;
    DeviceBuffer<uint16_t> q(size_t(batch_stride) * l.batch);
    detail::QTileSource source{q.get(), l.head_dim,    l.num_heads, l.seqlen_q,
                               l.batch, l.head_stride, seq_stride,  batch_stride};
    CUtensorMap map{};
    EXPECT_TRUE(detail::make_q_tile_map(source, map)) << l.name;

    source.q = reinterpret_cast<const char*>(q.get()) + 2;  // off a 16-byte boundary
    EXPECT_FALSE(detail::make_q_tile_map(source, map)) << l.name;
  }
}

}  // namespace
}  // namespace flashmla
