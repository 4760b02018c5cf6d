// Errors found on the GPU, in values the host never sees (lengths, block-table entries).
//
// Checking them on the host would need a synchronisation on every decoding step, so the
// kernels check them instead: they never read outside the cache, mark every affected sequence
// (its out and lse rows become NaN) and record the first error of the device in a small
// device-side record. The record stays set until it is cleared; read it on demand with
// read_device_error_record(), or turn on the checked mode (DenseDecodeParams::checked, or the
// environment variable FLASH_MLA_CHECKED=1), in which every call synchronises and throws
// flashmla::Error naming the argument, the batch index and the bad value.
#pragma once

#include <cstdint>
#include <string>
#include <cuda_runtime_api.h>

namespace flashmla {

enum class DeviceErrorKind : int32_t {
  kNone = 0,
  kNegativeSeqlen = 1,            // cache_seqlens[batch_index] = value < 0
  kSeqlenBeyondCapacity = 2,      // cache_seqlens[batch_index] = value > limit (table capacity)
  kBlockTableEntryOutOfRange = 3  // block_table[batch_index][position] = value not in [0, limit)
};

// Which operation recorded the error.
enum class DeviceErrorOperation : int32_t {
  kNone = 0,
  kDenseDecode = 1,
};

// The record as it lives in device memory (one per device). kind == kNone: no error.
struct DeviceErrorRecord {
  DeviceErrorKind kind = DeviceErrorKind::kNone;
  DeviceErrorOperation operation = DeviceErrorOperation::kNone;
  int32_t batch_index = -1;  // the sequence
  int32_t position = -1;     // block-table column for kBlockTableEntryOutOfRange, else -1
  int64_t value = 0;         // the bad value
  int64_t limit = 0;         // capacity (kSeqlenBeyondCapacity) or num_blocks (block table)
};
static_assert(sizeof(DeviceErrorRecord) == 32);

// Copies the current device's record after the work queued on `stream` so far (synchronises
// `stream`); with `clear`, also resets it. Not allowed while `stream` is being captured.
DeviceErrorRecord read_device_error_record(bool clear, cudaStream_t stream);

// Resets the current device's record (stream-ordered, asynchronous; capturable).
void clear_device_error_record(cudaStream_t stream);

// The argument a kind of error concerns: "cache_seqlens" or "block_table" ("" for kNone).
const char* device_error_argument(DeviceErrorKind kind);

// One line, e.g. "dense_decode: block_table[3][17] = 9000 is outside [0, num_blocks = 4096)
// (sequence 3: out and lse set to NaN)"; "" for kNone.
std::string describe_device_error(const DeviceErrorRecord& record);

// Whether FLASH_MLA_CHECKED is set to a value other than "", "0", "false", "off" or "no" (any
// case of the words).
bool checked_mode_from_environment();

}  // namespace flashmla
