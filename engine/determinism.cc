#include "engine/determinism.h"

#include <atomic>

namespace r1 {
namespace {

// Relaxed is enough: the flag carries no data with it, and a kernel reads it once per call
// on the thread that set it (OpenMP workers never read it).
std::atomic<bool> g_batch_invariant{false};

}  // namespace

bool batch_invariant() { return g_batch_invariant.load(std::memory_order_relaxed); }
void set_batch_invariant(bool on) { g_batch_invariant.store(on, std::memory_order_relaxed); }

BatchInvariantScope::BatchInvariantScope(bool on) : prev_(batch_invariant()) {
  set_batch_invariant(on);
}
BatchInvariantScope::~BatchInvariantScope() { set_batch_invariant(prev_); }

}  // namespace r1
