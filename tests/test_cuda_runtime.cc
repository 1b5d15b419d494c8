// CUDA runtime: the caching allocator's reuse, statistics and cross-stream rules, streams,
// and the basic CUDA kernels (fill, copy_strided, add_scaled, affine) against the CPU
// backend on fresh random inputs. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/step_graph.h"
#include "engine/tensor.h"
#include "tests/harness.h"

#if defined(R1_HAVE_CUDA)
#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/stream.h"
#endif

namespace r1 {
namespace {

using test::case_seed;
using test::host_bytes;
using test::poison;

const Device kGpu = Device::cuda(0);
constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::BF16, DType::F16, DType::E4M3,
                                DType::E5M2, DType::I32, DType::I64, DType::U8, DType::Bool};


// Random values that every dtype can hold without undefined conversions: [0, 200) when an
// unsigned or bool side is involved, else N(0, 20^2).
Tensor random_values(const Shape& shape, DType src, DType dst, uint64_t seed) {
  const bool nonneg = src == DType::U8 || dst == DType::U8 || src == DType::Bool ||
                      dst == DType::Bool;
  const Tensor v = nonneg ? Tensor::rand(shape, seed, 0.0, 200.0, DType::F64)
                          : Tensor::randn(shape, seed, DType::F64, Device::cpu(), 20.0);
  return v.to(src);
}

#if defined(R1_HAVE_CUDA)
using cuda::CachingAllocator;

constexpr size_t kMiB = size_t{1} << 20;

// Holds a stream at a host callback until open() (or destruction): work queued after it,
// and events recorded after it, stay incomplete meanwhile.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t s) : s_(s) {
    R1_CUDA_CHECK(cudaLaunchHostFunc(s, &StreamGate::wait, &open_));
  }
  ~StreamGate() { open(); }
  void open() {
    open_.store(true);
    (void)cudaStreamSynchronize(s_);
  }

 private:
  static void wait(void* flag) {
    while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::yield();
  }
  cudaStream_t s_;
  std::atomic<bool> open_{false};
};

