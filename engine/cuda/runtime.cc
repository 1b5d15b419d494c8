#include "engine/cuda/runtime.h"

#include <fmt/format.h>

#include <memory>

#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/error.h"

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
  R1_CHECK(!capturing(s),
           "a {}-byte copy between host and cuda:{} inside a CUDA graph capture: a captured "
           "step must not read device data on the host nor upload host data "
           "(engine/step_graph.h)", n, dev);
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

// A captured step (engine/step_graph.h): its own non-blocking stream (the legacy stream
// cannot be captured), the executable graph and the allocator's pool for its tensors. Replays
// are bracketed by events so that they sit in the caller's stream order like eager work.
struct CudaStepGraph {
  explicit CudaStepGraph(int d) : device(d), stream(d) {}
  int device;
  Stream stream;
  Event before, after;
  cudaGraphExec_t exec = nullptr;
  int64_t pool = 0;
};

void* cuda_graph_capture(Device d, const std::function<void()>& fn, void* share) {
  DeviceGuard dg(d.index);
  auto g = std::make_unique<CudaStepGraph>(d.index);
  const cudaStream_t s = g->stream.handle();
  // The recorded work reads what the caller's stream produced: capture after it (the wait is
  // queued before the capture begins; a capture cannot wait on an outside event).
  g->before.record(current_stream(d.index));
  g->before.block(s);
  CachingAllocator& alloc = CachingAllocator::instance();
  g->pool = alloc.begin_graph_pool(d.index, s,
                                   share ? static_cast<CudaStepGraph*>(share)->pool : 0);
  cudaGraph_t graph = nullptr;
  auto abandon = [&] {
    alloc.end_graph_pool(d.index);
    if (graph) (void)cudaGraphDestroy(graph);
    alloc.release_graph_pool(g->pool, s);
    (void)cudaGetLastError();
  };
  // Relaxed: the allocator may cudaMalloc while the pool fills; host syncs on the capturing
  // stream still fail, and host copies are refused by cuda_copy above.
  // A failed begin must not leave the pool open (every later free would go into it).
  const cudaError_t be = cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
  if (be != cudaSuccess) {
    abandon();
    throw Error(fmt::format("CUDA graph capture on cuda:{} could not begin: {}", d.index,
                            cudaGetErrorString(be)));
  }
  try {
    StreamGuard sg(d.index, s);
    fn();
  } catch (...) {
    (void)cudaStreamEndCapture(s, &graph);
    abandon();
    throw;
  }
  const cudaError_t e = cudaStreamEndCapture(s, &graph);
  if (e != cudaSuccess) {
    abandon();
    throw Error(fmt::format("CUDA graph capture on cuda:{} failed: {} (work on another stream "
                            "or a synchronization inside the captured step?)",
                            d.index, cudaGetErrorString(e)));
  }
  alloc.end_graph_pool(d.index);
  const cudaError_t ie = cudaGraphInstantiate(&g->exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  graph = nullptr;
  if (ie != cudaSuccess) {
    alloc.release_graph_pool(g->pool, s);
    (void)cudaGetLastError();
    throw Error(fmt::format("CUDA graph instantiation on cuda:{} failed: {}", d.index,
                            cudaGetErrorString(ie)));
  }
  return g.release();
}

void cuda_graph_replay(void* handle) {
  auto* g = static_cast<CudaStepGraph*>(handle);
  DeviceGuard dg(g->device);
  const cudaStream_t cur = current_stream(g->device), s = g->stream.handle();
  g->before.record(cur);
  g->before.block(s);
  R1_CUDA_CHECK(cudaGraphLaunch(g->exec, s));
  g->after.record(s);
  g->after.block(cur);
}

void cuda_graph_destroy(void* handle) {
  std::unique_ptr<CudaStepGraph> g(static_cast<CudaStepGraph*>(handle));
  DeviceGuard dg(g->device);
  if (g->exec) (void)cudaGraphExecDestroy(g->exec);
  try {  // called from destructors: a failure here is reported, not thrown
    CachingAllocator::instance().release_graph_pool(g->pool, g->stream.handle());
  } catch (const std::exception& e) {
    fmt::print(stderr, "r1: releasing a CUDA graph's memory pool: {}\n", e.what());
  }
}

}  // namespace

DeviceRuntime make_runtime() {
  return {cuda_allocate,      cuda_deallocate,   cuda_copy,         cuda_synchronize,
          cuda_device_count,  cuda_graph_capture, cuda_graph_replay, cuda_graph_destroy};
}

}  // namespace r1::cuda
