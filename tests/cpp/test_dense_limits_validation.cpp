// Dense decode without FlashMLA's limits, the host side: any page_block_size >= 1, non-paged
// caches (block_table == nullptr), batch == 0, and the host functions of the device error
// record (flashmla/device_errors.h): messages, argument names, FLASH_MLA_CHECKED. No GPU needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "dense_decode_valid_params.h"
#include "flashmla/decode_schedule.h"
#include "flashmla/dense_decode.h"
#include "flashmla/device_errors.h"
#include "validation_helpers.h"

namespace flashmla {
namespace {

using testing::set_dense_strides;
using testing::valid_dense_decode_params;
using testing::valid_non_paged_dense_decode_params;
using K = Error::Kind;
using Mutation = testing::ParamsMutation<DenseDecodeParams>;

void validate(const DenseDecodeParams& p) {
  validate_dense_decode(p);
}

void expect_rejected(const Mutation& mutation, const DenseDecodeParams& valid) {
  testing::expect_rejected(mutation, valid, validate, "dense_decode: ");
}

// ---------------------------------------------------------------------------------------
// Page sizes.

TEST(DenseDecodeLimits, AcceptsEveryPageSizeFromOne) {
  for (int page : {1, 2, 3, 7, 16, 32, 53, 63, 64, 65, 96, 100, 128, 200, 256, 512, 1000, 4096}) {
    DenseDecodeParams p = valid_dense_decode_params();
    p.page_block_size = page;
    set_dense_strides(p);
    p.workspace_bytes = dense_decode_workspace_bytes(p);
    EXPECT_NO_THROW(validate_dense_decode(p)) << "page_block_size " << page;
  }
}

TEST(DenseDecodeLimits, PageSizeBelowOneIsStillRejected) {
  for (int page : {0, -1, -64}) {
    expect_rejected({"page_block_size < 1", [page](auto& p) { p.page_block_size = page; },
                     "page_block_size", K::kInvalidArgument},
                    valid_dense_decode_params());
  }
}

TEST(DenseDecodeLimits, OddPageSizeWithPaddedStrides) {
  // Page 53 with padded token and block strides (still multiples of 8 elements).
  DenseDecodeParams p = valid_dense_decode_params();
  p.page_block_size = 53;
  set_dense_strides(p);
  p.k_token_stride += 64;
  p.k_block_stride = 53 * p.k_token_stride + 8;
  p.block_table_batch_stride = 40;
  p.workspace_bytes = dense_decode_workspace_bytes(p);
  EXPECT_NO_THROW(validate_dense_decode(p));
}

// ---------------------------------------------------------------------------------------
// Non-paged caches.

TEST(DenseDecodeLimits, NonPagedAcceptsNullBlockTable) {
  for (int s_k_max : {1, 50, 64, 1000, 4100, 131072}) {
    EXPECT_NO_THROW(validate_dense_decode(valid_non_paged_dense_decode_params(s_k_max)))
        << "s_k_max " << s_k_max;
  }
  DenseDecodeParams one = valid_non_paged_dense_decode_params(300);
  one.batch = one.num_blocks = 1;
  one.workspace_bytes = dense_decode_workspace_bytes(one);
  EXPECT_NO_THROW(validate_dense_decode(one)) << "batch 1";
}

TEST(DenseDecodeLimits, NonPagedIgnoresBlockTableBatchStride) {
  for (int64_t stride : {int64_t(0), int64_t(-5), int64_t(1), int64_t(7), int64_t(1) << 50}) {
    DenseDecodeParams p = valid_non_paged_dense_decode_params(1000);
    p.block_table_batch_stride = stride;
    EXPECT_NO_THROW(validate_dense_decode(p)) << "block_table_batch_stride " << stride;
  }
}

TEST(DenseDecodeLimits, NonPagedWithPaddedStrides) {
  DenseDecodeParams p = valid_non_paged_dense_decode_params(4100);
  p.k_head_stride = 640;
  p.k_token_stride = 648;
  p.k_block_stride = 4100 * 648 + 8;
  EXPECT_NO_THROW(validate_dense_decode(p));
}

TEST(DenseDecodeLimits, NonPagedRejectsTableShapes) {
  const std::vector<Mutation> mutations = {
      {"num_blocks batch + 1", [](auto& p) { p.num_blocks = p.batch + 1; }, "num_blocks",
       K::kInvalidArgument},
      {"num_blocks batch - 1", [](auto& p) { p.num_blocks = p.batch - 1; }, "num_blocks",
       K::kInvalidArgument},
      {"num_blocks 100", [](auto& p) { p.num_blocks = 100; }, "num_blocks", K::kInvalidArgument},
      {"num_blocks 0", [](auto& p) { p.num_blocks = 0; }, "num_blocks", K::kInvalidArgument},
      {"max_blocks_per_seq 2", [](auto& p) { p.max_blocks_per_seq = 2; }, "max_blocks_per_seq",
       K::kInvalidArgument},
      {"max_blocks_per_seq 32", [](auto& p) { p.max_blocks_per_seq = 32; }, "max_blocks_per_seq",
       K::kInvalidArgument},
      {"max_blocks_per_seq 0", [](auto& p) { p.max_blocks_per_seq = 0; }, "max_blocks_per_seq",
       K::kInvalidArgument},
  };
  for (const Mutation& mutation : mutations) {
    SCOPED_TRACE(mutation.description);
    expect_rejected(mutation, valid_non_paged_dense_decode_params(1000));
  }
}

TEST(DenseDecodeLimits, NonPagedKeepsTheOtherChecks) {
  const std::vector<Mutation> mutations = {
      {"page 0", [](auto& p) { p.page_block_size = 0; }, "page_block_size", K::kInvalidArgument},
      {"k_cache null", [](auto& p) { p.k_cache = nullptr; }, "k_cache", K::kInvalidArgument},
      {"cache_seqlens null", [](auto& p) { p.cache_seqlens = nullptr; }, "cache_seqlens",
       K::kInvalidArgument},
      {"k_token_stride 577", [](auto& p) { p.k_token_stride = 577; }, "k_token_stride",
       K::kUnsupported},
      {"k_block_stride 0", [](auto& p) { p.k_block_stride = 0; }, "k_block_stride",
       K::kInvalidArgument},
      {"k_cache spans > 2^48 bytes", [](auto& p) { p.k_token_stride = int64_t(1) << 38; },
       "k_cache", K::kInvalidArgument},
      {"workspace_bytes 0", [](auto& p) { p.workspace_bytes = 0; }, "workspace_bytes",
       K::kInvalidArgument},
  };
  for (const Mutation& mutation : mutations) {
    SCOPED_TRACE(mutation.description);
    expect_rejected(mutation, valid_non_paged_dense_decode_params(1000));
  }
}

// ---------------------------------------------------------------------------------------
// batch == 0: only the scalar sizes are checked; pointers, strides, the table shape and the
// plan may be anything (a step with no sequences).

DenseDecodeParams empty_batch_params() {
  DenseDecodeParams p;  // every pointer null, every stride 0, no plan, no workspace
  p.dtype = ScalarType::kFloat16;
  p.batch = 0;
  p.seqlen_q = 1;
  p.num_heads_q = 128;
  p.num_heads_kv = 1;
  p.head_dim_qk = 576;
  p.head_dim_v = 512;
  p.page_block_size = 64;
  p.softmax_scale = 0.04f;
  return p;
}

TEST(DenseDecodeLimits, EmptyBatchWithNullPointersIsValid) {
  EXPECT_NO_THROW(validate_dense_decode(empty_batch_params()));
  // Shapes of a real (empty) call: table shape and strides set, pointers still null.
  DenseDecodeParams p = valid_dense_decode_params();
  p.batch = 0;
  p.q = nullptr;
  p.k_cache = nullptr;
  p.block_table = nullptr;
  p.cache_seqlens = nullptr;
  p.out = nullptr;
  p.lse = nullptr;
  p.tile_scheduler_metadata = nullptr;
  p.num_splits = nullptr;
  p.workspace = nullptr;
  p.workspace_bytes = 0;
  p.num_parts = 0;
  EXPECT_NO_THROW(validate_dense_decode(p));
  // Any page size, non-paged shapes too.
  for (int page : {1, 53, 4100}) {
    DenseDecodeParams q = empty_batch_params();
    q.page_block_size = page;
    EXPECT_NO_THROW(validate_dense_decode(q)) << "page " << page;
  }
}

TEST(DenseDecodeLimits, EmptyBatchStillChecksTheScalarSizes) {
  const std::vector<Mutation> mutations = {
      {"dtype 7", [](auto& p) { p.dtype = static_cast<ScalarType>(7); }, "dtype", K::kUnsupported},
      {"seqlen_q 0", [](auto& p) { p.seqlen_q = 0; }, "seqlen_q", K::kInvalidArgument},
      {"num_heads_q 0", [](auto& p) { p.num_heads_q = 0; }, "num_heads_q", K::kInvalidArgument},
      {"num_heads_kv 0", [](auto& p) { p.num_heads_kv = 0; }, "num_heads_kv", K::kInvalidArgument},
      {"h_q 15 over h_kv 2", [](auto& p) { p.num_heads_q = 15, p.num_heads_kv = 2; }, "num_heads_q",
       K::kInvalidArgument},
      {"head_dim_qk 320", [](auto& p) { p.head_dim_qk = 320; }, "head_dim_qk", K::kUnsupported},
      {"head_dim_v 256", [](auto& p) { p.head_dim_v = 256; }, "head_dim_v", K::kUnsupported},
      {"page 0", [](auto& p) { p.page_block_size = 0; }, "page_block_size", K::kInvalidArgument},
      {"softmax_scale 0", [](auto& p) { p.softmax_scale = 0.f; }, "softmax_scale",
       K::kInvalidArgument},
      {"softmax_scale NaN",
       [](auto& p) { p.softmax_scale = std::numeric_limits<float>::quiet_NaN(); }, "softmax_scale",
       K::kInvalidArgument},
  };
  for (const Mutation& mutation : mutations) {
    SCOPED_TRACE(mutation.description);
    expect_rejected(mutation, empty_batch_params());
  }
}

TEST(DenseDecodeLimits, NegativeBatchIsRejected) {
  for (int batch : {-1, -1000}) {
    expect_rejected(
        {"negative batch", [batch](auto& p) { p.batch = batch; }, "batch", K::kInvalidArgument},
        valid_dense_decode_params());
    expect_rejected({"negative batch, null pointers", [batch](auto& p) { p.batch = batch; },
                     "batch", K::kInvalidArgument},
                    empty_batch_params());
  }
}

TEST(DenseDecodeLimits, ScheduleAcceptsAnEmptyBatch) {
  for (int num_sms : {1, 132}) {
    const DecodeScheduleShape shape{0, 128, 1, num_sms};
    int num_parts = -1;
    EXPECT_NO_THROW(num_parts = decode_num_parts(shape)) << num_sms;
    EXPECT_GE(num_parts, 0) << num_sms;
    EXPECT_NO_THROW(decode_max_total_splits(shape)) << num_sms;
  }
}

TEST(DenseDecodeLimits, HostPlanAcceptsAnEmptyBatch) {
  const DecodeScheduleShape shape{0, 128, 1, 132};
  const int num_parts = decode_num_parts(shape);
  std::vector<int32_t> metadata(size_t(std::max(num_parts, 1)) * kDecodeMetadataInts, -7);
  std::vector<int32_t> num_splits(1, -7);
  EXPECT_NO_THROW(plan_decode_host(shape, /*cache_seqlens=*/nullptr, 64, num_parts, metadata.data(),
                                   num_splits.data()));
}

// ---------------------------------------------------------------------------------------
// The device error record's host functions.

DeviceErrorRecord record(DeviceErrorKind kind, int batch_index, int position, int64_t value,
                         int64_t limit) {
  DeviceErrorRecord r;
  r.kind = kind;
  r.operation = DeviceErrorOperation::kDenseDecode;
  r.batch_index = batch_index;
  r.position = position;
  r.value = value;
  r.limit = limit;
  return r;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(DeviceErrors, DefaultRecordIsNoError) {
  const DeviceErrorRecord r;
  EXPECT_EQ(r.kind, DeviceErrorKind::kNone);
  EXPECT_EQ(r.operation, DeviceErrorOperation::kNone);
  EXPECT_EQ(r.batch_index, -1);
  EXPECT_EQ(r.position, -1);
  EXPECT_EQ(describe_device_error(r), "");
}

TEST(DeviceErrors, ArgumentOfEveryKind) {
  const auto argument = [](DeviceErrorKind kind) {
    const char* name = device_error_argument(kind);
    return name == nullptr ? std::string("(null)") : std::string(name);
  };
  EXPECT_EQ(argument(DeviceErrorKind::kNone), "");
  EXPECT_EQ(argument(DeviceErrorKind::kNegativeSeqlen), "cache_seqlens");
  EXPECT_EQ(argument(DeviceErrorKind::kSeqlenBeyondCapacity), "cache_seqlens");
  EXPECT_EQ(argument(DeviceErrorKind::kBlockTableEntryOutOfRange), "block_table");
}

TEST(DeviceErrors, DescribesTheDocumentedExample) {
  // The header's example, up to the wording of the consequence after it.
  const std::string message =
      describe_device_error(record(DeviceErrorKind::kBlockTableEntryOutOfRange, 3, 17, 9000, 4096));
  const std::string prefix =
      "dense_decode: block_table[3][17] = 9000 is outside [0, num_blocks = 4096)";
  EXPECT_EQ(message.rfind(prefix, 0), 0u) << message;
  EXPECT_TRUE(contains(message, "sequence 3")) << message;
  EXPECT_TRUE(contains(message, "NaN")) << message;
}

TEST(DeviceErrors, DescribesEveryKind) {
  struct Expected {
    DeviceErrorRecord record;
    std::vector<std::string> parts;  // substrings of the one-line message
  };
  const std::vector<Expected> cases = {
      {record(DeviceErrorKind::kNegativeSeqlen, 2, -1, -5, 0),
       {"dense_decode", "cache_seqlens[2] = -5"}},
      {record(DeviceErrorKind::kNegativeSeqlen, 0, -1, std::numeric_limits<int32_t>::min(), 0),
       {"dense_decode", "cache_seqlens[0] = -2147483648"}},
      {record(DeviceErrorKind::kSeqlenBeyondCapacity, 1, -1, 5000, 4096),
       {"dense_decode", "cache_seqlens[1] = 5000", "4096"}},
      {record(DeviceErrorKind::kSeqlenBeyondCapacity, 7, -1, 51, 50),
       {"cache_seqlens[7] = 51", "50"}},
      {record(DeviceErrorKind::kBlockTableEntryOutOfRange, 1, 3, -1, 20),
       {"dense_decode", "block_table[1][3] = -1", "20", "sequence 1"}},
      {record(DeviceErrorKind::kBlockTableEntryOutOfRange, 12, 400, 2147483647, 512),
       {"block_table[12][400] = 2147483647", "512"}},
  };
  for (const Expected& expected : cases) {
    const std::string message = describe_device_error(expected.record);
    EXPECT_FALSE(message.empty()) << int(expected.record.kind);
    EXPECT_FALSE(contains(message, "\n")) << message;
    for (const std::string& part : expected.parts) {
      EXPECT_TRUE(contains(message, part)) << "\"" << message << "\" lacks \"" << part << "\"";
    }
  }
}

// Sets FLASH_MLA_CHECKED for the scope, then restores what was there.
class ScopedCheckedEnv {
 public:
  explicit ScopedCheckedEnv(const char* value) {
    const char* old = std::getenv(kName);
    if (old != nullptr) old_ = old;
    set(value);
  }
  ~ScopedCheckedEnv() { set(old_ ? old_->c_str() : nullptr); }
  ScopedCheckedEnv(const ScopedCheckedEnv&) = delete;
  ScopedCheckedEnv& operator=(const ScopedCheckedEnv&) = delete;

 private:
  static void set(const char* value) {
    if (value == nullptr) {
      unsetenv(kName);
    } else {
      setenv(kName, value, 1);
    }
  }
  static constexpr const char* kName = "FLASH_MLA_CHECKED";
  std::optional<std::string> old_;
};

TEST(DeviceErrors, CheckedModeFromEnvironment) {
  {
    ScopedCheckedEnv env(nullptr);
    EXPECT_FALSE(checked_mode_from_environment()) << "unset";
  }
  for (const char* off : {"", "0", "false", "off"}) {
    ScopedCheckedEnv env(off);
    EXPECT_FALSE(checked_mode_from_environment()) << "\"" << off << "\"";
  }
  for (const char* on : {"1", "true", "on", "yes", "2"}) {
    ScopedCheckedEnv env(on);
    EXPECT_TRUE(checked_mode_from_environment()) << "\"" << on << "\"";
  }
  {
    // Read at every call: unsetting turns it off again.
    ScopedCheckedEnv on("1");
    EXPECT_TRUE(checked_mode_from_environment());
    unsetenv("FLASH_MLA_CHECKED");
    EXPECT_FALSE(checked_mode_from_environment());
  }
}

}  // namespace
}  // namespace flashmla
