// A step of device work recorded once and replayed with one launch (CUDA graphs). The
// decode step of generation is hundreds of small kernels for a few tokens; launched one by
// one, the host's launch rate, not the GPU, sets its speed (docs/cuda.md "Decode").
//
// capture(d, fn) runs fn once with the device's work recorded instead of executed: every
// kernel fn queues on the current stream, with the pointers it had then. So fn must
//  - never read device data on the host (no to_int_vector, item, host copies: the capture
//    fails with an error naming it),
//  - read its inputs from, and write its outputs to, tensors that outlive the graph; a
//    replay sees whatever those hold at the time (update them in place between replays).
// Tensors fn allocates come from a memory pool private to the graph: they keep their
// addresses for every replay and serve nothing else until the graph is destroyed.
// Backends without graphs (the CPU) report supported() false; callers then run fn eagerly.
#pragma once
#include <functional>

#include "engine/device.h"

namespace r1 {

// While one is alive on this thread, reading tensor data to the host (Tensor::to_int_vector,
// to_float_vector, to_double_vector, item) throws r1::Error naming the read. StepGraph::capture
// holds one around fn, so a read is refused where it happens rather than when the stream
// notices; on the CPU, which has no graphs, running a step under it proves the step would
// capture (rl/generate.cc runs its graph-safe step under it on every device).
class NoHostReads {
 public:
  NoHostReads();
  ~NoHostReads();
  NoHostReads(const NoHostReads&) = delete;
  NoHostReads& operator=(const NoHostReads&) = delete;
};
bool host_reads_forbidden();

class StepGraph {
 public:
  // The backend of d can capture, and R1_CUDA_GRAPHS is not 0.
  static bool supported(Device d);

  StepGraph() = default;
  ~StepGraph();
  StepGraph(StepGraph&& o) noexcept : dev_(o.dev_), handle_(o.handle_) { o.handle_ = nullptr; }
  StepGraph& operator=(StepGraph&& o) noexcept;
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Records fn (see above). Throws r1::Error when d's backend has no graphs or the capture
  // fails; the graph then stays empty. share_pool: a captured graph on d whose memory pool
  // this one shares (its intermediates may reuse the other's freed ones): for graphs that
  // are only ever replayed one at a time, like one decode step per batch size. Neither may
  // then read the other's intermediates; outputs that a caller holds are never shared.
  void capture(Device d, const std::function<void()>& fn,
               const StepGraph* share_pool = nullptr);
  // Runs the recorded work after everything queued on d's current stream so far; work queued
  // there later runs after it.
  void replay();
  bool captured() const { return handle_ != nullptr; }

 private:
  void reset();
  Device dev_;
  void* handle_ = nullptr;
};

}  // namespace r1
