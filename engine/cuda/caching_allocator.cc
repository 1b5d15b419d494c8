#include "engine/cuda/caching_allocator.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"

namespace r1::cuda {
namespace {

// A freed block may serve a request at most this much smaller than itself (1/4 = 25%).
constexpr size_t kMaxWasteDivisor = 4;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// The runtime is being torn down (process exit): memory goes back with the context.
bool is_shutdown(cudaError_t e) {
  return e == cudaErrorCudartUnloading || e == cudaErrorContextIsDestroyed;
}

std::string mib(size_t b) { return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20)); }

}  // namespace

CachingAllocator& CachingAllocator::instance() {
  // Leaked on purpose: see the header.
  static CachingAllocator* a = [] {
    auto* p = new CachingAllocator();
    p->pools_.resize(kMaxDevices);
    return p;
  }();
  return *a;
}

size_t CachingAllocator::round_size(size_t nbytes) {
  if (nbytes <= kSmallLimit) return round_up(std::max<size_t>(nbytes, 1), kSmallRound);
  return round_up(nbytes, kLargeRound);
}

CachingAllocator::DevicePool& CachingAllocator::pool(int device) {
  R1_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index {} out of range", device);
  return pools_[static_cast<size_t>(device)];
}

bool CachingAllocator::reusable_on(const Block& b, cudaStream_t stream) const {
  for (const PendingEvent& pe : b.events) {
    if (pe.stream == stream) continue;  // stream order already covers it
    const cudaError_t e = cudaEventQuery(pe.event);
    if (e == cudaErrorNotReady) return false;
    R1_CUDA_CHECK(e);
  }
  return true;
}

// Best fit within the waste bound: the stream's own blocks first, then other streams'
// blocks whose free-time events have completed.
bool CachingAllocator::take_cached(DevicePool& dp, size_t size, cudaStream_t stream,
                                   Block* out) {
  const size_t max_size = size + size / kMaxWasteDivisor;
  auto try_list = [&](FreeList& fl) {
    for (auto it = fl.lower_bound(size); it != fl.end() && it->first <= max_size; ++it) {
      if (!reusable_on(it->second, stream)) continue;
      *out = std::move(it->second);
      fl.erase(it);
      return true;
    }
    return false;
  };
  if (auto own = dp.free.find(stream); own != dp.free.end() && try_list(own->second))
    return true;
  for (auto& [s, fl] : dp.free)
    if (s != stream && try_list(fl)) return true;
  return false;
}

void CachingAllocator::release_events(DevicePool& dp, Block& b) {
  for (const PendingEvent& pe : b.events) dp.spare_events.push_back(pe.event);
  b.events.clear();
}

void* CachingAllocator::allocate(size_t nbytes, int device, cudaStream_t stream) {
  if (nbytes == 0) return nullptr;
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  DevicePool& dp = pool(device);
  Block b;
  GraphPool* gp = nullptr;
  if (dp.capture_pool != 0 && stream == dp.capture_stream) gp = &graph_pools_.at(dp.capture_pool);
  if (gp) {
    // A graph pool: best fit within the waste bound, no events (one stream, in order).
    FreeList& fl = gp->free;
    if (auto it = fl.lower_bound(size); it != fl.end() && it->first <= size + size / kMaxWasteDivisor) {
      b = std::move(it->second);
      fl.erase(it);
      ++dp.stats.num_cache_hits;
      dp.stats.cached_bytes -= b.size;
    }
  }
  if (b.ptr) {
    // taken from the graph pool above
  } else if (!gp && take_cached(dp, size, stream, &b)) {
    ++dp.stats.num_cache_hits;
    dp.stats.cached_bytes -= b.size;
    release_events(dp, b);
  } else {
    DeviceGuard g(device);
    void* p = nullptr;
    ++dp.stats.num_cuda_malloc;
    cudaError_t e = cudaMalloc(&p, size);
    // The retry empties the cache with cudaFree, which synchronizes the device: not while a
    // graph is being captured (the capture would be invalidated); then out of memory it is.
    if (e == cudaErrorMemoryAllocation && dp.capture_pool == 0) {
      (void)cudaGetLastError();  // not sticky, but would be reported by the next check
      ++dp.stats.num_oom_retries;
      free_cached(dp, device);
      ++dp.stats.num_cuda_malloc;
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw Error(fmt::format(
          "CUDA out of memory on cuda:{}: asked {} (rounded {}); allocated {}, peak {}, {}",
          device, nbytes, mib(size), mib(dp.stats.allocated_bytes),
          mib(dp.stats.peak_allocated_bytes),
          dp.capture_pool == 0 ? "cache emptied and retried"
                               : "during a graph capture (the cache is not emptied then)"));
    }
    R1_CUDA_CHECK(e);
    b.ptr = p;
    b.size = size;
    b.device = device;
  }
  b.stream = stream;
  b.used_on.clear();
  b.graph_pool = gp ? dp.capture_pool : 0;
  if (gp) gp->held_bytes += b.size;
  dp.stats.allocated_bytes += b.size;
  dp.stats.peak_allocated_bytes =
      std::max(dp.stats.peak_allocated_bytes, dp.stats.allocated_bytes);
  void* p = b.ptr;
  active_.emplace(p, std::move(b));
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(p);
  R1_CHECK(it != active_.end(), "CUDA free of {} which the caching allocator did not hand out", p);
  Block b = std::move(it->second);
  active_.erase(it);
  DevicePool& dp = pool(b.device);
  dp.stats.allocated_bytes -= b.size;

  if (b.graph_pool != 0) {
    auto gp = graph_pools_.find(b.graph_pool);
    if (gp == graph_pools_.end()) {
      // Its graph is gone and its stream may be too: no cache to return it to.
      const cudaError_t e = cudaFree(b.ptr);
      if (!is_shutdown(e)) R1_CUDA_CHECK(e);
      return;
    }
    gp->second.held_bytes -= b.size;
    dp.stats.cached_bytes += b.size;
    const size_t size = b.size;
    gp->second.free.emplace(size, std::move(b));
    return;
  }
  if (dp.capture_pool != 0) {
    // Freed while a graph is being captured: the graph may have used it, so it must not
    // serve anyone else while the graph lives. The pool adopts it.
    GraphPool& gp = graph_pools_.at(dp.capture_pool);
    release_events(dp, b);
    b.graph_pool = dp.capture_pool;
    b.stream = dp.capture_stream;
    dp.stats.cached_bytes += b.size;
    const size_t size = b.size;
    gp.free.emplace(size, std::move(b));
    return;
  }

  // One event per stream that used the block, recorded now: "the work queued so far".
  std::vector<cudaStream_t> streams = b.used_on;
  streams.push_back(b.stream);
  int prev = -1;
  cudaError_t e = cudaGetDevice(&prev);
  if (e == cudaSuccess && prev != b.device) e = cudaSetDevice(b.device);
  for (cudaStream_t s : streams) {
    if (e != cudaSuccess) break;
    cudaEvent_t ev = nullptr;
    if (!dp.spare_events.empty()) {
      ev = dp.spare_events.back();
      dp.spare_events.pop_back();
    } else {
      e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
      if (e != cudaSuccess) break;
    }
    b.events.push_back({s, ev});
    e = cudaEventRecord(ev, s);
  }
  if (prev >= 0 && prev != b.device) (void)cudaSetDevice(prev);
  if (is_shutdown(e)) return;  // the context takes the memory with it
  R1_CUDA_CHECK(e);
  dp.stats.cached_bytes += b.size;
  const cudaStream_t owner = b.stream;
  dp.free[owner].emplace(b.size, std::move(b));
}

