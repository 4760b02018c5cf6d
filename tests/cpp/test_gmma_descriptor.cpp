// The wgmma descriptor arithmetic the kernels use (kernels/common/gmma_descriptor.h): advancing
// in the low word gives the descriptor a 64-bit add gives, with the start address moved and the
// other fields untouched, for every 16-byte-aligned shared-memory address and offset the kernels
// can form (an operand below the 227 KB a block may use).
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/common/gmma_descriptor.h"

namespace flashmla::sm90 {
namespace {

constexpr uint32_t kSharedBytes = 232448;  // 227 KB: the most a block can use on Hopper

TEST(GmmaDescriptor, FieldsOfTheSw128Descriptor) {
  const uint64_t desc = make_sw128_desc_at(0x12340, 2048, 1024);
  EXPECT_EQ(desc & 0x3FFF, uint64_t(0x12340 >> 4));
  EXPECT_EQ((desc >> 16) & 0x3FFF, uint64_t(2048 >> 4));
  EXPECT_EQ((desc >> 32) & 0x3FFF, uint64_t(1024 >> 4));
  EXPECT_EQ(desc >> 62, uint64_t(1));
}

TEST(GmmaDescriptor, LowWordAdvanceEqualsTheFullAdd) {
  for (uint32_t leading : {16u, 1024u, 8192u}) {
    for (uint32_t address = 0; address < kSharedBytes; address += 16) {
      const uint64_t desc = make_sw128_desc_at(address, leading, 1024);
      // Every offset that stays inside the block's shared memory, in steps that cover the box
      // (8 KB), stage (73.7 KB) and k-step (32 B) offsets the kernels add.
      for (uint32_t bytes = 0; address + bytes < kSharedBytes;
           bytes += (bytes < 4096 ? 16 : 4096)) {
        const uint64_t advanced = desc_advance(desc, bytes);
        ASSERT_EQ(advanced, desc + (bytes >> 4)) << "address " << address << " bytes " << bytes;
        ASSERT_EQ(advanced & 0x3FFF, uint64_t((address + bytes) >> 4));
        ASSERT_EQ(advanced >> 14, desc >> 14);  // no carry into the other fields
      }
    }
  }
}

}  // namespace
}  // namespace flashmla::sm90
