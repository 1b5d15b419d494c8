// Stream-ordered caching allocator for CUDA device memory (DESIGN.md: "No cudaMalloc in a
// hot loop"). cudaMalloc and cudaFree synchronize the device and cost tens of microseconds;
// a training step allocates thousands of activations of the same few sizes, so freed
// blocks are kept and handed out again.
//
// Rules:
//  - Sizes are rounded: requests up to kSmallLimit to a multiple of kSmallRound (512 B),
//    larger ones to a multiple of kLargeRound (2 MiB, the driver's page granularity).
//  - A block belongs to the stream it was allocated on. Freed, it is cached per device and
//    per stream. Later work on the same stream S may reuse it at once: stream order puts
//    that work after everything queued on S before the free.
//  - An event is recorded on S at free time (and on every stream named by record_stream);
//    another stream T may reuse the block only once those events have completed.
//  - Blocks are not split. A cached block serves a request when it is at most 25% larger
//    (best fit), so the waste per live block is bounded.
//  - cudaMalloc only on a miss. If it fails with cudaErrorMemoryAllocation, every cached
//    block of that device is freed and the cudaMalloc retried once; a second failure throws
//    r1::Error with the allocator's statistics.
//  - Graph pools (CUDA graphs, engine/cuda/graph.h): between begin_graph_pool and
//    end_graph_pool, every allocation on the capturing stream comes from a private pool, and
//    blocks of that pool freed go back to it (no events: capture is one stream, in order).
//    The captured graph replays with those addresses, so none of them may serve anyone else
//    while the graph lives; release_graph_pool (when the graph is destroyed) synchronizes
//    the stream and frees the pool's cached blocks, and a pool block freed after its
//    release is freed outright (its stream may be gone).
// Thread-safe (one mutex). The instance lives for the whole process and is never destroyed,
// so tensors freed during static destruction do not touch a dead allocator.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace r1::cuda {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // rounded sizes of the blocks handed out and not freed
  size_t cached_bytes = 0;          // freed blocks kept for reuse
  size_t peak_allocated_bytes = 0;  // max of allocated_bytes since start or reset_peak
  int64_t num_cuda_malloc = 0;      // cudaMalloc calls (misses), retries included
  int64_t num_cache_hits = 0;       // requests served from the cache
  int64_t num_oom_retries = 0;      // cudaMalloc failures that emptied the cache
};

class CachingAllocator {
 public:
  static constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
  static constexpr size_t kSmallRound = 512;
  static constexpr size_t kLargeRound = size_t{2} << 20;  // 2 MiB

  static CachingAllocator& instance();
  static size_t round_size(size_t nbytes);

  // A block of at least nbytes on `device`, usable by work on `stream` (nullptr for 0).
  void* allocate(size_t nbytes, int device, cudaStream_t stream);
  // Returns p (from allocate) to the cache of its stream. Never throws for a CUDA runtime
  // that is shutting down (the block is then dropped).
  void deallocate(void* p);
  // Marks that work on `stream` uses p, so its reuse must also wait for that work.
  void record_stream(void* p, cudaStream_t stream);

  AllocatorStats stats(int device) const;
  void reset_peak(int device);
  // Frees every cached block on every device (cudaFree waits for the device to go idle).
  void empty_cache();

  // Routes allocations on (device, stream) to a graph pool until end_graph_pool: a new one
  // (share = 0), or pool `share` of an earlier capture, whose freed blocks this capture may
  // reuse (safe when the graphs never run at the same time: StepGraph replays are ordered on
  // the caller's stream). Returns the pool's id (> 0), one reference to it held by the
  // caller. One capture per device at a time.
  int64_t begin_graph_pool(int device, cudaStream_t stream, int64_t share = 0);
  void end_graph_pool(int device);
  // Drops a reference to pool `id`; at the last one its cached blocks are freed (after
  // `stream`, a stream that ran the graphs, finishes its work) and blocks still held are
  // freed when they are.
  void release_graph_pool(int64_t id, cudaStream_t stream);
  // Blocks handed out from graph pools and not freed, and those cached in live graph pools.
  size_t graph_pool_bytes(int device) const;

 private:
  struct PendingEvent {
    cudaStream_t stream;
    cudaEvent_t event;
  };
  struct Block {
    void* ptr = nullptr;
    size_t size = 0;
    int device = 0;
    cudaStream_t stream = nullptr;           // the owning stream
    std::vector<cudaStream_t> used_on;       // record_stream's extra streams
    std::vector<PendingEvent> events;        // recorded at free time
    int64_t graph_pool = 0;                  // 0: the shared cache; else a graph pool's id
  };
  using FreeList = std::multimap<size_t, Block>;  // by size, for best fit
  struct DevicePool {
    std::map<cudaStream_t, FreeList> free;  // per owning stream
    std::vector<cudaEvent_t> spare_events;
    AllocatorStats stats;
    cudaStream_t capture_stream = nullptr;  // while a graph pool is being filled
    int64_t capture_pool = 0;
  };
  struct GraphPool {
    int device = 0;
    FreeList free;
    size_t held_bytes = 0;  // handed out and not freed
    int refs = 0;           // the graphs using it
  };

  CachingAllocator() = default;
  DevicePool& pool(int device);
  bool reusable_on(const Block& b, cudaStream_t stream) const;
  bool take_cached(DevicePool& dp, size_t size, cudaStream_t stream, Block* out);
  void release_events(DevicePool& dp, Block& b);
  void free_cached(DevicePool& dp, int device);

  mutable std::mutex mu_;
  std::unordered_map<void*, Block> active_;
  std::map<int64_t, GraphPool> graph_pools_;  // live pools by id
  int64_t next_graph_pool_ = 1;
  std::vector<DevicePool> pools_;
};

}  // namespace r1::cuda
