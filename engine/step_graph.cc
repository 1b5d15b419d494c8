#include "engine/step_graph.h"

#include <cstdlib>
#include <cstring>

#include "engine/error.h"

namespace r1 {

namespace {
thread_local int g_no_host_reads = 0;
}  // namespace

NoHostReads::NoHostReads() { ++g_no_host_reads; }
NoHostReads::~NoHostReads() { --g_no_host_reads; }
bool host_reads_forbidden() { return g_no_host_reads > 0; }

bool StepGraph::supported(Device d) {
  if (!device_available(d.type) || device_runtime(d.type).graph_capture == nullptr) return false;
  const char* env = std::getenv("R1_CUDA_GRAPHS");
  return !(env && std::strcmp(env, "0") == 0);
}

StepGraph::~StepGraph() { reset(); }

StepGraph& StepGraph::operator=(StepGraph&& o) noexcept {
  if (this != &o) {
    reset();
    dev_ = o.dev_;
    handle_ = o.handle_;
    o.handle_ = nullptr;
  }
  return *this;
}

void StepGraph::reset() {
  if (handle_) device_runtime(dev_.type).graph_destroy(handle_);
  handle_ = nullptr;
}

void StepGraph::capture(Device d, const std::function<void()>& fn, const StepGraph* share_pool) {
  reset();
  const DeviceRuntime& rt = device_runtime(d.type);
  R1_CHECK(rt.graph_capture != nullptr, "StepGraph: {} has no graphs", d.str());
  R1_CHECK(share_pool == nullptr || (share_pool->captured() && share_pool->dev_ == d),
           "StepGraph::capture: the graph to share a pool with is not captured on {}", d.str());
  handle_ = rt.graph_capture(
      d,
      [&fn] {
        NoHostReads no_reads;
        fn();
      },
      share_pool ? share_pool->handle_ : nullptr);
  dev_ = d;
}

void StepGraph::replay() {
  R1_CHECK(handle_ != nullptr, "StepGraph::replay: nothing captured");
  device_runtime(dev_.type).graph_replay(handle_);
}

}  // namespace r1
