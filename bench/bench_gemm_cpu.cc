// CPU GEMM against this machine's measured FP32 FMA peak.
//
//   ./build/bin/bench_gemm_cpu            (threads: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)
//
// The peak is measured, not assumed: every OpenMP thread runs a register-resident loop of
// independent multiply-add chains. The build has no -march flag (the binaries must run on
// any x86-64), so the loops are:
//   sse2    GCC vector extensions compiled for the default target: 128-bit mulps + addps
//           (x86-64 baseline has no FMA). What code built without target flags can reach.
//   avx2    256-bit FMA, one function compiled with target("avx2,fma"),
//   avx512  512-bit FMA, one function compiled with target("avx512f"),
// the last two run only when the CPU reports the feature (__builtin_cpu_supports). OpenBLAS
// picks its kernel by CPU at run time, so fraction_of_peak divides by the widest loop the CPU
// runs: the ceiling OpenBLAS actually has. The theoretical figure (context
// "theoretical_peak_gflops") assumes two FMA pipes of the widest vector at the clock
// /proc/cpuinfo reports; it is an assumption, the measured one is not.
//
// Last measured (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=2, 2-core AMD EPYC Zen 5 KVM guest,
// shared): peak sse2 122, avx2 268, avx512 534 GFLOP/s (cpuinfo's 2596 MHz is the nominal
// clock: 534 GFLOP/s implies ~4.1 GHz with two 512-bit FMA pipes). OpenBLAS 0.3.21 runs its
// Haswell kernels here: matmul reaches 240-255 GFLOP/s from 512 up, 0.91-0.95 of the AVX2
// peak, 0.46-0.48 of the AVX-512 one; a 4096x4096 decode row (M = 1) 11 GFLOP/s (bandwidth).
//
// The batch-invariant product against OpenBLAS (BM_GemmLinearInvariant, BM_GemmGradInvariant;
// last measured OMP_NUM_THREADS=1 on a 2-core Sapphire Rapids KVM guest, shared, AVX-512 peak
// 184 GFLOP/s, OpenBLAS SkylakeX kernels, best of 5): invariant/OpenBLAS GFLOP/s is 1.04-1.23
// at M 4096, 1.12-1.35 at M 64, 0.13-0.29 at M 1 (OpenBLAS's gemv; the invariant kernel must
// transpose w), 0.85 on the lm head's dw (a transposed, K 4096).
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

extern "C" char* openblas_get_corename(void);  // OpenBLAS's run-time kernel choice

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "kernels/cpu/gemm_invariant.h"

namespace r1 {
namespace {

// Independent accumulator chains: enough to cover FMA latency (4-5 cycles) times the
// pipes (2) with room to spare, and few enough to stay in registers (16 xmm/ymm, 32 zmm).
constexpr int kChainsSse = 12;
constexpr int kChainsAvx2 = 12;
constexpr int kChainsAvx512 = 24;

using v4f = float __attribute__((vector_size(16)));

// Each returns a value that depends on every chain, so nothing is optimized away. The
// multiplier and addend keep the values finite and normal (they converge to 1).
float loop_sse2(int64_t iters) {
  v4f acc[kChainsSse];
#pragma GCC unroll 32
  for (int k = 0; k < kChainsSse; ++k) acc[k] = v4f{} + 0.5f + 0.01f * k;
  const v4f m = v4f{} + 0.999f, a = v4f{} + 0.001f;
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 32  // the chains must live in registers, not in the array
    for (int k = 0; k < kChainsSse; ++k) acc[k] = acc[k] * m + a;
  }
  v4f s = acc[0];
#pragma GCC unroll 32
  for (int k = 1; k < kChainsSse; ++k) s += acc[k];
  return s[0] + s[1] + s[2] + s[3];
}

__attribute__((target("avx2,fma"))) float loop_avx2(int64_t iters) {
  __m256 acc[kChainsAvx2];
#pragma GCC unroll 32
  for (int k = 0; k < kChainsAvx2; ++k) acc[k] = _mm256_set1_ps(0.5f + 0.01f * k);
  const __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 32  // the chains must live in registers, not in the array
    for (int k = 0; k < kChainsAvx2; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, a);
  }
  __m256 s = acc[0];
#pragma GCC unroll 32
  for (int k = 1; k < kChainsAvx2; ++k) s = _mm256_add_ps(s, acc[k]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}

__attribute__((target("avx512f"))) float loop_avx512(int64_t iters) {
  __m512 acc[kChainsAvx512];
#pragma GCC unroll 32
  for (int k = 0; k < kChainsAvx512; ++k) acc[k] = _mm512_set1_ps(0.5f + 0.01f * k);
  const __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 32  // the chains must live in registers, not in the array
    for (int k = 0; k < kChainsAvx512; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, a);
  }
  __m512 s = acc[0];
#pragma GCC unroll 32
  for (int k = 1; k < kChainsAvx512; ++k) s = _mm512_add_ps(s, acc[k]);
  alignas(64) float out[16];  // not _mm512_reduce_add_ps: GCC 12's header warns inside it
  _mm512_store_ps(out, s);
  return out[0] + out[15];
}

