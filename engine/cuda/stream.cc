#include "engine/cuda/stream.h"

#include <array>
#include <atomic>
#include <utility>

namespace r1::cuda {

DeviceGuard::DeviceGuard(int device) {
  R1_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) R1_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  // A destructor cannot throw: a failure here leaves the device as it is.
  if (cudaGetDevice(&now) == cudaSuccess && now != prev_) (void)cudaSetDevice(prev_);
}

Stream::Stream(int device, int priority) : device_(device) {
  DeviceGuard g(device);
  R1_CUDA_CHECK(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, priority));
}

Stream::~Stream() {
  // cudaStreamDestroy returns at once; queued work still runs to completion.
  if (s_) (void)cudaStreamDestroy(s_);
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (s_) (void)cudaStreamDestroy(s_);
    s_ = std::exchange(o.s_, nullptr);
    device_ = o.device_;
  }
  return *this;
}

void Stream::synchronize() const { R1_CUDA_CHECK(cudaStreamSynchronize(s_)); }

bool Stream::query() const {
  const cudaError_t e = cudaStreamQuery(s_);
  if (e == cudaErrorNotReady) return false;
  R1_CUDA_CHECK(e);
  return true;
}

Event::Event(bool timing) {
  R1_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (e_) (void)cudaEventDestroy(e_);
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (e_) (void)cudaEventDestroy(e_);
    e_ = std::exchange(o.e_, nullptr);
  }
  return *this;
}

void Event::record(cudaStream_t s) { R1_CUDA_CHECK(cudaEventRecord(e_, s)); }
void Event::synchronize() const { R1_CUDA_CHECK(cudaEventSynchronize(e_)); }

bool Event::query() const {
  const cudaError_t e = cudaEventQuery(e_);
  if (e == cudaErrorNotReady) return false;
  R1_CUDA_CHECK(e);
  return true;
}

void Event::block(cudaStream_t s) const { R1_CUDA_CHECK(cudaStreamWaitEvent(s, e_, 0)); }

float Event::elapsed_ms(const Event& end) const {
  float ms = 0;
  R1_CUDA_CHECK(cudaEventElapsedTime(&ms, e_, end.e_));
  return ms;
}

namespace {

std::array<cudaStream_t, kMaxDevices>& current_streams() {
  thread_local std::array<cudaStream_t, kMaxDevices> streams = [] {
    std::array<cudaStream_t, kMaxDevices> a;
    a.fill(cudaStreamLegacy);
    return a;
  }();
  return streams;
}

void check_device(int device) {
  R1_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index {} out of range [0, {})",
           device, kMaxDevices);
}

}  // namespace

cudaStream_t current_stream(int device) {
  check_device(device);
  return current_streams()[static_cast<size_t>(device)];
}

void set_current_stream(int device, cudaStream_t s) {
  check_device(device);
  current_streams()[static_cast<size_t>(device)] = s;
}

StreamGuard::StreamGuard(int device, cudaStream_t s)
    : device_(device), prev_(current_stream(device)) {
  set_current_stream(device, s);
}

int sm_count(int device) {
  check_device(device);
  static std::array<std::atomic<int>, kMaxDevices> cache{};
  int n = cache[static_cast<size_t>(device)].load(std::memory_order_relaxed);
  if (n == 0) {
    R1_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[static_cast<size_t>(device)].store(n, std::memory_order_relaxed);
  }
  return n;
}

bool capturing(cudaStream_t s) {
  if (s == cudaStreamLegacy) return false;  // never captured (and the query would sync)
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  R1_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  return st != cudaStreamCaptureStatusNone;
}

}  // namespace r1::cuda
