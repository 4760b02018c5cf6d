#include "kernels/sm90/sparse_prefill/dispatch.h"
#include "kernels/sm90/sparse_prefill/launch.cuh"

namespace flashmla::sm90 {

void sparse_prefill_512(const SparsePrefillKernelParams& params, cudaStream_t stream) {
  launch_sparse_prefill_kernel<512>(params, stream);
}

}  // namespace flashmla::sm90