TEST(CudaAllocator, RoundsSizes) {
  R1_SKIP_WITHOUT_CUDA();
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(kMiB), kMiB);
  EXPECT_EQ(CachingAllocator::round_size(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(CachingAllocator::round_size(5 * kMiB), 6 * kMiB);
}

TEST(CudaAllocator, SameStreamReuseAndStats) {
  R1_SKIP_WITHOUT_CUDA();
  auto& a = CachingAllocator::instance();
  cuda::Stream s(0);
  std::mt19937_64 rng(case_seed(1));
  const size_t n = 600 + rng() % 400;  // rounds to 1024
  a.reset_peak(0);
  const cuda::AllocatorStats st0 = a.stats(0);
  void* p = a.allocate(n, 0, s.handle());
  cuda::AllocatorStats st = a.stats(0);
  EXPECT_EQ(st.allocated_bytes, st0.allocated_bytes + 1024);
  EXPECT_EQ(st.num_cuda_malloc, st0.num_cuda_malloc + 1);
  a.deallocate(p);
  st = a.stats(0);
  EXPECT_EQ(st.allocated_bytes, st0.allocated_bytes);
  EXPECT_EQ(st.cached_bytes, st0.cached_bytes + 1024);
  void* q = a.allocate(n - 100, 0, s.handle());  // same size class, same stream
  EXPECT_EQ(q, p);
  st = a.stats(0);
  EXPECT_EQ(st.num_cuda_malloc, st0.num_cuda_malloc + 1) << "a hit must not cudaMalloc";
  EXPECT_EQ(st.num_cache_hits, st0.num_cache_hits + 1);
  EXPECT_EQ(st.cached_bytes, st0.cached_bytes);
  void* r = a.allocate(3 * kMiB, 0, s.handle());  // large: 4 MiB
  EXPECT_EQ(a.stats(0).peak_allocated_bytes, st0.allocated_bytes + 1024 + 4 * kMiB);
  a.deallocate(q);
  a.deallocate(r);
  EXPECT_EQ(a.stats(0).allocated_bytes, st0.allocated_bytes);
}

TEST(CudaAllocator, CrossStreamReuseWaitsForTheFreeEvent) {
  R1_SKIP_WITHOUT_CUDA();
  auto& a = CachingAllocator::instance();
  cuda::Stream s1(0), s2(0);
  const size_t size = 38 * kMiB;  // a size no other test caches
  void* p = a.allocate(size, 0, s1.handle());
  {
    StreamGate gate(s1.handle());
    a.deallocate(p);  // its event sits behind the gate
    const int64_t mallocs = a.stats(0).num_cuda_malloc;
    void* q = a.allocate(size, 0, s2.handle());
    EXPECT_NE(q, p) << "reused on another stream before the free event completed";
    EXPECT_EQ(a.stats(0).num_cuda_malloc, mallocs + 1);
    void* r = a.allocate(size, 0, s1.handle());
    EXPECT_EQ(r, p) << "the same stream may reuse at once";
    a.deallocate(r);
    a.deallocate(q);
    gate.open();
  }
  // Both cached blocks' events have completed: a third stream takes both without cudaMalloc.
  cuda::Stream s3(0);
  const int64_t mallocs = a.stats(0).num_cuda_malloc;
  void* t1 = a.allocate(size, 0, s3.handle());
  void* t2 = a.allocate(size, 0, s3.handle());
  EXPECT_EQ(a.stats(0).num_cuda_malloc, mallocs);
  EXPECT_TRUE((t1 == p) != (t2 == p)) << "the block freed on s1 was not reused on s3";
  a.deallocate(t1);
  a.deallocate(t2);
}

TEST(CudaAllocator, RecordStreamDelaysReuse) {
  R1_SKIP_WITHOUT_CUDA();
  auto& a = CachingAllocator::instance();
  cuda::Stream s1(0), s2(0);
  const size_t size = 52 * kMiB;
  void* p = a.allocate(size, 0, s1.handle());
  a.record_stream(p, s2.handle());
  {
    StreamGate gate(s2.handle());
    a.deallocate(p);
    void* q = a.allocate(size, 0, s1.handle());
    EXPECT_NE(q, p) << "reused while work on a recorded stream may still use it";
    a.deallocate(q);
  }
  // Once s2 has drained, both cached blocks serve s1 without cudaMalloc.
  const int64_t mallocs = a.stats(0).num_cuda_malloc;
  void* r1 = a.allocate(size, 0, s1.handle());
  void* r2 = a.allocate(size, 0, s1.handle());
  EXPECT_EQ(a.stats(0).num_cuda_malloc, mallocs);
  EXPECT_TRUE(r1 == p || r2 == p);
  a.deallocate(r1);
  a.deallocate(r2);
}

TEST(CudaAllocator, OutOfMemoryEmptiesTheCacheAndRetries) {
  R1_SKIP_WITHOUT_CUDA();
  auto& a = CachingAllocator::instance();
  a.empty_cache();
  size_t free_b = 0, total = 0;
  R1_CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
  const size_t big = free_b / 10 * 6 / (2 * kMiB) * (2 * kMiB);
  void* p = a.allocate(big, 0, cudaStreamLegacy);
  a.deallocate(p);
  const cuda::AllocatorStats st0 = a.stats(0);
  EXPECT_GE(st0.cached_bytes, big);
  // 0.8 of free memory: too big to reuse the cached 0.6 block, too big to fit beside it.
  void* q = a.allocate(free_b / 10 * 8, 0, cudaStreamLegacy);
  const cuda::AllocatorStats st1 = a.stats(0);
  EXPECT_EQ(st1.num_oom_retries, st0.num_oom_retries + 1);
  EXPECT_EQ(st1.cached_bytes, 0u);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the OOM error must not stay pending";
  a.deallocate(q);
  a.empty_cache();
  EXPECT_EQ(a.stats(0).cached_bytes, 0u);
  EXPECT_THROW(a.allocate(total * 2, 0, cudaStreamLegacy), Error);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  void* small = a.allocate(100, 0, cudaStreamLegacy);  // still usable
  EXPECT_NE(small, nullptr);
  a.deallocate(small);
}

TEST(CudaStream, CurrentStreamIsPerThreadAndTensorsUseIt) {
  R1_SKIP_WITHOUT_CUDA();
  EXPECT_EQ(cuda::current_stream(0), cudaStreamLegacy);
  cuda::Stream s(0);
  void* old = nullptr;
  {
    cuda::StreamGuard g(s);
    EXPECT_EQ(cuda::current_stream(0), s.handle());
    cudaStream_t seen = nullptr;
    std::thread([&] { seen = cuda::current_stream(0); }).join();
    EXPECT_EQ(seen, cudaStreamLegacy) << "another thread keeps its own current stream";
    Tensor t = Tensor::empty({77 * 1024 * 1024 / 4}, DType::F32, kGpu);  // 77 MiB: unique
    old = t.data_ptr();
    StreamGate gate(s.handle());
    t = Tensor();  // freed on s, behind the gate
    {
      cuda::StreamGuard legacy(0, cudaStreamLegacy);
      Tensor u = Tensor::empty({77 * 1024 * 1024 / 4}, DType::F32, kGpu);
      EXPECT_NE(u.data_ptr(), old) << "the runtime must allocate on the current stream";
    }
    Tensor w = Tensor::empty({77 * 1024 * 1024 / 4}, DType::F32, kGpu);
    EXPECT_EQ(w.data_ptr(), old);
  }
  EXPECT_EQ(cuda::current_stream(0), cudaStreamLegacy);
}

// A captured step replays with whatever its input tensors hold at the time; what it allocated
// comes from its own pool, which nothing else is handed while the graph lives and which is
// freed with it.
TEST(CudaGraph, ReplaysWithNewInputsAndKeepsItsMemory) {
  R1_SKIP_WITHOUT_CUDA();
  ASSERT_TRUE(StepGraph::supported(kGpu) || std::getenv("R1_CUDA_GRAPHS"));
  NoGrad ng;
  auto& a = CachingAllocator::instance();
  const size_t pool0 = a.graph_pool_bytes(0);
  const int64_t n = 300001;  // not a multiple of any block size
  Tensor x = Tensor::empty({n}, DType::F32, kGpu);
  Tensor y;
  {
    StepGraph g;
    g.capture(kGpu, [&] { y = add(mul(x, x), x); });
    ASSERT_TRUE(g.captured());
    ASSERT_TRUE(y.defined());
    EXPECT_GT(a.graph_pool_bytes(0), pool0);
    // Fresh allocations of y's size never alias the graph's memory.
    std::vector<Tensor> others;
    for (int i = 0; i < 8; ++i) {
      others.push_back(Tensor::empty({n}, DType::F32, kGpu));
      EXPECT_NE(others.back().data_ptr(), y.data_ptr());
    }
    for (int round = 0; round < 3; ++round) {
      const Tensor xh = Tensor::randn({n}, case_seed(900 + round));
      x.copy_(xh);
      for (Tensor& o : others) o.fill_(round + 1.0);  // other work between replays
      g.replay();
      const std::vector<float> xv = xh.to_float_vector(), got = y.to_float_vector();
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const volatile float sq = xv[i] * xv[i];
        bad += got[i] != sq + xv[i];
      }
      EXPECT_EQ(bad, 0) << "round " << round << " [seed " << test::run_seed() << "]";
    }
  }
  y = Tensor();
  EXPECT_EQ(a.graph_pool_bytes(0), pool0) << "the pool goes with its graph";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Two graphs on one pool (StepGraph::capture's share_pool): each replays its own result, the
// pool lives until the last of them goes.
TEST(CudaGraph, SharedPoolServesBothAndGoesWithTheLast) {
  R1_SKIP_WITHOUT_CUDA();
  NoGrad ng;
  auto& a = CachingAllocator::instance();
  const size_t pool0 = a.graph_pool_bytes(0);
  const int64_t n = 70001;
  Tensor x = Tensor::empty({n}, DType::F32, kGpu), y, z;
  auto first = std::make_unique<StepGraph>();
  first->capture(kGpu, [&] { y = add(mul(x, x), x); });
  StepGraph second;
  second.capture(kGpu, [&] { z = mul(add(x, x), x); }, first.get());
  const Tensor xh = Tensor::randn({n}, case_seed(960));
  x.copy_(xh);
  second.replay();
  first->replay();
  const std::vector<float> xv = xh.to_float_vector(), yv = y.to_float_vector(),
                           zv = z.to_float_vector();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const volatile float sq = xv[i] * xv[i], tw = xv[i] + xv[i];
    bad += yv[i] != sq + xv[i];
    bad += zv[i] != tw * xv[i];
  }
  EXPECT_EQ(bad, 0) << "[seed " << test::run_seed() << "]";
  first.reset();
  y = Tensor();
  EXPECT_GT(a.graph_pool_bytes(0), pool0) << "the second graph still uses the pool";
  second.replay();
  EXPECT_EQ(z.to_float_vector(), zv);
  second = StepGraph();
  z = Tensor();
  EXPECT_EQ(a.graph_pool_bytes(0), pool0);
}

// A host read inside a captured step is refused with an error; nothing is left captured and
// the device keeps working.
TEST(CudaGraph, HostReadInsideCaptureIsAnError) {
  R1_SKIP_WITHOUT_CUDA();
  NoGrad ng;
  auto& a = CachingAllocator::instance();
  const size_t pool0 = a.graph_pool_bytes(0);
  const Tensor x = Tensor::randn({1000}, case_seed(950)).to(kGpu);
  StepGraph g;
  try {
    g.capture(kGpu, [&] { (void)add(x, x).to_float_vector(); });
    ADD_FAILURE() << "a host read inside a capture was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capture"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(g.captured());
  EXPECT_EQ(a.graph_pool_bytes(0), pool0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> xv = x.to_float_vector(), two = add(x, x).to_float_vector();
  for (size_t i = 0; i < xv.size(); ++i) ASSERT_EQ(two[i], xv[i] + xv[i]);
}
#endif  // R1_HAVE_CUDA

// ---- kernels against the CPU backend -----------------------------------------------------

TEST(CudaKernels, FillMatchesCpuForEveryDtype) {
  R1_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(case_seed(10));
  for (DType t : kAllDTypes) {
    for (int64_t n : {1, 17, 4099}) {
      for (int64_t off : {0, 1}) {  // off = 1: a view whose pointer is not 16-byte aligned
        const bool nonneg = t == DType::U8 || t == DType::Bool;
        const double value = nonneg ? double(rng() % 200) : std::normal_distribution<>(0, 30)(rng);
        Tensor cpu = Tensor::empty({n}, t);
        kernels::fill()(Device::cpu(), cpu, value);
        Tensor base = Tensor::empty({n + off}, t, kGpu);
        poison(base);
        Tensor gpu = base.narrow(0, off, n);
        kernels::fill()(kGpu, gpu, value);
        EXPECT_EQ(host_bytes(gpu), host_bytes(cpu))
            << dtype_name(t) << " n=" << n << " off=" << off << " value=" << value;
        if (off) {
          EXPECT_EQ(host_bytes(base.narrow(0, 0, 1)),
                    std::vector<unsigned char>(dtype_size(t), 0xFF)) << "wrote outside the view";
        }
      }
    }
  }
}

TEST(CudaKernels, CopyStridedMatchesCpuForEveryDtypePair) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 100;
  for (DType st : kAllDTypes) {
    for (DType dt : kAllDTypes) {
      // src: (3, 4, 5, 6) permuted to (5, 3, 6, 4); dst: (6, 4, 5, 3) permuted to the same.
      const Tensor src_base = random_values({3, 4, 5, 6}, st, dt, case_seed(++k));
      const Tensor src_cpu = src_base.permute({2, 0, 3, 1});
      Tensor dst_cpu_base = Tensor::empty({6, 4, 5, 3}, dt);
      Tensor dst_cpu = dst_cpu_base.permute({2, 3, 0, 1});
      kernels::copy_strided()(Device::cpu(), src_cpu, dst_cpu);

      const Tensor src_gpu = src_base.to(kGpu).permute({2, 0, 3, 1});
      Tensor dst_gpu_base = Tensor::empty({6, 4, 5, 3}, dt, kGpu);
      poison(dst_gpu_base);
      Tensor dst_gpu = dst_gpu_base.permute({2, 3, 0, 1});
      kernels::copy_strided()(kGpu, src_gpu, dst_gpu);
      EXPECT_EQ(host_bytes(dst_gpu_base), host_bytes(dst_cpu_base))
          << dtype_name(st) << " -> " << dtype_name(dt);
    }
  }
}

TEST(CudaKernels, CopyStridedEightDimsAndOffsets) {
  R1_SKIP_WITHOUT_CUDA();
  // 8 dims of size 2..3 reversed: no two dims merge, so all 8 are walked.
  const Shape shape = {2, 3, 2, 3, 2, 2, 3, 2};
  const std::vector<int64_t> rev = {7, 6, 5, 4, 3, 2, 1, 0};
  const Tensor src_base = random_values({1, 2, 3, 2, 3, 2, 2, 3, 2}, DType::F32, DType::BF16,
                                        case_seed(200));
  const Tensor src_cpu = src_base.select(0, 0).permute(rev);  // shape reversed
  Tensor dst_cpu = Tensor::empty(src_cpu.shape(), DType::BF16);
  kernels::copy_strided()(Device::cpu(), src_cpu, dst_cpu);
  const Tensor src_gpu = src_base.to(kGpu).select(0, 0).permute(rev);
  Tensor dst_gpu = Tensor::empty(src_cpu.shape(), DType::BF16, kGpu);
  poison(dst_gpu);
  kernels::copy_strided()(kGpu, src_gpu, dst_gpu);
  EXPECT_EQ(host_bytes(dst_gpu), host_bytes(dst_cpu));

  // A narrowed source (offset, strides) into a contiguous destination.
  const Tensor s2 = random_values({7, 9}, DType::BF16, DType::F32, case_seed(201));
  Tensor d_cpu = Tensor::empty({5, 4}, DType::F32);
  kernels::copy_strided()(Device::cpu(), s2.narrow(0, 1, 5).narrow(1, 3, 4), d_cpu);
  Tensor d_gpu = Tensor::empty({5, 4}, DType::F32, kGpu);
  poison(d_gpu);
  kernels::copy_strided()(kGpu, s2.to(kGpu).narrow(0, 1, 5).narrow(1, 3, 4), d_gpu);
  EXPECT_EQ(host_bytes(d_gpu), host_bytes(d_cpu));

  // Nine dims that cannot merge are more than the kernel walks: an error, not a wrong copy.
  const Tensor nine = Tensor::zeros({2, 2, 2, 2, 2, 2, 2, 2, 2}, DType::F32, kGpu)
                          .permute({8, 7, 6, 5, 4, 3, 2, 1, 0});
  Tensor nine_dst = Tensor::empty(nine.shape(), DType::F32, kGpu);
  EXPECT_THROW(kernels::copy_strided()(kGpu, nine, nine_dst), Error);
}

// Contiguous conversions between every pair of dtypes take copy_strided's vector kernel when
// both bases are aligned (chunks of 8 elements, then a tail) and the element-wise one when
// not (an offset of one element): the CPU's bytes either way, nothing written past the end.
TEST(CudaKernels, CopyStridedContiguousConversionsMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 500;
  const int64_t n = 1003;
  for (DType st : kAllDTypes)
    for (DType dt : kAllDTypes) {
      if (st == dt) continue;
      const Tensor base = random_values({n + 1}, st, dt, case_seed(++k));
      for (int64_t off : {0, 1}) {
        const Tensor src = base.narrow(0, off, n);
        Tensor want = Tensor::empty({n}, dt);
        kernels::copy_strided()(Device::cpu(), src.contiguous(), want);
        const Tensor src_gpu = base.to(kGpu).narrow(0, off, n);
        Tensor dst_base = Tensor::empty({n + 2}, dt, kGpu);
        poison(dst_base);
        Tensor got = dst_base.narrow(0, off, n);
        kernels::copy_strided()(kGpu, src_gpu, got);
        const std::string name =
            fmt::format("{} -> {} offset {}", dtype_name(st), dtype_name(dt), off);
        EXPECT_EQ(host_bytes(got), host_bytes(want)) << name;
        EXPECT_EQ(host_bytes(dst_base.narrow(0, off + n, 1)),
                  std::vector<unsigned char>(dtype_size(dt), 0xFF)) << name << ": past the end";
      }
    }
}

// Values where a conversion through a double (what the CUDA copy did before it shared the
// CPU's convert_one) differs from the CPU's single rounding and wrapping: integers and f64s
// one rounding apart from two, i64 beyond 2^53, narrowing that wraps, f32 to u8 beyond 255,
// NaN payloads and wide integers in same-dtype copies. Through every CUDA copy path: the
// vector conversion (aligned, contiguous), the element-wise kernel (offset by one) and the
// tiled transpose (a 40 x 40 transpose of the values repeated).
TEST(CudaKernels, CopyStridedEdgeValuesMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  auto raw = [](DType t, const std::vector<uint64_t>& bits) {  // little-endian element bits
    Tensor x = Tensor::empty({static_cast<int64_t>(bits.size())}, t);
    auto* p = static_cast<unsigned char*>(x.data_ptr());
    for (size_t i = 0; i < bits.size(); ++i) std::memcpy(p + i * dtype_size(t), &bits[i], dtype_size(t));
    return x;
  };
  auto f64_bits = [](double d) { uint64_t u; std::memcpy(&u, &d, 8); return u; };
  auto f32_bits = [](float f) { uint32_t u; std::memcpy(&u, &f, 4); return uint64_t{u}; };
  struct Case {
    DType src, dst;
    std::vector<uint64_t> bits;
  };
  const std::vector<Case> cases = {
      {DType::I32, DType::BF16, {16842753, 16842752, 3, 0xFFFFFFFFu}},
      {DType::F64, DType::BF16, {f64_bits(1 + 0x1p-8 + 0x1p-30), f64_bits(-1.5), f64_bits(1e300)}},
      {DType::F64, DType::E4M3, {f64_bits(1.0625 + 0x1p-40), f64_bits(1.0625), f64_bits(500.0)}},
      {DType::I64, DType::I32, {(uint64_t{1} << 32) + 5, uint64_t(-7), uint64_t{1} << 40}},
      {DType::F32, DType::U8, {f32_bits(300.0f), f32_bits(-3.5f), f32_bits(255.9f)}},
      {DType::I32, DType::U8, {0xFFFFFFFFu, 256, 511}},
      {DType::I64, DType::F32, {(uint64_t{1} << 53) + 1, (uint64_t{1} << 60) + 3, 12345}},
      {DType::I64, DType::I64, {(uint64_t{1} << 53) + 1, uint64_t(-3), (uint64_t{1} << 62) + 7}},
      {DType::BF16, DType::BF16, {0x7f81, 0xffc1, 0x0001}},
      {DType::F32, DType::F32, {0x7f800001u, 0xffc00123u, 1}},
      // NaN and infinities to integers and bool, saturation past the range, -0, subnormals
      // (from a review: these rows had none; the CPU's convert_one decides what each gives).
      {DType::F32, DType::I32,
       {f32_bits(NAN), f32_bits(INFINITY), f32_bits(-INFINITY), f32_bits(3e9f), f32_bits(-0.0f)}},
      {DType::F32, DType::I64, {f32_bits(NAN), f32_bits(-INFINITY), f32_bits(1e19f), 1}},
      {DType::F32, DType::Bool, {f32_bits(NAN), f32_bits(-0.0f), 1, f32_bits(0.0f)}},
      {DType::F32, DType::F16, {f32_bits(70000.0f), f32_bits(65520.0f), f32_bits(1e-6f),
                                f32_bits(-1e-8f), f32_bits(NAN)}},
      {DType::F32, DType::BF16, {1, 0x80000001u, 0x007fffffu, f32_bits(3.4e38f)}},
      {DType::F64, DType::F32, {f64_bits(1e-320), f64_bits(1e39), f64_bits(-1e39),
                                0x7ff0000000000123ull}},
      {DType::F64, DType::E5M2, {f64_bits(1e6), f64_bits(-1e-9), f64_bits(57344.0 + 4096.0)}},
  };
  for (const Case& c : cases) {
    // 1603 elements (the values repeated): 200 chunks of 8 and a tail of 3.
    std::vector<uint64_t> rep;
    while (rep.size() < 1603) rep.push_back(c.bits[rep.size() % c.bits.size()]);
    const Tensor base = raw(c.src, rep);
    const std::string name = fmt::format("{} -> {}", dtype_name(c.src), dtype_name(c.dst));
    for (int64_t off : {0, 1}) {
      const Tensor src = base.narrow(0, off, 1600);
      Tensor want = Tensor::empty({1600}, c.dst);
      kernels::copy_strided()(Device::cpu(), src, want);
      Tensor got = Tensor::empty({1600}, c.dst, kGpu);
      poison(got);
      kernels::copy_strided()(kGpu, base.to(kGpu).narrow(0, off, 1600), got);
      EXPECT_EQ(host_bytes(got), host_bytes(want)) << name << " contiguous, offset " << off;
    }
    const Tensor sq = base.narrow(0, 0, 1600).view({40, 40}).transpose(0, 1);
    Tensor want = Tensor::empty({40, 40}, c.dst);
    kernels::copy_strided()(Device::cpu(), sq, want);
    Tensor got = Tensor::empty({40, 40}, c.dst, kGpu);
    poison(got);
    kernels::copy_strided()(kGpu, base.to(kGpu).narrow(0, 0, 1600).view({40, 40}).transpose(0, 1),
                            got);
    EXPECT_EQ(host_bytes(got), host_bytes(want)) << name << " transposed";
  }
}

// Transposes of the two innermost dims (with and without outer batch dims, partial 32x32
// tiles, an offset source, more tiles than the grid) take copy_strided's tiled kernel: the
// CPU's bytes for same-dtype and converting copies, nothing written outside the output.
TEST(CudaKernels, CopyStridedTransposesMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const std::pair<DType, DType> pairs[] = {{DType::BF16, DType::BF16}, {DType::F32, DType::BF16},
                                           {DType::E4M3, DType::E4M3}, {DType::F32, DType::F32},
                                           {DType::I64, DType::I64},   {DType::F64, DType::F32}};
  uint64_t k = 300;
  for (auto [st, dt] : pairs) {
    // (base shape, permutation, narrow of dim 0 to [1, size - 1) first)
    struct Case {
      Shape base;
      std::vector<int64_t> perm;
      bool narrow;
    };
    const Case cases[] = {{{70, 33}, {1, 0}, false},
                          {{3, 65, 40}, {0, 2, 1}, false},
                          {{2, 3, 37, 50}, {0, 1, 3, 2}, false},
                          {{80, 50}, {1, 0}, true},
                          {{64, 200, 150}, {0, 2, 1}, false}};
    for (const Case& c : cases) {
      const Tensor base = random_values(c.base, st, st, case_seed(++k));
      auto view = [&](const Tensor& t) {
        const Tensor v = c.narrow ? t.narrow(0, 1, t.size(0) - 2).narrow(1, 3, t.size(1) - 5) : t;
        return v.permute(c.perm);
      };
      const Tensor src_cpu = view(base);
      Tensor dst_cpu = Tensor::empty(src_cpu.shape(), dt);
      kernels::copy_strided()(Device::cpu(), src_cpu, dst_cpu);
      const Tensor src_gpu = view(base.to(kGpu));
      Tensor dst_base = Tensor::empty({dst_cpu.numel() + 1}, dt, kGpu);
      poison(dst_base);
      Tensor dst_gpu = dst_base.narrow(0, 0, dst_cpu.numel()).view(src_cpu.shape());
      kernels::copy_strided()(kGpu, src_gpu, dst_gpu);
      const std::string name = fmt::format("{} -> {} {}", dtype_name(st), dtype_name(dt),
                                           shape_str(src_cpu.shape()));
      EXPECT_EQ(host_bytes(dst_gpu), host_bytes(dst_cpu)) << name;
      EXPECT_EQ(host_bytes(dst_base.narrow(0, dst_cpu.numel(), 1)),
                std::vector<unsigned char>(dtype_size(dt), 0xFF)) << name << ": wrote past the end";
    }
  }
}

// The CPU reference for a bf16 input computes in f32 on the widened values, then rounds.
Tensor to_f32_cpu(const Tensor& t) { return t.to(Device::cpu()).contiguous().to(DType::F32); }

struct MapCase {
  DType dtype;
  int64_t n;
  int64_t off;
};

std::vector<MapCase> map_cases() {
  std::vector<MapCase> cs;
  for (DType t : {DType::F32, DType::BF16})
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{4099}, (int64_t{1} << 20) + 3})
      for (int64_t off : {0, 1}) cs.push_back({t, n, off});
  return cs;
}

