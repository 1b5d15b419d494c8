#include "engine/cuda/runtime.h"

#include "engine/cuda/cuda_check.h"

namespace r1::cuda {
namespace {

void* cuda_allocate(size_t nbytes, Device d) {
  R1_CUDA_CHECK(cudaSetDevice(d.index));
  void* p = nullptr;
  if (nbytes) R1_CUDA_CHECK(cudaMalloc(&p, nbytes));
  return p;
}
void cuda_deallocate(void* p, size_t, Device d) {
  if (!p) return;
  cudaSetDevice(d.index);
  cudaFree(p);
}
void cuda_copy(void* dst, Device, const void* src, Device, size_t n) {
  R1_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDefault));
}
void cuda_synchronize(Device d) {
  R1_CUDA_CHECK(cudaSetDevice(d.index));
  R1_CUDA_CHECK(cudaDeviceSynchronize());
}
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace

DeviceRuntime make_runtime() {
  return {cuda_allocate, cuda_deallocate, cuda_copy, cuda_synchronize, cuda_device_count};
}

}  // namespace r1::cuda
