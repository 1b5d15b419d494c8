// Caching allocator for host (CPU) tensor memory, the CPU twin of engine/cuda/'s pool
// (DESIGN.md "Tensor and autograd": CPU aligned, no fresh allocation in a hot loop). A
// training step frees and allocates the same few hundred buffer sizes every step; taken
// fresh from aligned_alloc, each large one is a new mmap whose pages the kernel faults in
// and zeroes on first touch (6.5% of the tiny GRPO update on one thread, measured with perf
// before this allocator). Freed blocks are kept and handed out again instead.
//
// Rules:
//  - Every block is kCpuAlignment-aligned. Sizes are rounded to a size class: a multiple of
//    64 B up to kSmallLimit, above it one of 8 classes per power of two (a step of 1/8 of
//    the power of two below the size), so a block is at most 12.5% larger than its request.
//  - A freed block goes to its class's free list (last freed, first reused: its lines are
//    the likeliest in cache) and serves only requests of that class: blocks are neither
//    split nor merged.
//  - The cache is bounded: a block whose caching would take the cached bytes over the limit
//    is returned to the system at once. The limit is R1_HOST_CACHE_MB (MiB; 0 turns caching
//    off, e.g. for memory checkers) or else min(4 GiB, physical memory / 8).
//  - The system is asked only on a miss; if it has no memory, every cached block is
//    released and the request retried once before r1::Error.
//  - A reused block holds the bytes of its last user: like fresh malloc memory, it is
//    uninitialized, and no code may assume zeros (Tensor::zeros fills).
// Thread-safe (one mutex). The instance lives for the whole process and is never destroyed,
// so tensors freed during static destruction do not touch a dead allocator.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace r1 {

struct HostAllocatorStats {
  size_t allocated_bytes = 0;       // rounded sizes of the blocks handed out and not freed
  size_t cached_bytes = 0;          // freed blocks kept for reuse
  size_t peak_allocated_bytes = 0;  // max of allocated_bytes since start
  size_t cache_limit_bytes = 0;     // the bound on cached_bytes
  int64_t num_system_allocs = 0;    // aligned_alloc calls (misses)
  int64_t num_cache_hits = 0;       // requests served from the cache
  int64_t num_released = 0;         // frees that went back to the system (cache full or off)
};

class HostCachingAllocator {
 public:
  static constexpr size_t kSmallLimit = 4096;  // up to here, classes are 64 B apart
  static constexpr int kClassesPerDoubling = 8;

  static HostCachingAllocator& instance();
  static size_t round_size(size_t nbytes);  // the size class of a request (>= 64)

  void* allocate(size_t nbytes);           // kCpuAlignment-aligned, at least nbytes
  void deallocate(void* p, size_t nbytes);  // nbytes: the size given to allocate

  HostAllocatorStats stats() const;
  // Returns every cached block to the system.
  void empty_cache();
  // Sets the bound on cached bytes (0: no caching), releasing cached blocks above it.
  void set_cache_limit(size_t bytes);

 private:
  HostCachingAllocator();
  void release_cached_locked(size_t keep_bytes);

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // by size class
  HostAllocatorStats stats_;
};

}  // namespace r1