// f32: fp32 FMA on the GPU against mul-then-add on the CPU (half an ulp of each term);
// bf16: one more bf16 rounding step apart at most.
double atol_for(DType t) { return t == DType::BF16 ? 1e-5 : 4e-6; }
double rtol_for(DType t) { return t == DType::BF16 ? 1.0 / 128 : 1e-6; }

TEST(CudaKernels, AddScaledMatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 300;
  for (const MapCase& c : map_cases()) {
    std::mt19937_64 rng(case_seed(++k));
    const double alpha = std::uniform_real_distribution<>(-2, 2)(rng);
    const Tensor x_base = Tensor::randn({c.n + c.off}, case_seed(++k), c.dtype);
    const Tensor y_base = Tensor::randn({c.n + c.off}, case_seed(++k), c.dtype);
    // clone: for f32, to_f32_cpu returns a view of y_base itself, and the CPU kernel below
    // would update y_base in place before the GPU copy is made from it.
    Tensor y_ref = to_f32_cpu(y_base.narrow(0, c.off, c.n)).clone();
    kernels::add_scaled()(Device::cpu(), y_ref, to_f32_cpu(x_base.narrow(0, c.off, c.n)), alpha);

    Tensor y_gpu_base = y_base.to(kGpu);
    Tensor y_gpu = y_gpu_base.narrow(0, c.off, c.n);
    kernels::add_scaled()(kGpu, y_gpu, x_base.to(kGpu).narrow(0, c.off, c.n), alpha);
    const std::string name = fmt::format("add_scaled {} n={} off={}", dtype_name(c.dtype), c.n,
                                         c.off);
    test::expect_close(name, y_gpu.to(Device::cpu()), y_ref.to(c.dtype), atol_for(c.dtype),
                       rtol_for(c.dtype));
    if (c.off) {
      EXPECT_EQ(host_bytes(y_gpu_base.narrow(0, 0, 1)), host_bytes(y_base.narrow(0, 0, 1)))
          << name << ": wrote outside the view";
    }
  }
}