struct PeakLoop {
  const char* name;
  float (*fn)(int64_t);
  double flops_per_iter;  // per thread: chains * lanes * 2 (multiply and add)
  bool supported;
};

const PeakLoop* peak_loops(int* n) {
  __builtin_cpu_init();
  static const PeakLoop loops[] = {
      {"sse2", loop_sse2, kChainsSse * 4 * 2.0, true},
      {"avx2", loop_avx2, kChainsAvx2 * 8 * 2.0,
       __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
      {"avx512", loop_avx512, kChainsAvx512 * 16 * 2.0, __builtin_cpu_supports("avx512f") != 0},
  };
  *n = 3;
  return loops;
}

// GFLOP/s of `loop` on all OpenMP threads for `iters` iterations each.
double run_peak(const PeakLoop& loop, int64_t iters) {
  float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  int threads = 1;
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    sink += loop.fn(iters);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  benchmark::DoNotOptimize(sink);
  return loop.flops_per_iter * static_cast<double>(iters) * threads / s / 1e9;
}

// GFLOP/s of peak loop i on all threads, best of 5 short runs (measured once); 0 when the
// CPU lacks it.
double measured_peak_gflops(int i) {
  static const std::vector<double> peaks = [] {
    int n = 0;
    const PeakLoop* loops = peak_loops(&n);
    std::vector<double> p(static_cast<size_t>(n), 0.0);
    for (int l = 0; l < n; ++l)
      for (int r = 0; r < 5 && loops[l].supported; ++r)
        p[l] = std::max(p[l], run_peak(loops[l], 20'000'000));
    return p;
  }();
  return peaks[static_cast<size_t>(i)];
}
constexpr int kSse2 = 0, kAvx2 = 1, kAvx512 = 2;

// The widest loop this CPU runs: the ceiling for fraction_of_peak.
double measured_peak_gflops() {
  return std::max({measured_peak_gflops(kSse2), measured_peak_gflops(kAvx2),
                   measured_peak_gflops(kAvx512)});
}

void BM_PeakFma(benchmark::State& state) {
  int n = 0;
  const PeakLoop& loop = peak_loops(&n)[state.range(0)];
  if (!loop.supported) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  state.SetLabel(loop.name);
  double gflops = 0;
  for (auto _ : state) gflops = std::max(gflops, run_peak(loop, 10'000'000));
  state.counters["GFLOP/s"] = gflops;
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK(BM_PeakFma)->DenseRange(0, 2)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

// Counters from our own wall clock around the timed loop, so they print as plain numbers.
void report_gemm(benchmark::State& state, double flops_per_iter, double seconds) {
  const double gflops = flops_per_iter * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["fraction_of_peak"] = gflops / measured_peak_gflops();
  // OpenBLAS 0.3.21 runs its Haswell (AVX2) kernels on CPUs newer than it knows (Zen 5
  // here): this is the ceiling of the code it actually runs.
  if (measured_peak_gflops(kAvx2) > 0)
    state.counters["fraction_of_avx2_peak"] = gflops / measured_peak_gflops(kAvx2);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// a (M, K) @ b (K, N), f32.
void BM_MatmulSquare(benchmark::State& state) {
  const int64_t n = state.range(0);
  NoGrad ng;
  const Tensor a = Tensor::randn({n, n}, 1), b = Tensor::randn({n, n}, 2);
  const double t0 = now_s();
  for (auto _ : state) benchmark::DoNotOptimize(matmul(a, b).data_ptr());
  report_gemm(state, 2.0 * n * n * n, now_s() - t0);
}
BENCHMARK(BM_MatmulSquare)->Arg(128)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// LLM-like: x (tokens, in) @ w (out, in)^T, as linear() computes every projection.
void BM_LinearLLM(benchmark::State& state) {
  const int64_t t = state.range(0), in = state.range(1), out = state.range(2);
  NoGrad ng;
  const Tensor x = Tensor::randn({t, in}, 3), w = Tensor::randn({out, in}, 4);
  const double t0 = now_s();
  for (auto _ : state) benchmark::DoNotOptimize(matmul(x, w, false, true).data_ptr());
  report_gemm(state, 2.0 * t * in * out, now_s() - t0);
}
BENCHMARK(BM_LinearLLM)
    ->ArgNames({"tokens", "in", "out"})
    // bench_train_step's shapes (8 x 128 tokens, dim 256, hidden 768, vocab 2048)
    ->Args({1024, 256, 768})->Args({1024, 768, 256})->Args({1024, 256, 2048})
    // a 7B-class layer at a small token batch, and one decode row
    ->Args({512, 4096, 4096})->Args({512, 4096, 11008})->Args({1, 4096, 4096})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The batch-invariant product (kernels/cpu/gemm_invariant.cc, taken under
// BatchInvariantScope) against OpenBLAS, on the kernel directly, at the shapes of the RL
// loop's ~1M-parameter model: c (M, N) = x (M, K) @ w (N, K)^T as linear() computes it, for
// one decode row (M 1), a rollout batch (M 64) and a training batch of tokens (M 4096).
// invariant 0 is OpenBLAS, 1 the invariant kernel (label: its ISA).
void BM_GemmLinearInvariant(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool invariant = state.range(3) != 0;
  BatchInvariantScope scope(invariant);
  const Tensor x = Tensor::randn({1, m, k}, 5), w = Tensor::randn({1, n, k}, 6);
  Tensor c = Tensor::empty({1, m, n});
  const double t0 = now_s();
  for (auto _ : state) {
    kernels::gemm()(Device::cpu(), x, w, c, false, true, 1.0, 0.0);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  report_gemm(state, 2.0 * m * n * k, now_s() - t0);
  state.SetLabel(invariant ? cpu::invariant_product_isa() : "openblas");
}
BENCHMARK(BM_GemmLinearInvariant)
    ->ArgNames({"M", "N", "K", "invariant"})
    ->Apply([](benchmark::internal::Benchmark* b) {
      // (N, K): the lm head, the projections (q, kv, MLP up and down, low-rank).
      const int64_t nk[][2] = {{1024, 128}, {384, 128}, {256, 128}, {192, 128}, {128, 128},
                               {96, 128},   {64, 128},  {48, 128},  {40, 128},  {128, 384},
                               {128, 64},   {128, 48},  {128, 32}};
      for (int64_t m : {1, 64, 4096})
        for (const auto& s : nk)
          for (int inv : {0, 1}) b->Args({m, s[0], s[1], inv});
    })
    ->UseRealTime()->Unit(benchmark::kMicrosecond);

// The backward products of the lm head over 4096 tokens: dx = dy @ w (M 4096, N 128,
// K 1024) and dw = dy^T @ x (M 1024, N 128, K 4096, a transposed: K is the tokens).
void BM_GemmGradInvariant(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool ta = state.range(3) != 0, invariant = state.range(4) != 0;
  BatchInvariantScope scope(invariant);
  const Tensor a = Tensor::randn(ta ? Shape{1, k, m} : Shape{1, m, k}, 7);
  const Tensor b = Tensor::randn({1, k, n}, 8);
  Tensor c = Tensor::empty({1, m, n});
  const double t0 = now_s();
  for (auto _ : state) {
    kernels::gemm()(Device::cpu(), a, b, c, ta, false, 1.0, 0.0);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  report_gemm(state, 2.0 * m * n * k, now_s() - t0);
  state.SetLabel(invariant ? cpu::invariant_product_isa() : "openblas");
}
BENCHMARK(BM_GemmGradInvariant)
    ->ArgNames({"M", "N", "K", "trans_a", "invariant"})
    ->Args({4096, 128, 1024, 0, 0})->Args({4096, 128, 1024, 0, 1})
    ->Args({1024, 128, 4096, 1, 0})->Args({1024, 128, 4096, 1, 1})
    ->UseRealTime()->Unit(benchmark::kMicrosecond);

// Theoretical figure: 2 FMA pipes x lanes x 2 FLOP x GHz x threads (an assumption).
std::string theoretical_peak() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  double mhz = 0;
  while (std::getline(f, line))
    if (line.rfind("cpu MHz", 0) == 0) {
      mhz = std::stod(line.substr(line.find(':') + 1));
      break;
    }
  if (mhz <= 0) return "unknown (no cpu MHz in /proc/cpuinfo)";
  __builtin_cpu_init();
  const int lanes = __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 4;
  const double g = 2.0 * lanes * 2.0 * mhz / 1e3 * omp_get_max_threads();
  return std::to_string(g) + " (2 FMA pipes x " + std::to_string(lanes) + " lanes at " +
         std::to_string(mhz) + " MHz x " + std::to_string(omp_get_max_threads()) + " threads)";
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("theoretical_peak_gflops", r1::theoretical_peak());
  benchmark::AddCustomContext("measured_peak_gflops",
                              std::to_string(r1::measured_peak_gflops()));
  benchmark::AddCustomContext("measured_peak_gflops_sse2_avx2_avx512",
                              std::to_string(r1::measured_peak_gflops(0)) + " " +
                                  std::to_string(r1::measured_peak_gflops(1)) + " " +
                                  std::to_string(r1::measured_peak_gflops(2)));
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
