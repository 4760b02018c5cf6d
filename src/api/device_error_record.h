// Host-side access to the device error record for the API entry points, and the device-side
// function kernels call to record an error (first one wins).
#pragma once

#include <cuda_runtime_api.h>

#include "flashmla/device_errors.h"

namespace flashmla::detail {

// The current device's record (cached per device).
DeviceErrorRecord* device_error_record_address();

// Whether `stream` is being captured into a CUDA graph.
bool stream_is_capturing(cudaStream_t stream);

// Synchronises `stream`; if the record holds an error, clears it and throws Error naming the
// argument (the checked mode).
void throw_if_device_error(cudaStream_t stream);

}  // namespace flashmla::detail

#if defined(__CUDACC__)
namespace flashmla {

// Records an error unless one is already recorded. The fields other than `kind` are written by
// the thread that claimed the record; readers see them once the kernel has finished.
__device__ __forceinline__ void record_device_error(DeviceErrorRecord* record, DeviceErrorKind kind,
                                                    DeviceErrorOperation operation, int batch_index,
                                                    int position, int64_t value, int64_t limit) {
  if (record == nullptr) return;
  int32_t* kind_word = reinterpret_cast<int32_t*>(&record->kind);
  if (atomicCAS(kind_word, 0, int32_t(kind)) != 0) return;
  record->operation = operation;
  record->batch_index = batch_index;
  record->position = position;
  record->value = value;
  record->limit = limit;
}

}  // namespace flashmla
#endif