TEST(CudaKernels, AffineMatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 500;
  for (const MapCase& c : map_cases()) {
    std::mt19937_64 rng(case_seed(++k));
    const double s = std::uniform_real_distribution<>(-3, 3)(rng);
    const double b = std::uniform_real_distribution<>(-1, 1)(rng);
    const Tensor x_base = Tensor::randn({c.n + c.off}, case_seed(++k), c.dtype);
    Tensor ref = Tensor::empty({c.n}, DType::F32);
    kernels::affine()(Device::cpu(), to_f32_cpu(x_base.narrow(0, c.off, c.n)), s, b, ref);

    Tensor out_base = Tensor::empty({c.n + c.off}, c.dtype, kGpu);
    poison(out_base);
    Tensor out = out_base.narrow(0, c.off, c.n);
    kernels::affine()(kGpu, x_base.to(kGpu).narrow(0, c.off, c.n), s, b, out);
    const std::string name = fmt::format("affine {} n={} off={}", dtype_name(c.dtype), c.n,
                                         c.off);
    test::expect_close(name, out.to(Device::cpu()), ref.to(c.dtype), atol_for(c.dtype),
                       rtol_for(c.dtype));
    if (c.off) {
      EXPECT_EQ(host_bytes(out_base.narrow(0, 0, 1)),
                std::vector<unsigned char>(dtype_size(c.dtype), 0xFF))
          << name << ": wrote outside the view";
    }
  }
}

TEST(CudaKernels, RejectUnsupportedDtypes) {
  R1_SKIP_WITHOUT_CUDA();
  Tensor y = Tensor::zeros({8}, DType::F64, kGpu);
  const Tensor x = Tensor::zeros({8}, DType::F64, kGpu);
  EXPECT_THROW(kernels::add_scaled()(kGpu, y, x, 1.0), Error);
  EXPECT_THROW(kernels::affine()(kGpu, x, 1.0, 0.0, y), Error);
}

}  // namespace
}  // namespace r1
