// validate_dense_decode: accepts valid params (fake but aligned pointers: it never reads
// them), and rejects each bad field with a flashmla::Error that names it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "flashmla/dense_decode.h"
#include "dense_decode_valid_params.h"
#include "validation_helpers.h"

namespace flashmla {
namespace {

using testing::expect_error_names;
using testing::misalign;
using testing::set_dense_strides;
using testing::test_name;

DenseDecodeParams valid_params() {
  return testing::valid_dense_decode_params();
}

TEST(ValidateDenseDecode, AcceptsValidParams) {
  EXPECT_NO_THROW(validate_dense_decode(valid_params()));
}

struct Variant {
  const char* name;
  std::function<void(DenseDecodeParams&)> change;  // applied before strides/workspace are set
};

TEST(ValidateDenseDecode, AcceptsSupportedVariants) {
  const std::vector<Variant> variants = {
      {"fp16", [](auto& p) { p.dtype = ScalarType::kFloat16; }},
      {"d_qk 512", [](auto& p) { p.head_dim_qk = 512; }},
      {"s_q 1", [](auto& p) { p.seqlen_q = 1; }},
      {"h_q 1", [](auto& p) { p.num_heads_q = 1; }},
      {"h_q 3", [](auto& p) { p.num_heads_q = 3; }},
      {"h_q 128", [](auto& p) { p.num_heads_q = 128; }},
      {"h_q 6, h_kv 3", [](auto& p) { p.num_heads_q = 6, p.num_heads_kv = 3; }},
      {"h_q 128, h_kv 2", [](auto& p) { p.num_heads_q = 128, p.num_heads_kv = 2; }},
      {"page 128", [](auto& p) { p.page_block_size = 128; }},
      {"page 256", [](auto& p) { p.page_block_size = 256; }},
      // Any page size >= 1 (not only multiples of 64).
      {"page 1", [](auto& p) { p.page_block_size = 1; }},
      {"page 16", [](auto& p) { p.page_block_size = 16; }},
      {"page 32", [](auto& p) { p.page_block_size = 32; }},
      {"page 53", [](auto& p) { p.page_block_size = 53; }},
      {"page 96", [](auto& p) { p.page_block_size = 96; }},
      {"page 100", [](auto& p) { p.page_block_size = 100; }},
      {"non-paged",
       [](auto& p) { p.block_table = nullptr, p.num_blocks = p.batch, p.max_blocks_per_seq = 1; }},
      {"batch 1", [](auto& p) { p.batch = 1; }},
      {"not causal", [](auto& p) { p.causal = false; }},
      {"s_q 16384", [](auto& p) { p.seqlen_q = 16384, p.num_heads_q = 128; }},
  };
  for (const Variant& variant : variants) {
    DenseDecodeParams p = valid_params();
    variant.change(p);
    set_dense_strides(p);
    p.workspace_bytes = dense_decode_workspace_bytes(p);
    EXPECT_NO_THROW(validate_dense_decode(p)) << variant.name;
  }
}

TEST(ValidateDenseDecode, AcceptsPaddedAndPermutedStrides) {
  DenseDecodeParams p = valid_params();
  p.q_head_stride += 64;  // padded rows
  p.q_seq_stride = p.num_heads_q * p.q_head_stride + 8;
  p.q_batch_stride = p.seqlen_q * p.q_seq_stride + 8;
  p.k_head_stride = 640;
  p.k_token_stride = 640;
  p.k_block_stride = 64 * 640 + 16;
  p.block_table_batch_stride = 33;
  // out allocated as [b, h_q, s_q, d_v] and viewed as [b, s_q, h_q, d_v].
  p.out_head_stride = int64_t(p.seqlen_q) * p.head_dim_v;
  p.out_seq_stride = p.head_dim_v;
  p.lse_head_stride = 5;
  p.lse_batch_stride = 1000;
  p.workspace_bytes += 12345;
  EXPECT_NO_THROW(validate_dense_decode(p));
}

struct Mutation {
  const char* description;
  std::function<void(DenseDecodeParams&)> mutate;
  const char* argument;  // expected Error::argument()
  Error::Kind kind;
};

void PrintTo(const Mutation& m, std::ostream* os) {
  *os << m.description;
}

using K = Error::Kind;
constexpr int64_t kTwoTo40 = int64_t(1) << 40;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const std::vector<Mutation>& mutations() {
  static const std::vector<Mutation> table = {
      // Element type and sizes.
      {"dtype 7", [](auto& p) { p.dtype = static_cast<ScalarType>(7); }, "dtype", K::kUnsupported},
      {"batch -1", [](auto& p) { p.batch = -1; }, "batch", K::kInvalidArgument},
      {"batch -3", [](auto& p) { p.batch = -3; }, "batch", K::kInvalidArgument},
      {"seqlen_q 0", [](auto& p) { p.seqlen_q = 0; }, "seqlen_q", K::kInvalidArgument},
      {"seqlen_q 20000", [](auto& p) { p.seqlen_q = 20000; }, "seqlen_q", K::kUnsupported},
      {"num_heads_kv 0", [](auto& p) { p.num_heads_kv = 0; }, "num_heads_kv", K::kInvalidArgument},
      {"num_heads_q 0", [](auto& p) { p.num_heads_q = 0; }, "num_heads_q", K::kInvalidArgument},
      {"num_heads_q -16", [](auto& p) { p.num_heads_q = -16; }, "num_heads_q", K::kInvalidArgument},
      {"h_q 15 over h_kv 2", [](auto& p) { p.num_heads_q = 15, p.num_heads_kv = 2; }, "num_heads_q",
       K::kInvalidArgument},
      {"h_q 2 over h_kv 4", [](auto& p) { p.num_heads_q = 2, p.num_heads_kv = 4; }, "num_heads_q",
       K::kInvalidArgument},
      {"too many query rows", [](auto& p) { p.seqlen_q = 16384, p.num_heads_q = 256; },
       "num_heads_q", K::kUnsupported},
      {"head_dim_qk 320", [](auto& p) { p.head_dim_qk = 320; }, "head_dim_qk", K::kUnsupported},
      {"head_dim_qk 0", [](auto& p) { p.head_dim_qk = 0; }, "head_dim_qk", K::kUnsupported},
      {"head_dim_v 256", [](auto& p) { p.head_dim_v = 256; }, "head_dim_v", K::kUnsupported},
      {"head_dim_v 576", [](auto& p) { p.head_dim_v = 576; }, "head_dim_v", K::kUnsupported},
      {"page 0", [](auto& p) { p.page_block_size = 0; }, "page_block_size", K::kInvalidArgument},
      {"page -64", [](auto& p) { p.page_block_size = -64; }, "page_block_size",
       K::kInvalidArgument},
      {"num_blocks 0", [](auto& p) { p.num_blocks = 0; }, "num_blocks", K::kInvalidArgument},
      {"max_blocks_per_seq 0", [](auto& p) { p.max_blocks_per_seq = 0; }, "max_blocks_per_seq",
       K::kInvalidArgument},
      {"softmax_scale 0", [](auto& p) { p.softmax_scale = 0.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale -1", [](auto& p) { p.softmax_scale = -1.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale NaN", [](auto& p) { p.softmax_scale = kNaN; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale inf", [](auto& p) { p.softmax_scale = kInf; }, "softmax_scale",
       K::kInvalidArgument},
      // Null pointers.
      {"q null", [](auto& p) { p.q = nullptr; }, "q", K::kInvalidArgument},
      {"k_cache null", [](auto& p) { p.k_cache = nullptr; }, "k_cache", K::kInvalidArgument},
      // A null block_table is a non-paged cache: num_blocks must then be batch (4, not 100)
      // and max_blocks_per_seq 1.
      {"block_table null with 100 blocks",
       [](auto& p) { p.block_table = nullptr, p.max_blocks_per_seq = 1; }, "num_blocks",
       K::kInvalidArgument},
      {"block_table null with 32 columns",
       [](auto& p) { p.block_table = nullptr, p.num_blocks = p.batch; }, "max_blocks_per_seq",
       K::kInvalidArgument},
      {"cache_seqlens null", [](auto& p) { p.cache_seqlens = nullptr; }, "cache_seqlens",
       K::kInvalidArgument},
      {"out null", [](auto& p) { p.out = nullptr; }, "out", K::kInvalidArgument},
      {"lse null", [](auto& p) { p.lse = nullptr; }, "lse", K::kInvalidArgument},
      {"metadata null", [](auto& p) { p.tile_scheduler_metadata = nullptr; },
       "tile_scheduler_metadata", K::kInvalidArgument},
      {"num_splits null", [](auto& p) { p.num_splits = nullptr; }, "num_splits",
       K::kInvalidArgument},
      {"workspace null", [](auto& p) { p.workspace = nullptr; }, "workspace", K::kInvalidArgument},
      // Misaligned pointers.
      {"q + 2 bytes", [](auto& p) { p.q = misalign(p.q, 2); }, "q", K::kUnsupported},
      {"q + 8 bytes", [](auto& p) { p.q = misalign(p.q, 8); }, "q", K::kUnsupported},
      {"k_cache + 8 bytes", [](auto& p) { p.k_cache = misalign(p.k_cache, 8); }, "k_cache",
       K::kUnsupported},
      {"out + 4 bytes", [](auto& p) { p.out = misalign(p.out, 4); }, "out", K::kUnsupported},
      {"block_table + 2 bytes", [](auto& p) { p.block_table = misalign(p.block_table, 2); },
       "block_table", K::kUnsupported},
      {"cache_seqlens + 1 byte", [](auto& p) { p.cache_seqlens = misalign(p.cache_seqlens, 1); },
       "cache_seqlens", K::kUnsupported},
      {"lse + 2 bytes", [](auto& p) { p.lse = misalign(p.lse, 2); }, "lse", K::kUnsupported},
      {"metadata + 4 bytes",
       [](auto& p) { p.tile_scheduler_metadata = misalign(p.tile_scheduler_metadata, 4); },
       "tile_scheduler_metadata", K::kUnsupported},
      {"num_splits + 2 bytes", [](auto& p) { p.num_splits = misalign(p.num_splits, 2); },
       "num_splits", K::kUnsupported},
      {"workspace + 8 bytes", [](auto& p) { p.workspace = misalign(p.workspace, 8); }, "workspace",
       K::kUnsupported},
      // Strides: sign, 16-byte row alignment, non-overlapping outputs, TMA limit.
      {"q_batch_stride 0", [](auto& p) { p.q_batch_stride = 0; }, "q_batch_stride",
       K::kInvalidArgument},
      {"q_seq_stride -8", [](auto& p) { p.q_seq_stride = -8; }, "q_seq_stride",
       K::kInvalidArgument},
      {"q_head_stride 580", [](auto& p) { p.q_head_stride = 580; }, "q_head_stride",
       K::kUnsupported},
      {"q_batch_stride 2^40", [](auto& p) { p.q_batch_stride = kTwoTo40; }, "q_batch_stride",
       K::kUnsupported},
      {"k_block_stride 0", [](auto& p) { p.k_block_stride = 0; }, "k_block_stride",
       K::kInvalidArgument},
      {"k_block_stride odd", [](auto& p) { p.k_block_stride += 1; }, "k_block_stride",
       K::kUnsupported},
      {"k_token_stride 577", [](auto& p) { p.k_token_stride = 577; }, "k_token_stride",
       K::kUnsupported},
      {"k_head_stride -576", [](auto& p) { p.k_head_stride = -576; }, "k_head_stride",
       K::kInvalidArgument},
      {"k_token_stride 2^39", [](auto& p) { p.k_token_stride = kTwoTo40 / 2; }, "k_token_stride",
       K::kUnsupported},
      {"block_table_batch_stride 0", [](auto& p) { p.block_table_batch_stride = 0; },
       "block_table_batch_stride", K::kInvalidArgument},
      {"out_batch_stride 0", [](auto& p) { p.out_batch_stride = 0; }, "out_batch_stride",
       K::kInvalidArgument},
      {"out_seq_stride 100", [](auto& p) { p.out_seq_stride = 100; }, "out_seq_stride",
       K::kInvalidArgument},
      {"out_head_stride 256 (rows overlap)", [](auto& p) { p.out_head_stride = 256; },
       "out_head_stride", K::kInvalidArgument},
      {"out_head_stride 516", [](auto& p) { p.out_head_stride = 516; }, "out_head_stride",
       K::kUnsupported},
      {"lse_batch_stride 0", [](auto& p) { p.lse_batch_stride = 0; }, "lse_batch_stride",
       K::kInvalidArgument},
      {"lse_head_stride 1 < s_q", [](auto& p) { p.lse_head_stride = 1; }, "lse_head_stride",
       K::kInvalidArgument},
      // Extents: valid strides that still reach beyond any allocation.
      {"k_cache spans > 2^48 bytes",
       [](auto& p) { p.k_block_stride = int64_t(1) << 38, p.num_blocks = 4096; }, "k_cache",
       K::kInvalidArgument},
      {"block_table spans > 2^48 bytes",
       [](auto& p) { p.block_table_batch_stride = int64_t(1) << 50; }, "block_table",
       K::kInvalidArgument},
      {"lse spans > 2^48 bytes", [](auto& p) { p.lse_head_stride = int64_t(1) << 47; }, "lse",
       K::kInvalidArgument},
      // The plan and the workspace.
      {"num_parts 0", [](auto& p) { p.num_parts = 0; }, "num_parts", K::kInvalidArgument},
      {"workspace_bytes 0", [](auto& p) { p.workspace_bytes = 0; }, "workspace_bytes",
       K::kInvalidArgument},
      {"workspace_bytes one short", [](auto& p) { p.workspace_bytes -= 1; }, "workspace_bytes",
       K::kInvalidArgument},
      {"more parts than the workspace holds", [](auto& p) { p.num_parts = 1000; },
       "workspace_bytes", K::kInvalidArgument},
  };
  return table;
}

class ValidateDenseDecodeRejects : public ::testing::TestWithParam<Mutation> {};

TEST_P(ValidateDenseDecodeRejects, NamesTheArgument) {
  const Mutation& mutation = GetParam();
  DenseDecodeParams p = valid_params();
  mutation.mutate(p);
  try {
    validate_dense_decode(p);
    FAIL() << mutation.description << ": accepted";
  } catch (const Error& e) {
    expect_error_names(e, mutation.description, mutation.argument, "dense_decode: ");
    EXPECT_EQ(e.kind(), mutation.kind) << mutation.description << ": " << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Mutations, ValidateDenseDecodeRejects, ::testing::ValuesIn(mutations()),
                         [](const auto& info) {
                           return test_name(info.param.description, info.index);
                         });

TEST(ValidateDenseDecode, MessagesSayWhatWasExpectedAndGot) {
  const auto message = [](const std::function<void(DenseDecodeParams&)>& mutate) {
    DenseDecodeParams p = valid_params();
    mutate(p);
    try {
      validate_dense_decode(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(message([](auto& p) { p.head_dim_qk = 320; }),
            "dense_decode: head_dim_qk must be 576 or 512, got 320");
  EXPECT_EQ(message([](auto& p) { p.page_block_size = 16; }), "(accepted)");
  EXPECT_NE(message([](auto& p) { p.q_head_stride = 580; }).find("got 580"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.q = nullptr; }).find("q must be a non-null"),
            std::string::npos);
}

}  // namespace
}  // namespace flashmla