void CachingAllocator::record_stream(void* p, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(p);
  R1_CHECK(it != active_.end(), "record_stream of {} which the caching allocator did not hand "
           "out", p);
  Block& b = it->second;
  if (stream != b.stream && std::find(b.used_on.begin(), b.used_on.end(), stream) ==
                                b.used_on.end())
    b.used_on.push_back(stream);
}

void CachingAllocator::free_cached(DevicePool& dp, int device) {
  DeviceGuard g(device);
  for (auto& [s, fl] : dp.free) {
    for (auto& [size, b] : fl) {
      release_events(dp, b);
      R1_CUDA_CHECK(cudaFree(b.ptr));  // synchronizes: pending work on the block finishes
      dp.stats.cached_bytes -= size;
    }
  }
  dp.free.clear();
}

int64_t CachingAllocator::begin_graph_pool(int device, cudaStream_t stream, int64_t share) {
  std::lock_guard<std::mutex> lock(mu_);
  DevicePool& dp = pool(device);
  R1_CHECK(dp.capture_pool == 0, "CachingAllocator: a graph is already being captured on "
           "cuda:{}", device);
  R1_CHECK(stream != nullptr && stream != cudaStreamLegacy && stream != cudaStreamPerThread,
           "CachingAllocator: graph pools need an owned stream (the legacy and per-thread "
           "default streams cannot be captured)");
  int64_t id = share;
  if (share != 0) {
    auto it = graph_pools_.find(share);
    R1_CHECK(it != graph_pools_.end() && it->second.device == device,
             "CachingAllocator: no graph pool {} on cuda:{} to share", share, device);
  } else {
    id = next_graph_pool_++;
    graph_pools_[id].device = device;
  }
  ++graph_pools_[id].refs;
  dp.capture_pool = id;
  dp.capture_stream = stream;
  return id;
}

void CachingAllocator::end_graph_pool(int device) {
  std::lock_guard<std::mutex> lock(mu_);
  DevicePool& dp = pool(device);
  dp.capture_pool = 0;
  dp.capture_stream = nullptr;
}

void CachingAllocator::release_graph_pool(int64_t id, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = graph_pools_.find(id);
  if (it == graph_pools_.end()) return;
  GraphPool& gp = it->second;
  DevicePool& dp = pool(gp.device);
  R1_CHECK(dp.capture_pool != id, "CachingAllocator: graph pool {} released during its capture",
           id);
  if (--gp.refs > 0) return;
  DeviceGuard g(gp.device);
  cudaError_t e = stream ? cudaStreamSynchronize(stream) : cudaSuccess;
  for (auto& [size, b] : gp.free) {
    if (e != cudaSuccess) break;
    release_events(dp, b);
    e = cudaFree(b.ptr);
    dp.stats.cached_bytes -= size;
  }
  graph_pools_.erase(it);
  if (!is_shutdown(e)) R1_CUDA_CHECK(e);
}

size_t CachingAllocator::graph_pool_bytes(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, gp] : graph_pools_) {
    if (gp.device != device) continue;
    n += gp.held_bytes;
    for (const auto& [size, b] : gp.free) n += size;
  }
  return n;
}

AllocatorStats CachingAllocator::stats(int device) const {
  R1_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index {} out of range", device);
  std::lock_guard<std::mutex> lock(mu_);
  return pools_[static_cast<size_t>(device)].stats;
}

void CachingAllocator::reset_peak(int device) {
  std::lock_guard<std::mutex> lock(mu_);
  DevicePool& dp = pool(device);
  dp.stats.peak_allocated_bytes = dp.stats.allocated_bytes;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t d = 0; d < pools_.size(); ++d)
    if (!pools_[d].free.empty()) free_cached(pools_[d], static_cast<int>(d));
}

}  // namespace r1::cuda
