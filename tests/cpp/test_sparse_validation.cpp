// validate_sparse_decode: accepts valid params (fake but aligned pointers: it never reads
// them), and rejects each bad field with a flashmla::Error that names it. A field of one of the
// two token sources is named with its prefix ("main.topk", "extra.indices").
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "flashmla/kv_cache_format.h"
#include "flashmla/sparse_decode.h"
#include "validation_helpers.h"

namespace flashmla {
namespace {

using testing::expect_error_names;
using testing::fake_pointer;
using testing::misalign;

// Densest strides of a source for the params' format.
void set_dense_source_strides(const SparseDecodeParams& p, SparseTokenSource& s) {
  s.block_stride = kv_cache_min_block_bytes(p.kv_format, s.page_block_size, p.head_dim_qk);
  s.token_stride = kv_cache_min_token_bytes(p.kv_format, p.head_dim_qk);
  s.indices_seq_stride = s.topk;
  s.indices_batch_stride = int64_t(p.seqlen_q) * s.indices_seq_stride;
}

void set_dense_strides(SparseDecodeParams& p) {
  p.q_head_stride = p.head_dim_qk;
  p.q_seq_stride = int64_t(p.num_heads_q) * p.q_head_stride;
  p.q_batch_stride = int64_t(p.seqlen_q) * p.q_seq_stride;
  set_dense_source_strides(p, p.main);
  if (p.extra.k_cache != nullptr) set_dense_source_strides(p, p.extra);
  p.out_head_stride = p.head_dim_v;
  p.out_seq_stride = int64_t(p.num_heads_q) * p.out_head_stride;
  p.out_batch_stride = int64_t(p.seqlen_q) * p.out_seq_stride;
  p.lse_head_stride = p.seqlen_q;
  p.lse_batch_stride = int64_t(p.num_heads_q) * p.lse_head_stride;
}

SparseTokenSource fake_source(uintptr_t base, int topk, int page_block_size) {
  SparseTokenSource s;
  s.k_cache = fake_pointer<const void>(base);
  s.num_blocks = 1000;
  s.page_block_size = page_block_size;
  s.indices = fake_pointer<const int32_t>(base + 0x100000000);
  s.topk = topk;
  return s;
}

// V3.2-like: FP8 V3.2 cache, h_q 64, s_q 2, top-k 2048, no extra set.
SparseDecodeParams valid_params() {
  SparseDecodeParams p;
  p.kv_format = KVCacheFormat::kFp8V32;
  p.batch = 4;
  p.seqlen_q = 2;
  p.num_heads_q = 64;
  p.head_dim_qk = 576;
  p.head_dim_v = 512;
  p.softmax_scale = 1.f / 24.f;
  p.q = fake_pointer<const void>(0x7f0000000000);
  p.main = fake_source(0x7f1000000000, 2048, 64);
  p.out = fake_pointer<void>(0x7f3000000000);
  p.lse = fake_pointer<float>(0x7f3000100000);
  p.tile_scheduler_metadata = fake_pointer<const int32_t>(0x7f4000000000);
  p.num_splits = fake_pointer<const int32_t>(0x7f4000100000);
  p.num_parts = 66;
  p.workspace = fake_pointer<void>(0x7f5000000000);
  set_dense_strides(p);
  p.workspace_bytes = sparse_decode_workspace_bytes(p);
  return p;
}

void add_extra(SparseDecodeParams& p, int topk = 512, int page_block_size = 2) {
  p.extra = fake_source(0x7f6000000000, topk, page_block_size);
}

TEST(ValidateSparseDecode, AcceptsValidParams) {
  EXPECT_NO_THROW(validate_sparse_decode(valid_params()));
}

struct Variant {
  const char* name;
  std::function<void(SparseDecodeParams&)> change;  // applied before strides/workspace are set
};

TEST(ValidateSparseDecode, AcceptsSupportedVariants) {
  const auto model1 = [](SparseDecodeParams& p) {
    p.kv_format = KVCacheFormat::kFp8Model1, p.head_dim_qk = 512;
  };
  const auto bf16 = [](SparseDecodeParams& p) { p.kv_format = KVCacheFormat::kBFloat16; };
  const std::vector<Variant> variants = {
      {"model1 512", model1},
      {"bf16 576", bf16},
      {"bf16 512", [&](auto& p) { bf16(p), p.head_dim_qk = 512; }},
      {"s_q 1", [](auto& p) { p.seqlen_q = 1; }},
      {"s_q 4", [](auto& p) { p.seqlen_q = 4; }},
      {"h_q 1", [](auto& p) { p.num_heads_q = 1; }},
      {"h_q 8", [](auto& p) { p.num_heads_q = 8; }},
      {"h_q 16", [](auto& p) { p.num_heads_q = 16; }},
      {"h_q 32", [](auto& p) { p.num_heads_q = 32; }},
      {"h_q 128", [](auto& p) { p.num_heads_q = 128; }},
      {"batch 1", [](auto& p) { p.batch = 1; }},
      {"batch 321", [](auto& p) { p.batch = 321; }},
      {"page 1", [](auto& p) { p.main.page_block_size = 1; }},
      {"page 2", [](auto& p) { p.main.page_block_size = 2; }},
      {"page 53", [](auto& p) { p.main.page_block_size = 53; }},
      {"page 69", [](auto& p) { p.main.page_block_size = 69; }},
      {"page 576", [](auto& p) { p.main.page_block_size = 576; }},
      {"model1 page 61", [&](auto& p) { model1(p), p.main.page_block_size = 61; }},
      {"topk 1", [](auto& p) { p.main.topk = 1; }},
      {"topk 100", [](auto& p) { p.main.topk = 100; }},
      {"topk 16384", [](auto& p) { p.main.topk = 16384; }},
      {"topk_length",
       [](auto& p) { p.main.topk_length = fake_pointer<const int32_t>(0x7f7000000000); }},
      {"attn_sink", [](auto& p) { p.attn_sink = fake_pointer<const float>(0x7f7000100000); }},
      {"extra", [](auto& p) { add_extra(p); }},
      {"model1 extra with lengths",
       [&](auto& p) {
         model1(p);
         add_extra(p, 1024, 64);
         p.main.topk = 128;
         p.main.page_block_size = 256;
         p.main.topk_length = fake_pointer<const int32_t>(0x7f7000000000);
         p.extra.topk_length = fake_pointer<const int32_t>(0x7f7000200000);
       }},
  };
  for (const Variant& variant : variants) {
    SparseDecodeParams p = valid_params();
    variant.change(p);
    set_dense_strides(p);
    p.workspace_bytes = sparse_decode_workspace_bytes(p);
    EXPECT_NO_THROW(validate_sparse_decode(p)) << variant.name;
  }
}

TEST(ValidateSparseDecode, AcceptsPaddedStridesAndBlockGaps) {
  SparseDecodeParams p = valid_params();
  add_extra(p, 64, 64);
  set_dense_strides(p);
  p.q_head_stride += 64;
  p.q_seq_stride = p.num_heads_q * p.q_head_stride + 8;
  p.q_batch_stride = p.seqlen_q * p.q_seq_stride + 8;
  p.main.token_stride += 16;
  // FlashMLA's own V3.2 caches leave one token row between blocks.
  p.main.block_stride = 64 * p.main.token_stride + 656;
  p.main.indices_seq_stride += 3;
  p.main.indices_batch_stride = p.seqlen_q * p.main.indices_seq_stride + 5;
  p.extra.block_stride += 1024;
  p.out_head_stride = 576;
  p.out_seq_stride = p.num_heads_q * p.out_head_stride;
  p.out_batch_stride = p.seqlen_q * p.out_seq_stride;
  p.lse_head_stride = 5;
  p.lse_batch_stride = 1000;
  p.workspace_bytes = sparse_decode_workspace_bytes(p) + 12345;
  EXPECT_NO_THROW(validate_sparse_decode(p));
}

// With no extra pointer set there is no extra list, whatever its other fields hold.
TEST(ValidateSparseDecode, IgnoresTheExtraSizesWithoutExtraPointers) {
  SparseDecodeParams p = valid_params();
  p.extra.topk = 0;
  p.extra.page_block_size = -3;
  p.extra.num_blocks = -1;
  p.extra.block_stride = -5;
  p.extra.indices_seq_stride = -7;
  EXPECT_NO_THROW(validate_sparse_decode(p));
}

using Mutation = testing::ParamsMutation<SparseDecodeParams>;

using K = Error::Kind;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

const std::vector<Mutation>& mutations() {
  static const std::vector<Mutation> table = {
      // Null pointers.
      {"q null", [](auto& p) { p.q = nullptr; }, "q", K::kInvalidArgument},
      {"main.k_cache null", [](auto& p) { p.main.k_cache = nullptr; }, "main.k_cache",
       K::kInvalidArgument},
      {"main.indices null", [](auto& p) { p.main.indices = nullptr; }, "main.indices",
       K::kInvalidArgument},
      {"out null", [](auto& p) { p.out = nullptr; }, "out", K::kInvalidArgument},
      {"lse null", [](auto& p) { p.lse = nullptr; }, "lse", K::kInvalidArgument},
      {"metadata null", [](auto& p) { p.tile_scheduler_metadata = nullptr; },
       "tile_scheduler_metadata", K::kInvalidArgument},
      {"num_splits null", [](auto& p) { p.num_splits = nullptr; }, "num_splits",
       K::kInvalidArgument},
      {"workspace null", [](auto& p) { p.workspace = nullptr; }, "workspace", K::kInvalidArgument},
      // Sizes.
      {"batch 0", [](auto& p) { p.batch = 0; }, "batch", K::kInvalidArgument},
      {"batch -2", [](auto& p) { p.batch = -2; }, "batch", K::kInvalidArgument},
      {"seqlen_q 0", [](auto& p) { p.seqlen_q = 0; }, "seqlen_q", K::kInvalidArgument},
      {"num_heads_q 0", [](auto& p) { p.num_heads_q = 0; }, "num_heads_q", K::kInvalidArgument},
      {"num_heads_q -64", [](auto& p) { p.num_heads_q = -64; }, "num_heads_q", K::kInvalidArgument},
      // Head dims against the cache format.
      {"v32 head_dim_qk 512", [](auto& p) { p.head_dim_qk = 512; }, "head_dim_qk", std::nullopt},
      {"model1 head_dim_qk 576", [](auto& p) { p.kv_format = KVCacheFormat::kFp8Model1; },
       "head_dim_qk", std::nullopt},
      {"bf16 head_dim_qk 320",
       [](auto& p) { p.kv_format = KVCacheFormat::kBFloat16, p.head_dim_qk = 320; }, "head_dim_qk",
       std::nullopt},
      {"head_dim_qk 0", [](auto& p) { p.head_dim_qk = 0; }, "head_dim_qk", std::nullopt},
      {"head_dim_v 256", [](auto& p) { p.head_dim_v = 256; }, "head_dim_v", std::nullopt},
      {"head_dim_v 576", [](auto& p) { p.head_dim_v = 576; }, "head_dim_v", std::nullopt},
      {"softmax_scale 0", [](auto& p) { p.softmax_scale = 0.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale -1", [](auto& p) { p.softmax_scale = -1.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale NaN", [](auto& p) { p.softmax_scale = kNaN; }, "softmax_scale",
       K::kInvalidArgument},
      // The main source.
      {"main.page_block_size 0", [](auto& p) { p.main.page_block_size = 0; },
       "main.page_block_size", K::kInvalidArgument},
      {"main.page_block_size -64", [](auto& p) { p.main.page_block_size = -64; },
       "main.page_block_size", K::kInvalidArgument},
      {"main.num_blocks 0", [](auto& p) { p.main.num_blocks = 0; }, "main.num_blocks",
       K::kInvalidArgument},
      {"main.topk 0", [](auto& p) { p.main.topk = 0; }, "main.topk", K::kInvalidArgument},
      {"main.block_stride one row short", [](auto& p) { p.main.block_stride -= 656; },
       "main.block_stride", K::kInvalidArgument},
      {"main.block_stride 16 bytes short", [](auto& p) { p.main.block_stride -= 16; },
       "main.block_stride", K::kInvalidArgument},
      {"model1 main.block_stride below the padded block",
       [](auto& p) {
         p.kv_format = KVCacheFormat::kFp8Model1, p.head_dim_qk = 512;
         p.main.block_stride = int64_t(64) * (576 + 8);  // unpadded: 37376 < 37440
       },
       "main.block_stride", K::kInvalidArgument},
      {"main.token_stride 640", [](auto& p) { p.main.token_stride = 640; }, "main.token_stride",
       K::kInvalidArgument},
      {"bf16 main.token_stride one vector short",
       [](auto& p) {
         p.kv_format = KVCacheFormat::kBFloat16;
         p.main.block_stride = 64 * 1152;
         p.main.token_stride = 1152 - 16;
       },
       "main.token_stride", K::kInvalidArgument},
      // Alignment.
      {"q + 2 bytes", [](auto& p) { p.q = misalign(p.q, 2); }, "q", K::kUnsupported},
      {"q + 8 bytes", [](auto& p) { p.q = misalign(p.q, 8); }, "q", K::kUnsupported},
      // The extra source: used as soon as extra.k_cache is set.
      {"extra.k_cache without extra.indices",
       [](auto& p) { add_extra(p), set_dense_strides(p), p.extra.indices = nullptr; },
       "extra.indices", K::kInvalidArgument},
      {"extra.indices without extra.k_cache",
       [](auto& p) { p.extra.indices = fake_pointer<const int32_t>(0x7f6000000000); },
       "extra.k_cache", K::kInvalidArgument},
      {"extra.topk 0", [](auto& p) { add_extra(p), set_dense_strides(p), p.extra.topk = 0; },
       "extra.topk", K::kInvalidArgument},
      {"extra.page_block_size 0",
       [](auto& p) { add_extra(p), set_dense_strides(p), p.extra.page_block_size = 0; },
       "extra.page_block_size", K::kInvalidArgument},
      {"extra.num_blocks 0",
       [](auto& p) { add_extra(p), set_dense_strides(p), p.extra.num_blocks = 0; },
       "extra.num_blocks", K::kInvalidArgument},
      {"extra.block_stride one row short",
       [](auto& p) { add_extra(p), set_dense_strides(p), p.extra.block_stride -= 656; },
       "extra.block_stride", K::kInvalidArgument},
      // The plan and the workspace.
      {"num_parts 0", [](auto& p) { p.num_parts = 0; }, "num_parts", K::kInvalidArgument},
      {"num_parts -1", [](auto& p) { p.num_parts = -1; }, "num_parts", K::kInvalidArgument},
      {"workspace_bytes 0", [](auto& p) { p.workspace_bytes = 0; }, "workspace_bytes",
       K::kInvalidArgument},
      {"workspace_bytes one short", [](auto& p) { p.workspace_bytes -= 1; }, "workspace_bytes",
       K::kInvalidArgument},
      {"more parts than the workspace holds", [](auto& p) { p.num_parts = 1000; },
       "workspace_bytes", K::kInvalidArgument},
  };
  return table;
}

class ValidateSparseDecodeRejects : public ::testing::TestWithParam<Mutation> {};

TEST_P(ValidateSparseDecodeRejects, NamesTheArgument) {
  testing::expect_rejected(GetParam(), valid_params(), validate_sparse_decode, "sparse_decode: ");
}

// Test names say which argument each case covers: <argument>__<what is wrong>.
INSTANTIATE_TEST_SUITE_P(Mutations, ValidateSparseDecodeRejects, ::testing::ValuesIn(mutations()),
                         [](const auto& info) {
                           return testing::mutation_test_name(info.param, info.index);
                         });

// The workspace grows with the parts, the batch and the heads, and is never 0.
TEST(SparseDecodeWorkspace, GrowsWithTheProblem) {
  const SparseDecodeParams p = valid_params();
  const size_t base = sparse_decode_workspace_bytes(p);
  EXPECT_GT(base, 0u);
  SparseDecodeParams more = p;
  more.num_parts *= 2;
  EXPECT_GT(sparse_decode_workspace_bytes(more), base);
  more = p;
  more.batch *= 2;
  EXPECT_GT(sparse_decode_workspace_bytes(more), base);
  more = p;
  more.num_heads_q *= 2;
  EXPECT_GT(sparse_decode_workspace_bytes(more), base);
}

}  // namespace
}  // namespace flashmla
