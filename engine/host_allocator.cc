#include "engine/host_allocator.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <iterator>
#include <cstdlib>
#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/log.h"

namespace r1 {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kMaxDefaultLimit = size_t{4} << 30;

// R1_HOST_CACHE_MB, or min(4 GiB, physical memory / 8).
size_t default_cache_limit() {
  if (const char* e = std::getenv("R1_HOST_CACHE_MB")) {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(e, &end, 10);
    if (end != e && *end == '\0') return static_cast<size_t>(mb) * kMiB;
    log_warn("R1_HOST_CACHE_MB={}: not a number of MiB; using the default", e);
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return kMaxDefaultLimit / 4;
  return std::min(kMaxDefaultLimit, static_cast<size_t>(pages) * static_cast<size_t>(page) / 8);
}

void* system_allocate(size_t rounded) { return std::aligned_alloc(kCpuAlignment, rounded); }

}  // namespace

HostCachingAllocator::HostCachingAllocator() { stats_.cache_limit_bytes = default_cache_limit(); }

HostCachingAllocator& HostCachingAllocator::instance() {
  static HostCachingAllocator* a = new HostCachingAllocator();  // never destroyed
  return *a;
}

size_t HostCachingAllocator::round_size(size_t nbytes) {
  static_assert(kSmallLimit % kCpuAlignment == 0 && kSmallLimit >= 64 * kClassesPerDoubling);
  if (nbytes <= kSmallLimit)
    return std::max(kCpuAlignment, (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment);
  // 2^b < nbytes <= 2^(b+1): classes 2^b / 8 apart (>= 512 B, a multiple of the alignment)
  const size_t step = (size_t{1} << (std::bit_width(nbytes - 1) - 1)) / kClassesPerDoubling;
  return (nbytes + step - 1) / step * step;
}

void* HostCachingAllocator::allocate(size_t nbytes) {
  const size_t size = round_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocated_bytes += size;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    const auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cached_bytes -= size;
      ++stats_.num_cache_hits;
      return p;
    }
    ++stats_.num_system_allocs;
  }
  void* p = system_allocate(size);
  if (p == nullptr) {  // release the cache and try once more
    empty_cache();
    p = system_allocate(size);
  }
  if (p == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocated_bytes -= size;
  }
  R1_CHECK(p != nullptr, "out of host memory allocating {} bytes ({} bytes in use)", nbytes,
           stats().allocated_bytes);
  return p;
}

void HostCachingAllocator::deallocate(void* p, size_t nbytes) {
  if (p == nullptr) return;
  const size_t size = round_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocated_bytes -= size;
    if (stats_.cached_bytes + size <= stats_.cache_limit_bytes) {
      free_[size].push_back(p);
      stats_.cached_bytes += size;
      return;
    }
    ++stats_.num_released;
  }
  std::free(p);
}

HostAllocatorStats HostCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void HostCachingAllocator::release_cached_locked(size_t keep_bytes) {
  for (auto it = free_.begin(); it != free_.end() && stats_.cached_bytes > keep_bytes;) {
    std::vector<void*>& blocks = it->second;
    while (!blocks.empty() && stats_.cached_bytes > keep_bytes) {
      std::free(blocks.back());
      blocks.pop_back();
      stats_.cached_bytes -= it->first;
    }
    it = blocks.empty() ? free_.erase(it) : std::next(it);
  }
}

void HostCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked(0);
}

void HostCachingAllocator::set_cache_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.cache_limit_bytes = bytes;
  release_cached_locked(bytes);
}

}  // namespace r1
