// flash_mla._C.read_error_record / clear_error_record: the device error record of one CUDA
// device, ordered on PyTorch's current stream of that device.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "flashmla/device_errors.h"
#include "ops.h"
#include "tensor_checks.h"

namespace flashmla::torch_binding {

namespace {

constexpr const char* kRead = "read_error_record";

}  // namespace

std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, std::string> read_error_record(
    int64_t device, bool clear) {
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const DeviceErrorRecord record =
      translate_errors(kRead, [&] { return read_device_error_record(clear, stream); });
  return {int64_t(record.kind),
          int64_t(record.operation),
          int64_t(record.batch_index),
          int64_t(record.position),
          record.value,
          record.limit,
          describe_device_error(record)};
}

void clear_error_record(int64_t device) {
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  translate_errors("clear_error_record", [&] { clear_device_error_record(stream); });
}

}  // namespace flashmla::torch_binding
