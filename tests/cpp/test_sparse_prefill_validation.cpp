// validate_sparse_prefill: accepts valid params (fake but aligned pointers: it never reads
// them), and rejects each bad field with a flashmla::Error that names it.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "flashmla/sparse_prefill.h"
#include "validation_helpers.h"

namespace flashmla {
namespace {

using testing::expect_error_names;
using testing::fake_pointer;
using testing::misalign;

void set_dense_strides(SparsePrefillParams& p) {
  p.q_head_stride = p.head_dim_qk;
  p.q_seq_stride = int64_t(p.num_heads_q) * p.q_head_stride;
  p.kv_token_stride = p.head_dim_qk;
  p.indices_seq_stride = p.topk;
  p.out_head_stride = p.head_dim_v;
  p.out_seq_stride = int64_t(p.num_heads_q) * p.out_head_stride;
  p.max_logits_seq_stride = p.num_heads_q;
  p.lse_seq_stride = p.num_heads_q;
}

// V3.2-like prefill: h_q 128, d_qk 576, s_q 4096, top-k 2048 over 128K tokens.
SparsePrefillParams valid_params() {
  SparsePrefillParams p;
  p.seqlen_q = 4096;
  p.num_heads_q = 128;
  p.head_dim_qk = 576;
  p.head_dim_v = 512;
  p.softmax_scale = 1.f / 24.f;
  p.q = fake_pointer<const void>(0x7f0000000000);
  p.kv = fake_pointer<const void>(0x7f1000000000);
  p.num_kv_tokens = 131072;
  p.indices = fake_pointer<const int32_t>(0x7f2000000000);
  p.topk = 2048;
  p.out = fake_pointer<void>(0x7f3000000000);
  p.max_logits = fake_pointer<float>(0x7f4000000000);
  p.lse = fake_pointer<float>(0x7f4000100000);
  set_dense_strides(p);
  return p;
}

TEST(ValidateSparsePrefill, AcceptsValidParams) {
  EXPECT_NO_THROW(validate_sparse_prefill(valid_params()));
}

struct Variant {
  const char* name;
  std::function<void(SparsePrefillParams&)> change;  // applied before the strides are set
};

TEST(ValidateSparsePrefill, AcceptsSupportedVariants) {
  const std::vector<Variant> variants = {
      {"d_qk 512", [](auto& p) { p.head_dim_qk = 512; }},
      {"s_q 1", [](auto& p) { p.seqlen_q = 1; }},
      {"s_q 70000", [](auto& p) { p.seqlen_q = 70000; }},
      {"s_q 2^31 - 1",
       [](auto& p) {
         p.seqlen_q = std::numeric_limits<int>::max(), p.num_heads_q = 1, p.topk = 8;
       }},
      {"h_q 1", [](auto& p) { p.num_heads_q = 1; }},
      {"h_q 3", [](auto& p) { p.num_heads_q = 3; }},
      {"h_q 100", [](auto& p) { p.num_heads_q = 100; }},
      {"s_kv 1", [](auto& p) { p.num_kv_tokens = 1; }},
      {"s_kv 2^31 - 1", [](auto& p) { p.num_kv_tokens = std::numeric_limits<int32_t>::max(); }},
      {"topk 1", [](auto& p) { p.topk = 1; }},
      {"topk 100", [](auto& p) { p.topk = 100; }},
      {"topk 8192", [](auto& p) { p.topk = 8192; }},
      {"topk past s_kv", [](auto& p) { p.topk = 2048, p.num_kv_tokens = 32; }},
      {"topk_length", [](auto& p) { p.topk_length = fake_pointer<const int32_t>(0x7f5000000000); }},
      {"attn_sink", [](auto& p) { p.attn_sink = fake_pointer<const float>(0x7f5000100000); }},
  };
  for (const Variant& variant : variants) {
    SparsePrefillParams p = valid_params();
    variant.change(p);
    set_dense_strides(p);
    EXPECT_NO_THROW(validate_sparse_prefill(p)) << variant.name;
  }
}

TEST(ValidateSparsePrefill, AcceptsPaddedAndPermutedStrides) {
  SparsePrefillParams p = valid_params();
  p.q_head_stride += 64;
  p.q_seq_stride = p.num_heads_q * p.q_head_stride + 8;
  p.kv_token_stride = 656;
  p.indices_seq_stride = p.topk + 3;
  p.out_head_stride = 576;
  p.out_seq_stride = p.num_heads_q * p.out_head_stride + 16;
  p.max_logits_seq_stride = p.num_heads_q + 1;
  p.lse_seq_stride = p.num_heads_q + 5;
  EXPECT_NO_THROW(validate_sparse_prefill(p));

  // Head-major q and out ([h_q, s_q, d]): the strides need not nest in the seq-major order.
  SparsePrefillParams head_major = valid_params();
  head_major.q_seq_stride = head_major.head_dim_qk;
  head_major.q_head_stride = int64_t(head_major.seqlen_q) * head_major.head_dim_qk;
  head_major.out_seq_stride = head_major.head_dim_v;
  head_major.out_head_stride = int64_t(head_major.seqlen_q) * head_major.head_dim_v;
  EXPECT_NO_THROW(validate_sparse_prefill(head_major));

  // With one query token the index row stride is never used.
  SparsePrefillParams one_token = valid_params();
  one_token.seqlen_q = 1;
  one_token.indices_seq_stride = 0;
  EXPECT_NO_THROW(validate_sparse_prefill(one_token));
}

using Mutation = testing::ParamsMutation<SparsePrefillParams>;

using K = Error::Kind;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const std::vector<Mutation>& mutations() {
  static const std::vector<Mutation> table = {
      // Null pointers.
      {"q null", [](auto& p) { p.q = nullptr; }, "q", K::kInvalidArgument},
      {"kv null", [](auto& p) { p.kv = nullptr; }, "kv", K::kInvalidArgument},
      {"indices null", [](auto& p) { p.indices = nullptr; }, "indices", K::kInvalidArgument},
      {"out null", [](auto& p) { p.out = nullptr; }, "out", K::kInvalidArgument},
      {"max_logits null", [](auto& p) { p.max_logits = nullptr; }, "max_logits",
       K::kInvalidArgument},
      {"lse null", [](auto& p) { p.lse = nullptr; }, "lse", K::kInvalidArgument},
      // Sizes.
      {"seqlen_q 0", [](auto& p) { p.seqlen_q = 0; }, "seqlen_q", K::kInvalidArgument},
      {"seqlen_q -1", [](auto& p) { p.seqlen_q = -1; }, "seqlen_q", K::kInvalidArgument},
      {"num_heads_q 0", [](auto& p) { p.num_heads_q = 0; }, "num_heads_q", K::kInvalidArgument},
      {"num_heads_q -64", [](auto& p) { p.num_heads_q = -64; }, "num_heads_q", K::kInvalidArgument},
      {"num_heads_q 129", [](auto& p) { p.num_heads_q = 129; }, "num_heads_q", std::nullopt},
      {"num_heads_q 256", [](auto& p) { p.num_heads_q = 256; }, "num_heads_q", std::nullopt},
      {"head_dim_qk 0", [](auto& p) { p.head_dim_qk = 0; }, "head_dim_qk", std::nullopt},
      {"head_dim_qk 320", [](auto& p) { p.head_dim_qk = 320; }, "head_dim_qk", std::nullopt},
      {"head_dim_qk 640", [](auto& p) { p.head_dim_qk = 640; }, "head_dim_qk", std::nullopt},
      {"head_dim_v 256", [](auto& p) { p.head_dim_v = 256; }, "head_dim_v", std::nullopt},
      {"head_dim_v 576", [](auto& p) { p.head_dim_v = 576; }, "head_dim_v", std::nullopt},
      {"softmax_scale 0", [](auto& p) { p.softmax_scale = 0.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale -1", [](auto& p) { p.softmax_scale = -1.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale NaN", [](auto& p) { p.softmax_scale = kNaN; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale inf", [](auto& p) { p.softmax_scale = kInf; }, "softmax_scale",
       K::kInvalidArgument},
      {"num_kv_tokens 0", [](auto& p) { p.num_kv_tokens = 0; }, "num_kv_tokens",
       K::kInvalidArgument},
      {"num_kv_tokens -5", [](auto& p) { p.num_kv_tokens = -5; }, "num_kv_tokens",
       K::kInvalidArgument},
      {"num_kv_tokens 2^31", [](auto& p) { p.num_kv_tokens = int64_t(1) << 31; }, "num_kv_tokens",
       std::nullopt},
      {"topk 0", [](auto& p) { p.topk = 0; }, "topk", K::kInvalidArgument},
      {"topk -2048", [](auto& p) { p.topk = -2048; }, "topk", K::kInvalidArgument},
      // Strides: too small, negative, not a multiple of 8 elements.
      {"q_seq_stride 0", [](auto& p) { p.q_seq_stride = 0; }, "q_seq_stride", K::kInvalidArgument},
      {"q_seq_stride -576", [](auto& p) { p.q_seq_stride = -576; }, "q_seq_stride",
       K::kInvalidArgument},
      {"q_seq_stride odd", [](auto& p) { p.q_seq_stride += 1; }, "q_seq_stride", K::kUnsupported},
      {"q_head_stride 0", [](auto& p) { p.q_head_stride = 0; }, "q_head_stride",
       K::kInvalidArgument},
      {"q_head_stride + 4", [](auto& p) { p.q_head_stride += 4; }, "q_head_stride",
       K::kUnsupported},
      {"kv_token_stride 512 for d_qk 576", [](auto& p) { p.kv_token_stride = 512; },
       "kv_token_stride", K::kInvalidArgument},
      {"kv_token_stride 0", [](auto& p) { p.kv_token_stride = 0; }, "kv_token_stride",
       K::kInvalidArgument},
      {"kv_token_stride 580", [](auto& p) { p.kv_token_stride = 580; }, "kv_token_stride",
       K::kUnsupported},
      {"indices_seq_stride below topk", [](auto& p) { p.indices_seq_stride = p.topk - 1; },
       "indices_seq_stride", K::kInvalidArgument},
      {"indices_seq_stride 0", [](auto& p) { p.indices_seq_stride = 0; }, "indices_seq_stride",
       K::kInvalidArgument},
      {"indices_seq_stride -1 with s_q 1",
       [](auto& p) { p.seqlen_q = 1, p.indices_seq_stride = -1; }, "indices_seq_stride",
       K::kInvalidArgument},
      {"out_seq_stride 0", [](auto& p) { p.out_seq_stride = 0; }, "out_seq_stride",
       K::kInvalidArgument},
      {"out_seq_stride below d_v", [](auto& p) { p.out_seq_stride = 504; }, "out_seq_stride",
       K::kInvalidArgument},
      {"out_seq_stride + 2", [](auto& p) { p.out_seq_stride += 2; }, "out_seq_stride",
       K::kUnsupported},
      {"out_head_stride below d_v", [](auto& p) { p.out_head_stride = 256; }, "out_head_stride",
       K::kInvalidArgument},
      {"out_head_stride 516", [](auto& p) { p.out_head_stride = 516; }, "out_head_stride",
       K::kUnsupported},
      {"max_logits_seq_stride below h_q", [](auto& p) { p.max_logits_seq_stride = 127; },
       "max_logits_seq_stride", K::kInvalidArgument},
      {"max_logits_seq_stride 0", [](auto& p) { p.max_logits_seq_stride = 0; },
       "max_logits_seq_stride", K::kInvalidArgument},
      {"lse_seq_stride below h_q", [](auto& p) { p.lse_seq_stride = 64; }, "lse_seq_stride",
       K::kInvalidArgument},
      {"lse_seq_stride -128", [](auto& p) { p.lse_seq_stride = -128; }, "lse_seq_stride",
       K::kInvalidArgument},
      // Alignment.
      {"q + 2 bytes", [](auto& p) { p.q = misalign(p.q, 2); }, "q", K::kUnsupported},
      {"q + 8 bytes", [](auto& p) { p.q = misalign(p.q, 8); }, "q", K::kUnsupported},
      {"kv + 8 bytes", [](auto& p) { p.kv = misalign(p.kv, 8); }, "kv", K::kUnsupported},
      {"out + 4 bytes", [](auto& p) { p.out = misalign(p.out, 4); }, "out", K::kUnsupported},
      {"indices + 2 bytes", [](auto& p) { p.indices = misalign(p.indices, 2); }, "indices",
       K::kUnsupported},
      {"topk_length + 1 byte",
       [](auto& p) { p.topk_length = misalign(fake_pointer<const int32_t>(0x7f5000000000), 1); },
       "topk_length", K::kUnsupported},
      {"attn_sink + 2 bytes",
       [](auto& p) { p.attn_sink = misalign(fake_pointer<const float>(0x7f5000100000), 2); },
       "attn_sink", K::kUnsupported},
      {"max_logits + 2 bytes", [](auto& p) { p.max_logits = misalign(p.max_logits, 2); },
       "max_logits", K::kUnsupported},
      {"lse + 1 byte", [](auto& p) { p.lse = misalign(p.lse, 1); }, "lse", K::kUnsupported},
      // Extents past 2^48 bytes (offsets would come close to int64 overflow).
      {"q_seq_stride 2^46", [](auto& p) { p.q_seq_stride = int64_t(1) << 46; }, "q",
       K::kInvalidArgument},
      {"q_head_stride 2^62", [](auto& p) { p.q_head_stride = int64_t(1) << 62; }, "q",
       K::kInvalidArgument},
      {"kv_token_stride 2^40", [](auto& p) { p.kv_token_stride = int64_t(1) << 40; }, "kv",
       K::kInvalidArgument},
      {"indices_seq_stride 2^40", [](auto& p) { p.indices_seq_stride = int64_t(1) << 40; },
       "indices", K::kInvalidArgument},
      {"out_seq_stride 2^62", [](auto& p) { p.out_seq_stride = int64_t(1) << 62; }, "out",
       K::kInvalidArgument},
      {"out_head_stride 2^45", [](auto& p) { p.out_head_stride = int64_t(1) << 45; }, "out",
       K::kInvalidArgument},
      {"max_logits_seq_stride 2^40", [](auto& p) { p.max_logits_seq_stride = int64_t(1) << 40; },
       "max_logits", K::kInvalidArgument},
      {"lse_seq_stride 2^62", [](auto& p) { p.lse_seq_stride = int64_t(1) << 62; }, "lse",
       K::kInvalidArgument},
  };
  return table;
}

class ValidateSparsePrefillRejects : public ::testing::TestWithParam<Mutation> {};

TEST_P(ValidateSparsePrefillRejects, NamesTheArgument) {
  testing::expect_rejected(GetParam(), valid_params(), validate_sparse_prefill, "sparse_prefill: ");
}

// Test names say which argument each case covers: <argument>__<what is wrong>.
INSTANTIATE_TEST_SUITE_P(Mutations, ValidateSparsePrefillRejects, ::testing::ValuesIn(mutations()),
                         [](const auto& info) {
                           return testing::mutation_test_name(info.param, info.index);
                         });

}  // namespace
}  // namespace flashmla
