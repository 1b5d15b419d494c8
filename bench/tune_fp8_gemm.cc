// r1-fp8-tune: the tile-shape sweep of the wgmma FP8 GEMM (kernels/cuda/fp8/gemm_fp8_wgmma.cu)
// on the GPU it runs on. For each shape, every compiled configuration is first checked
// against the simple CUDA kernel (the on-GPU oracle: normwise relative error below 1e-3, no
// NaN), then timed (CUDA events, 10 back-to-back launches per sample, the median of 5
// samples after a warm-up); the fastest passing configuration goes into the tuned table,
// written atomically where the kernel reads it (fp8_wgmma_table_path, or --out).
//
//   r1-fp8-tune [--out FILE] [--m 64,128,...] [--nk 2112x7168,...]
//
// Defaults: DeepSeek-V3's linear-layer shapes (N x K in 2112x7168, 24576x1536, 32768x512,
// 7168x16384, 4096x7168, 7168x2048) at M in 64 .. 4096 (powers of two). Exit 1 when a
// configuration fails its check (the table is still written from the passing ones), 2 on
// bad flags, 0 otherwise; without a Hopper GPU it says so and exits 0 having written nothing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "engine/atomic_file.h"
#include "engine/kernels.h"
#include "engine/tensor.h"

#if defined(R1_HAVE_CUDA)
#include <cuda_runtime.h>

#include "bench/cuda_data.h"
#include "engine/cuda/stream.h"
#include "kernels/cuda/fp8/gemm_fp8_simple.h"
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"
#endif

namespace {

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "r1-fp8-tune: %s\nusage: r1-fp8-tune [--out FILE] [--m 64,128,...] "
               "[--nk 2112x7168,...]\n", problem.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t e = s.find(sep, at);
    out.push_back(s.substr(at, e == std::string::npos ? std::string::npos : e - at));
    if (e == std::string::npos) break;
    at = e + 1;
  }
  return out;
}

int64_t parse_positive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x <= 0 || x > (1ll << 20))
    usage(fmt::format("{}: '{}' is not a positive size", flag, v));
  return x;
}

}  // namespace

