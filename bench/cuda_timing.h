// CUDA-event timing shared by the GPU benchmarks (bench_cuda_kernels, bench_fp8_gemm): each
// benchmark iteration is kReps back-to-back launches on the current stream, timed with events
// (manual time), after one warm-up launch; no host sync inside the timed region.
#pragma once
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>

#include "engine/cuda/stream.h"
#include "engine/device.h"

namespace r1::bench {

inline constexpr int kReps = 10;

// Ceilings measured at start-up by the binary that has them (0: not measured, no fraction).
struct Ceilings {
  double copy_gbps = 0;    // device-to-device copy, read + write bytes per second / 1e9
  double gemm_tflops = 0;  // cuBLASLt bf16 at 8192^3
};
inline Ceilings& ceilings() {
  static Ceilings c;
  return c;
}

// Runs fn kReps times per iteration; reports us per launch, GB/s and TFLOP/s when bytes or
// flops (per launch) are given, and their fractions of the ceilings.
inline void run_timed(benchmark::State& st, double bytes, double flops,
                      const std::function<void()>& fn) {
  const cudaStream_t s = cuda::current_stream(0);
  try {
    fn();  // warm-up: first-touch allocations, cuBLASLt heuristics, lazy module loading
    synchronize(Device::cuda(0));
  } catch (const std::exception& e) {
    // A kernel that cannot run (a launch error, a shape it rejects) is one failed row, not
    // the end of the binary: the H200 run of ee1d294 lost every benchmark after one.
    st.SkipWithError(e.what());
    return;
  }
  cuda::Event start(true), stop(true);
  double total_s = 0;
  int64_t launches = 0;
  for (auto _ : st) {
    start.record(s);
    for (int i = 0; i < kReps; ++i) fn();
    stop.record(s);
    stop.synchronize();
    const double sec = start.elapsed_ms(stop) / 1e3 / kReps;
    st.SetIterationTime(sec);
    total_s += sec * kReps;
    launches += kReps;
  }
  const double per = total_s / static_cast<double>(std::max<int64_t>(launches, 1));
  st.counters["us"] = per * 1e6;
  if (bytes > 0) {
    const double gbps = bytes / per / 1e9;
    st.counters["GB/s"] = gbps;
    if (ceilings().copy_gbps > 0) st.counters["frac_copy"] = gbps / ceilings().copy_gbps;
  }
  if (flops > 0) {
    const double tflops = flops / per / 1e12;
    st.counters["TFLOP/s"] = tflops;
    if (ceilings().gemm_tflops > 0) st.counters["frac_gemm"] = tflops / ceilings().gemm_tflops;
  }
}

// fn as a benchmark body whose setup errors (allocation, upload) mark the row failed instead
// of ending the binary.
inline auto guarded(void (*fn)(benchmark::State&)) {
  return [fn](benchmark::State& st) {
    try {
      fn(st);
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
    }
  };
}

// A GPU benchmark binary on a machine without a device: says so and returns its exit status,
// 0, or 1 under R1_REQUIRE_CUDA=1 (scripts/gpu-check.sh), where a missing GPU is a failure.
inline int missing_gpu_status(const char* binary) {
  std::printf("%s: no CUDA device; nothing to measure\n", binary);
  const char* req = std::getenv("R1_REQUIRE_CUDA");
  return req != nullptr && std::string(req) == "1" ? 1 : 0;
}

}  // namespace r1::bench
