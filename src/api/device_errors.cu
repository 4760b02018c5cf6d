// The device error record (flashmla/device_errors.h): one per device, a __device__ variable
// of this translation unit. Kernels get its address through their params (no relocatable
// device code needed).
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <string>

#include "api/checks.h"
#include "api/device_error_record.h"
#include "flashmla/device_errors.h"

namespace flashmla {

namespace {

// Plain zero-initialised words (a __device__ variable cannot run DeviceErrorRecord's default
// member initialisers); all zero is "no error".
__device__ int64_t g_device_error_record[sizeof(DeviceErrorRecord) / sizeof(int64_t)];

constexpr int kMaxDevices = 64;

}  // namespace

namespace detail {

DeviceErrorRecord* device_error_record_address() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  static std::mutex mutex;
  static DeviceErrorRecord* addresses[kMaxDevices] = {};
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0 || device >= kMaxDevices) {
    throw Error(Error::Kind::kUnsupported, "", "device error record: device index out of range");
  }
  if (addresses[device] == nullptr) {
    void* address = nullptr;
    check_cuda(cudaGetSymbolAddress(&address, g_device_error_record),
               "cudaGetSymbolAddress(device error record)");
    addresses[device] = static_cast<DeviceErrorRecord*>(address);
  }
  return addresses[device];
}

bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

void throw_if_device_error(cudaStream_t stream) {
  const DeviceErrorRecord record = read_device_error_record(/*clear=*/true, stream);
  if (record.kind != DeviceErrorKind::kNone) {
    throw Error(Error::Kind::kInvalidArgument, device_error_argument(record.kind),
                describe_device_error(record));
  }
}

}  // namespace detail

DeviceErrorRecord read_device_error_record(bool clear, cudaStream_t stream) {
  DeviceErrorRecord* address = detail::device_error_record_address();
  if (detail::stream_is_capturing(stream)) {
    throw Error(Error::Kind::kInvalidArgument, "stream",
                "read_device_error_record: the stream is being captured into a CUDA graph; read "
                "the record after replaying the graph");
  }
  DeviceErrorRecord record;
  detail::check_cuda(
      cudaMemcpyAsync(&record, address, sizeof(record), cudaMemcpyDeviceToHost, stream),
      "cudaMemcpyAsync(device error record)");
  detail::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (clear && record.kind != DeviceErrorKind::kNone) clear_device_error_record(stream);
  return record;
}

void clear_device_error_record(cudaStream_t stream) {
  DeviceErrorRecord* address = detail::device_error_record_address();
  static_assert(int32_t(DeviceErrorKind::kNone) == 0);
  detail::check_cuda(cudaMemsetAsync(address, 0, sizeof(DeviceErrorRecord), stream),
                     "cudaMemsetAsync(device error record)");
}

const char* device_error_argument(DeviceErrorKind kind) {
  switch (kind) {
    case DeviceErrorKind::kNegativeSeqlen:
    case DeviceErrorKind::kSeqlenBeyondCapacity:
      return "cache_seqlens";
    case DeviceErrorKind::kBlockTableEntryOutOfRange:
      return "block_table";
    case DeviceErrorKind::kNone:
      break;
  }
  return "";
}

std::string describe_device_error(const DeviceErrorRecord& record) {
  const std::string op =
      record.operation == DeviceErrorOperation::kDenseDecode ? "dense_decode" : "flashmla";
  const std::string batch = std::to_string(record.batch_index);
  const std::string value = std::to_string(record.value);
  const std::string consequence = " (sequence " + batch + ": out and lse set to NaN)";
  switch (record.kind) {
    case DeviceErrorKind::kNone:
      return "";
    case DeviceErrorKind::kNegativeSeqlen:
      return op + ": cache_seqlens[" + batch + "] = " + value + " is negative" + consequence;
    case DeviceErrorKind::kSeqlenBeyondCapacity:
      return op + ": cache_seqlens[" + batch + "] = " + value +
             " exceeds the cache capacity of the sequence, " + std::to_string(record.limit) +
             " tokens (max_blocks_per_seq * page_block_size)" + consequence;
    case DeviceErrorKind::kBlockTableEntryOutOfRange:
      return op + ": block_table[" + batch + "][" + std::to_string(record.position) +
             "] = " + value + " is outside [0, num_blocks = " + std::to_string(record.limit) + ")" +
             consequence;
  }
  return op + ": unknown device error kind " + std::to_string(int32_t(record.kind));
}

bool checked_mode_from_environment() {
  const char* value = std::getenv("FLASH_MLA_CHECKED");
  if (value == nullptr) return false;
  std::string lower(value);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* off : {"", "0", "false", "off", "no"}) {
    if (lower == off) return false;
  }
  return true;
}

}  // namespace flashmla
