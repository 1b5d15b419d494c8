// CUDA streams and events (RAII), the current device guard, and the per-thread current
// stream per device that every r1 kernel launch and allocation uses.
//
// The default current stream is the LEGACY default stream (cudaStreamLegacy), not the
// per-thread default stream. Why: the caching allocator keys its pools by stream handle, so
// a handle must name one stream. cudaStreamPerThread is one pseudo-handle that names a
// different stream in each host thread: a block freed by thread A "on cudaStreamPerThread"
// would be handed at once to thread B "on the same stream" with no ordering between the two.
// The legacy stream is one stream for all threads of the process; it also serializes with
// every blocking stream, which is the safe default for code that has not chosen a stream.
// Concurrency comes from explicit Streams (created non-blocking: they do not wait on the
// legacy stream), set current with StreamGuard, and ordered with Events.
#pragma once
#include <cuda_runtime.h>

#include "engine/cuda/cuda_check.h"

namespace r1::cuda {

inline constexpr int kMaxDevices = 64;

// Sets the current device for its lifetime and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// An owned, non-blocking stream on one device.
class Stream {
 public:
  explicit Stream(int device = 0, int priority = 0);
  ~Stream();
  Stream(Stream&& o) noexcept : s_(o.s_), device_(o.device_) { o.s_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t handle() const { return s_; }
  int device() const { return device_; }
  void synchronize() const;
  bool query() const;  // true when all work queued so far has completed

 private:
  cudaStream_t s_ = nullptr;
  int device_ = 0;
};

// An owned event. Timing is off unless asked for: a timing event costs more to record.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t handle() const { return e_; }
  void record(cudaStream_t s);
  void synchronize() const;
  bool query() const;                // true when the recorded work has completed
  void block(cudaStream_t s) const;  // work queued on s after this waits for the event
  float elapsed_ms(const Event& end) const;  // both timing events, both completed

 private:
  cudaEvent_t e_ = nullptr;
};

// The calling thread's current stream on `device` (cudaStreamLegacy unless set).
cudaStream_t current_stream(int device);
void set_current_stream(int device, cudaStream_t s);

// Makes `s` the current stream of `device` for its lifetime (this thread only).
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s) : StreamGuard(s.device(), s.handle()) {}
  StreamGuard(int device, cudaStream_t s);
  ~StreamGuard() { set_current_stream(device_, prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t prev_;
};

// True while `s` is being captured into a CUDA graph (engine/step_graph.h). Kernels whose
// host wrappers read indices back to check them skip that check then (a capture cannot read
// device data); the step's eager run before its capture checked the same shapes.
bool capturing(cudaStream_t s);

// Streaming multiprocessors of `device` (cached): sizes grid-stride launches.
int sm_count(int device);

}  // namespace r1::cuda
