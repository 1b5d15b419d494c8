#include "engine/cuda/runtime.h"

#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"

namespace r1::cuda {
namespace {

// From the pool, ordered on the calling thread's current stream of the device.
void* cuda_allocate(size_t nbytes, Device d) {
  return CachingAllocator::instance().allocate(nbytes, d.index, current_stream(d.index));
}

void cuda_deallocate(void* p, size_t, Device) { CachingAllocator::instance().deallocate(p); }

// Queued on the current stream of the CUDA side (the destination's when both are), so it is
// ordered after the kernels that produced the source; then that stream is synchronized,
// because the engine's copy_bytes returns with the bytes in place: a host destination is
// read right after, and a host source may be freed or reused right after.
void cuda_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  const int dev = dst_dev.is_cuda() ? dst_dev.index : src_dev.index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  R1_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s));
  R1_CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_synchronize(Device d) {
  DeviceGuard g(d.index);
  R1_CUDA_CHECK(cudaDeviceSynchronize());
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the "no device" error so later checks do not see it
    return 0;
  }
  return n;
}

}  // namespace

DeviceRuntime make_runtime() {
  return {cuda_allocate, cuda_deallocate, cuda_copy, cuda_synchronize, cuda_device_count};
}

}  // namespace r1::cuda
