// opt_in_dynamic_smem (launch.cuh): cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per
// (kernel, device, size that grew), not once per launch.
#include <map>
#include <mutex>
#include <utility>

#include "engine/cuda/cuda_check.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {

void opt_in_dynamic_smem(const void* kernel, int bytes) {
  if (bytes <= 48 * 1024) return;  // within the default limit: nothing to opt into
  int dev = 0;
  R1_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> set;  // (kernel, device) -> bytes allowed
  std::lock_guard<std::mutex> lock(mu);
  int& allowed = set[{kernel, dev}];
  if (bytes <= allowed) return;
  R1_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  allowed = bytes;
}

}  // namespace r1::cuda
