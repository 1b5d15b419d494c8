// The caching host allocator (engine/host_allocator.h): size classes, reuse of freed blocks
// by tensors, the bound on cached bytes, and concurrent use.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "engine/device.h"
#include "engine/host_allocator.h"
#include "engine/tensor.h"

namespace r1 {
namespace {

TEST(HostAllocator, SizeClassesBoundTheWaste) {
  using A = HostCachingAllocator;
  EXPECT_EQ(A::round_size(0), 64u);
  EXPECT_EQ(A::round_size(1), 64u);
  EXPECT_EQ(A::round_size(65), 128u);
  EXPECT_EQ(A::round_size(4096), 4096u);
  EXPECT_EQ(A::round_size(4097), 4608u);  // 4096 + 4096 / 8
  EXPECT_EQ(A::round_size(8192), 8192u);
  for (size_t n = 1; n < (size_t{1} << 26); n = n * 3 / 2 + 7) {
    const size_t r = A::round_size(n);
    EXPECT_GE(r, n);
    EXPECT_EQ(r % kCpuAlignment, 0u) << n;
    EXPECT_LE(static_cast<double>(r), std::max(64.0, 1.125 * static_cast<double>(n)) + 63) << n;
    EXPECT_EQ(A::round_size(r), r) << n;  // a class rounds to itself
  }
}

TEST(HostAllocator, FreedTensorMemoryIsReusedAligned) {
  HostCachingAllocator& a = HostCachingAllocator::instance();
  if (a.stats().cache_limit_bytes < (size_t{8} << 20)) GTEST_SKIP() << "host cache off";
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1000, 1000});  // 4 MB: an mmap of its own without the cache
    first = t.data_ptr();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % kCpuAlignment, 0u);
  }
  const HostAllocatorStats before = a.stats();
  Tensor u = Tensor::empty({999, 1001});  // same class
  EXPECT_EQ(u.data_ptr(), first);
  const HostAllocatorStats after = a.stats();
  EXPECT_EQ(after.num_cache_hits, before.num_cache_hits + 1);
  EXPECT_EQ(after.num_system_allocs, before.num_system_allocs);
  // Tensor::zeros still fills a reused block.
  u = Tensor();
  Tensor z = Tensor::zeros({1000, 1000});
  for (double v : z.to_double_vector()) ASSERT_EQ(v, 0.0);
}

TEST(HostAllocator, CacheLimitIsKept) {
  HostCachingAllocator& a = HostCachingAllocator::instance();
  const size_t limit = a.stats().cache_limit_bytes;
  a.set_cache_limit(size_t{1} << 20);
  EXPECT_LE(a.stats().cached_bytes, size_t{1} << 20);
  const HostAllocatorStats s0 = a.stats();
  void* big = a.allocate(size_t{2} << 20);  // over the limit: released on free
  a.deallocate(big, size_t{2} << 20);
  const HostAllocatorStats s1 = a.stats();
  EXPECT_EQ(s1.num_released, s0.num_released + 1);
  EXPECT_EQ(s1.cached_bytes, s0.cached_bytes);
  a.set_cache_limit(0);  // caching off: every free goes back
  EXPECT_EQ(a.stats().cached_bytes, 0u);
  void* p = a.allocate(1000);
  a.deallocate(p, 1000);
  EXPECT_EQ(a.stats().cached_bytes, 0u);
  a.set_cache_limit(limit);
  a.empty_cache();
  EXPECT_EQ(a.stats().cached_bytes, 0u);
}

TEST(HostAllocator, ConcurrentUseKeepsTheBooks) {
  HostCachingAllocator& a = HostCachingAllocator::instance();
  const size_t in_use = a.stats().allocated_bytes;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&a, t] {
      std::vector<std::pair<void*, size_t>> live;
      for (int i = 0; i < 2000; ++i) {
        const size_t n = static_cast<size_t>((i * 7919 + t * 104729) % 300000 + 1);
        void* p = a.allocate(n);
        static_cast<char*>(p)[0] = static_cast<char>(i);
        static_cast<char*>(p)[n - 1] = static_cast<char>(t);
        live.emplace_back(p, n);
        if (live.size() > 8) {
          a.deallocate(live.front().first, live.front().second);
          live.erase(live.begin());
        }
      }
      for (auto& [p, n] : live) a.deallocate(p, n);
    });
  for (auto& th : threads) th.join();
  const HostAllocatorStats s = a.stats();
  EXPECT_EQ(s.allocated_bytes, in_use);
  EXPECT_LE(s.cached_bytes, s.cache_limit_bytes);
}

}  // namespace
}  // namespace r1