#if defined(R1_HAVE_CUDA)
namespace r1 {
namespace {

const Device kGpu = Device::cuda(0);

struct GemmShape {
  int64_t m, n, k;
};

struct Result {
  GemmShape s;
  std::vector<std::pair<cuda::Fp8WgmmaConfig, double>> tflops;  // passing configs
  std::vector<std::string> failed;
  bool device_lost = false;  // a sticky CUDA error: nothing after this can run
};

double median_ms(const std::function<void()>& fn) {
  const cudaStream_t st = cuda::current_stream(0);
  fn();
  synchronize(kGpu);
  cuda::Event a(true), b(true);
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    a.record(st);
    for (int r = 0; r < 10; ++r) fn();
    b.record(st);
    b.synchronize();
    ms.push_back(a.elapsed_ms(b) / 10);
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

// Normwise relative error of got against want (both f32 on the device); inf when got has a
// NaN or an infinity.
double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = got.to_float_vector(), w = want.to_float_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += (double{g[i]} - w[i]) * (double{g[i]} - w[i]);
    den += double{w[i]} * w[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

Result tune(const GemmShape& s) {
  Result r{s, {}, {}};
  const Tensor a = bench::dev_randn({s.m, s.k}, DType::BF16, 11),
               b = bench::dev_randn({s.n, s.k}, DType::BF16, 12);
  Tensor aq = Tensor::empty({s.m, s.k}, DType::E4M3, kGpu);
  Tensor as = Tensor::empty({s.m, fp8_blocks(s.k)}, DType::F32, kGpu);
  Tensor bq = Tensor::empty({s.n, s.k}, DType::E4M3, kGpu);
  Tensor bs = Tensor::empty({fp8_blocks(s.n), fp8_blocks(s.k)}, DType::F32, kGpu);
  kernels::quantize_fp8_rows()(kGpu, a, aq, as);
  kernels::quantize_fp8_blocks()(kGpu, b, bq, bs);
  Tensor want = Tensor::empty({s.m, s.n}, DType::F32, kGpu);
  cuda::gemm_fp8_blockscaled_simple(aq, as, bq, bs, want);
  Tensor d32 = Tensor::empty({s.m, s.n}, DType::F32, kGpu);
  Tensor d16 = Tensor::empty({s.m, s.n}, DType::BF16, kGpu);
  // The reference rounded to bf16, for the timed (bf16 out) instantiation's check.
  const Tensor want16 = want.to(DType::BF16).to(DType::F32);
  for (const cuda::Fp8WgmmaConfig& c : cuda::fp8_wgmma_configs()) {
    // A configuration that throws (a launch it cannot make) is a failed one, not the end of
    // the sweep; a sticky error (a fault) ends it, and the shapes done so far are written.
    try {
      const cudaStream_t st = cuda::current_stream(0);
      cudaMemsetAsync(d32.data_ptr(), 0xff, d32.nbytes(), st);  // NaN
      cudaMemsetAsync(d16.data_ptr(), 0xff, d16.nbytes(), st);
      cuda::gemm_fp8_blockscaled_wgmma(aq, as, bq, bs, d32, &c);
      cuda::gemm_fp8_blockscaled_wgmma(aq, as, bq, bs, d16, &c);
      const double err = rel_error(d32, want);
      const double err16 = rel_error(d16.to(DType::F32), want16);
      if (!(err < 1e-3) || !(err16 < 1e-2)) {
        r.failed.push_back(fmt::format("{} (relative error {:.3g} f32 out, {:.3g} bf16 out)",
                                       c.name(), err, err16));
        continue;
      }
      const double ms =
          median_ms([&] { cuda::gemm_fp8_blockscaled_wgmma(aq, as, bq, bs, d16, &c); });
      r.tflops.emplace_back(c, 2.0 * s.m * s.n * s.k / (ms * 1e-3) / 1e12);
    } catch (const std::exception& e) {
      r.failed.push_back(fmt::format("{} (threw: {})", c.name(), e.what()));
      const cudaError_t ce = cudaDeviceSynchronize();
      if (ce != cudaSuccess && cudaGetLastError() != cudaSuccess &&
          cudaDeviceSynchronize() != cudaSuccess) {
        r.device_lost = true;
        return r;
      }
    }
  }
  return r;
}

int run(const std::string& out_flag, const std::vector<int64_t>& ms,
        const std::vector<std::pair<int64_t, int64_t>>& nks) {
  if (!device_available(DeviceType::CUDA) || !cuda::fp8_wgmma_supported(0)) {
    std::printf("r1-fp8-tune: no Hopper (sm_90) GPU here; nothing to tune\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const std::string out = out_flag.empty() ? cuda::fp8_wgmma_table_path(0) : out_flag;
  // Each shape once (a repeated --m or --nk would write duplicate lines, which the table's
  // reader rejects), and the output's folder made (and writable) before the sweep, not after.
  std::vector<GemmShape> shapes;
  for (auto [n, k] : nks)
    for (int64_t m : ms)
      if (std::none_of(shapes.begin(), shapes.end(), [&](const GemmShape& x) {
            return x.m == m && x.n == n && x.k == k;
          }))
        shapes.push_back({m, n, k});
  {
    const std::filesystem::path dir = std::filesystem::path(out).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    const std::string probe = out + ".probe";
    write_file_atomic(probe, "");
    std::filesystem::remove(probe, ec);
  }
  std::string table = fmt::format(
      "# Tuned tile shapes of the wgmma FP8 GEMM on {} ({} SMs), written by r1-fp8-tune.\n"
      "# m n k config tflops   # every passing configuration's TFLOP/s (bf16 out)\n",
      prop.name, prop.multiProcessorCount);
  int failures = 0;
  bool lost = false;
  size_t done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < shapes.size() && !lost; ++i) {
    const Result r = tune(shapes[i]);
    lost = r.device_lost;
    done = i + 1;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double eta = el / static_cast<double>(i + 1) * static_cast<double>(shapes.size() - i - 1);
    std::string all;
    for (const auto& [c, tf] : r.tflops) all += fmt::format(" {} {:.0f}", c.name(), tf);
    for (const std::string& f : r.failed) {
      std::fprintf(stderr, "r1-fp8-tune: M=%lld N=%lld K=%lld: %s FAILED its check\n",
                   static_cast<long long>(r.s.m), static_cast<long long>(r.s.n),
                   static_cast<long long>(r.s.k), f.c_str());
      ++failures;
    }
    if (!r.tflops.empty()) {
      const auto best = *std::max_element(r.tflops.begin(), r.tflops.end(),
                                          [](const auto& x, const auto& y) { return x.second < y.second; });
      table += fmt::format("{} {} {} {} {:.1f}  #{}\n", r.s.m, r.s.n, r.s.k, best.first.name(),
                           best.second, all);
    }
    std::printf("[%zu/%zu] M=%lld N=%lld K=%lld:%s  (%.1f shapes/s, ETA %.0f s)\n", i + 1,
                shapes.size(), static_cast<long long>(r.s.m), static_cast<long long>(r.s.n),
                static_cast<long long>(r.s.k), all.c_str(), static_cast<double>(i + 1) / el, eta);
    std::fflush(stdout);
  }
  write_file_atomic(out, table);
  std::printf("r1-fp8-tune: wrote %s (%zu of %zu shapes)%s%s\n", out.c_str(), done,
              shapes.size(), failures ? "; some configurations FAILED their checks" : "",
              lost ? "; stopped by a sticky CUDA error (the device is unusable)" : "");
  return failures || lost ? 1 : 0;
}

}  // namespace
}  // namespace r1
#endif

int main(int argc, char** argv) {
  std::string out;
  std::vector<int64_t> ms = {64, 128, 256, 512, 1024, 2048, 4096};
  std::vector<std::pair<int64_t, int64_t>> nks = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                                  {7168, 16384}, {4096, 7168},  {7168, 2048}};
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) usage(f + " needs a value");
    const std::string v = argv[++i];
    if (f == "--out") {
      out = v;
    } else if (f == "--m") {
      ms.clear();
      for (const std::string& x : split(v, ',')) ms.push_back(parse_positive(f, x));
    } else if (f == "--nk") {
      nks.clear();
      for (const std::string& x : split(v, ',')) {
        const std::vector<std::string> p = split(x, 'x');
        if (p.size() != 2) usage(fmt::format("--nk: '{}' is not NxK", x));
        nks.emplace_back(parse_positive(f, p[0]), parse_positive(f, p[1]));
      }
    } else {
      usage("unknown flag " + f);
    }
  }
#if defined(R1_HAVE_CUDA)
  try {
    return r1::run(out, ms, nks);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "r1-fp8-tune: %s\n", e.what());
    return 1;
  }
#else
  std::printf("r1-fp8-tune: built without CUDA; nothing to tune\n");
  return 0;
#endif
}
