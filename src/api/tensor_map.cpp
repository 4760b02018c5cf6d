#include "api/tensor_map.h"

#include <mutex>
#include <string>

#include <cuda_runtime_api.h>

#include "api/checks.h"

namespace flashmla::detail {

namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_tiled() {
  static EncodeTiled fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000,
                                                cudaEnableDefault, &status),
               "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
    if (status == cudaDriverEntryPointSuccess) fn = reinterpret_cast<EncodeTiled>(ptr);
  });
  if (fn == nullptr) {
    throw Error(Error::Kind::kCuda, "", "cuTensorMapEncodeTiled is not available from the driver");
  }
  return fn;
}

}  // namespace

CUtensorMap make_tensor_map_4d_16bit(const void* base, const uint64_t (&dims)[4],
                                     const uint64_t (&strides_bytes)[3],
                                     const uint32_t (&box_dims)[4], const char* argument) {
  CUtensorMap map{};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult result = encode_tiled()(
      &map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, const_cast<void*>(base), dims, strides_bytes,
      box_dims, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    throw Error(Error::Kind::kInvalidArgument, argument,
                std::string("cuTensorMapEncodeTiled rejected ") + argument + " (error " +
                    std::to_string(int(result)) +
                    "): its base must be 16-byte aligned and its strides multiples of 16 bytes");
  }
  return map;
}

}  // namespace flashmla::detail
