// CUDA gemm (cuBLASLt, kernels/cuda/gemm_cublaslt.cu) against an fp64 triple loop on the same
// rounded inputs: one table of (B, M, N, K) shapes, each run for the four transpose
// combinations and for f32 and bf16, with broadcast operands, alpha/beta over a random c,
// pointers off alignment, and empty K, M, N. Outputs with beta == 0 start poisoned (NaN
// bytes): a kernel that reads c then, or skips an element, fails. Then matmul and linear with
// backward on the GPU against the CPU in f64. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "tests/harness.h"

#if defined(R1_HAVE_CUDA)
#include "engine/cuda/stream.h"
#include "kernels/cuda/gemm_cublaslt.h"
#endif

namespace r1 {
namespace {

using test::case_seed;

const Device kGpu = Device::cuda(0);
// Drawn (and printed) at startup, so every run names its seed, a skipped one included.
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();

// A product whose reference costs more multiply-adds than this is checked on a sample of
// rows and columns (kSampled of each per batch entry); the whole output is still scanned for
// NaN (an element left unwritten). Keeps the fp64 loop to a few 1e8 flops for the whole file.
constexpr int64_t kFullReferenceMacs = int64_t{1} << 22;
constexpr int64_t kSampled = 64;

struct GemmCase {
  int64_t batch, m, n, k;
  int64_t batch_a, batch_b;  // batch or 1 (broadcast)
  double alpha, beta;
  bool offset;  // a, b, c start one element into their buffers (not 16-byte aligned)
};

const GemmCase kCases[] = {
    {1, 1, 1, 1, 1, 1, 1.0, 0.0, false},
    {1, 3, 5, 7, 1, 1, 1.0, 0.0, false},
    {1, 3, 5, 7, 1, 1, -0.5, 0.75, true},
    {2, 17, 33, 65, 2, 2, 1.25, 0.0, false},
    {3, 17, 33, 65, 1, 3, 0.5, -1.5, false},  // a broadcast
    {3, 17, 33, 65, 3, 1, 1.0, 1.0, false},   // b broadcast (folds into M unless trans_a)
    {4, 9, 16, 31, 4, 1, -1.0, 0.0, true},    // b broadcast, unaligned
    {3, 8, 12, 20, 1, 1, 0.75, 0.0, false},   // both broadcast: every c[b] equal
    {2, 5, 6, 0, 2, 2, 1.0, 0.0, false},      // K = 0: c := 0 without reading c
    {2, 5, 6, 0, 2, 2, 1.0, 2.0, false},      // K = 0: c := beta c
    {1, 0, 6, 4, 1, 1, 1.0, 0.0, false},      // M = 0
    {2, 4, 0, 4, 2, 2, 1.0, 0.0, false},      // N = 0
    {1, 512, 2048, 1024, 1, 1, 1.0, 0.5, false},
    {1, 4096, 7168, 2048, 1, 1, 1.0, 0.0, false},
};

// Tolerance against the fp64 reference for a K-term product of N(0, 1) values scaled by
// `scale`: f32 differs by accumulation order (rtol 1e-4); bf16 carries one output rounding
// (2^-9) on top of fp32 accumulation (rtol 1e-2). The atol grows like the sum, sqrt(K).
test::Tol gemm_tol(DType dt, int64_t k, double scale) {
  const double t = dt == DType::BF16 ? 1e-2 : 1e-4;
  return {t * std::sqrt(static_cast<double>(std::max<int64_t>(k, 1))) * scale, t};
}

// host (contiguous CPU) copied to the GPU as dt; with `offset`, one element into a larger
// buffer, so the data pointer is only element-aligned.
Tensor to_gpu(const Tensor& host, DType dt, bool offset) {
  const Tensor h = host.to(dt);
  if (!offset) return h.to(kGpu);
  Tensor base = Tensor::empty({h.numel() + 1}, dt, kGpu);
  Tensor t = base.narrow(0, 1, h.numel()).view(h.shape());
  t.copy_(h);
  return t;
}

Tensor poisoned_gpu(const Shape& shape, DType dt, bool offset) {
  if (!offset) return test::poisoned(shape, dt, kGpu);
  Tensor base = test::poisoned({shape_numel(shape) + 1}, dt, kGpu);
  return base.narrow(0, 1, shape_numel(shape)).view(shape);
}

// Indices 0..n-1, or kSampled of them (sorted, seeded) when `sample`.
std::vector<int64_t> pick(int64_t n, bool sample, std::mt19937_64& rng) {
  std::vector<int64_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  if (!sample || n <= kSampled) return all;
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(kSampled);
  std::sort(all.begin(), all.end());
  return all;
}

// c (B, M, N) = alpha op(a) op(b) + beta c0 in fp64 at rows x cols of every batch entry, in
// that order. a (Ba, M, K) or (Ba, K, M), b (Bb, K, N) or (Bb, N, K), c0: f64 contiguous CPU
// (c0 undefined when beta == 0).
std::vector<double> reference_gemm(const Tensor& a, const Tensor& b, const Tensor& c0,
                                   const GemmCase& g, bool ta, bool tb,
                                   const std::vector<int64_t>& rows,
                                   const std::vector<int64_t>& cols) {
  const double* pa = a.data<double>();
  const double* pb = b.data<double>();
  const int64_t M = g.m, N = g.n, K = g.k;
  std::vector<double> out;
  out.reserve(g.batch * rows.size() * cols.size());
  for (int64_t bi = 0; bi < g.batch; ++bi) {
    const double* ab = pa + (g.batch_a == 1 ? 0 : bi) * M * K;
    const double* bb = pb + (g.batch_b == 1 ? 0 : bi) * K * N;
    for (int64_t i : rows)
      for (int64_t j : cols) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += (ta ? ab[k * M + i] : ab[i * K + k]) * (tb ? bb[j * K + k] : bb[k * N + j]);
        double v = g.alpha * acc;
        if (g.beta != 0.0) v += g.beta * c0.data<double>()[(bi * M + i) * N + j];
        out.push_back(v);
      }
  }
  return out;
}

// The elements of c (B, M, N) at rows x cols of every batch entry, in reference order.
std::vector<double> gather(const std::vector<double>& c, const GemmCase& g,
                           const std::vector<int64_t>& rows, const std::vector<int64_t>& cols) {
  std::vector<double> out;
  out.reserve(g.batch * rows.size() * cols.size());
  for (int64_t bi = 0; bi < g.batch; ++bi)
    for (int64_t i : rows)
      for (int64_t j : cols) out.push_back(c[(bi * g.m + i) * g.n + j]);
  return out;
}

void run_gemm_case(const GemmCase& g, DType dt, bool ta, bool tb, uint64_t seed) {
  const std::string name =
      fmt::format("gemm {} B {} M {} N {} K {} Ba {} Bb {} trans_a {} trans_b {} alpha {} "
                  "beta {}{}",
                  dtype_name(dt), g.batch, g.m, g.n, g.k, g.batch_a, g.batch_b, ta, tb,
                  g.alpha, g.beta, g.offset ? " offset" : "");
  SCOPED_TRACE(name);
  const Shape sa = ta ? Shape{g.batch_a, g.k, g.m} : Shape{g.batch_a, g.m, g.k};
  const Shape sb = tb ? Shape{g.batch_b, g.n, g.k} : Shape{g.batch_b, g.k, g.n};
  const Shape sc = {g.batch, g.m, g.n};
  const Tensor a = Tensor::randn(sa, seed + 1);
  const Tensor b = Tensor::randn(sb, seed + 2);
  const Tensor a_gpu = to_gpu(a, dt, g.offset), b_gpu = to_gpu(b, dt, g.offset);
  Tensor c0, c_gpu;
  if (g.beta == 0.0) {
    c_gpu = poisoned_gpu(sc, dt, g.offset);
  } else {
    c0 = Tensor::randn(sc, seed + 3);
    c_gpu = to_gpu(c0, dt, g.offset);
  }
  kernels::gemm()(kGpu, a_gpu, b_gpu, c_gpu, ta, tb, g.alpha, g.beta);
  const std::vector<double> got = c_gpu.to_double_vector();
  if (got.empty()) return;  // M or N = 0: nothing to write, and it did not throw

  const bool sample = g.batch * g.m * g.n * g.k > kFullReferenceMacs;
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> rows = pick(g.m, sample, rng), cols = pick(g.n, sample, rng);
  const std::vector<double> want =
      reference_gemm(test::rounded_f64(a, dt), test::rounded_f64(b, dt),
                     c0.defined() ? test::rounded_f64(c0, dt) : Tensor(), g, ta, tb, rows, cols);
  const test::Tol tol = gemm_tol(dt, g.k, std::fabs(g.alpha) + std::fabs(g.beta));
  test::expect_close(name, gather(got, g, rows, cols), want, tol.atol, tol.rtol);
  if (sample) {
    const auto bad =
        std::count_if(got.begin(), got.end(), [](double v) { return !std::isfinite(v); });
    EXPECT_EQ(bad, 0) << name << ": elements left unwritten (NaN) or not finite";
  }
}

TEST(CudaGemm, MatchesFp64ReferenceOverTheTable) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 0;
  for (const GemmCase& g : kCases)
    for (DType dt : {DType::F32, DType::BF16})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) run_gemm_case(g, dt, ta, tb, case_seed(++k));
}

// The same shape twice with different alignment: the algorithm cache must not hand the
// aligned problem's algorithm to the unaligned one (its key includes the alignment).
TEST(CudaGemm, AlignedThenUnalignedSameShape) {
  R1_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    run_gemm_case({2, 64, 128, 96, 2, 2, 1.0, 0.0, false}, dt, false, true, case_seed(500));
    run_gemm_case({2, 64, 128, 96, 2, 2, 1.0, 0.0, true}, dt, false, true, case_seed(501));
  }
}

TEST(CudaGemm, RejectsUnsupportedDtypesAndShapes) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor a64 = Tensor::zeros({1, 4, 8}, DType::F64, kGpu);
  const Tensor b64 = Tensor::zeros({1, 8, 4}, DType::F64, kGpu);
  Tensor c64 = Tensor::empty({1, 4, 4}, DType::F64, kGpu);
  EXPECT_THROW(kernels::gemm()(kGpu, a64, b64, c64, false, false, 1.0, 0.0), Error);
  const Tensor a = Tensor::zeros({1, 4, 8}, DType::F32, kGpu);
  const Tensor b16 = Tensor::zeros({1, 8, 4}, DType::BF16, kGpu);
  Tensor c = Tensor::empty({1, 4, 4}, DType::F32, kGpu);
  EXPECT_THROW(kernels::gemm()(kGpu, a, b16, c, false, false, 1.0, 0.0), Error);
  const Tensor b_bad = Tensor::zeros({1, 7, 4}, DType::F32, kGpu);  // K 7 against 8
  EXPECT_THROW(kernels::gemm()(kGpu, a, b_bad, c, false, false, 1.0, 0.0), Error);
}

#if defined(R1_HAVE_CUDA)
// The benchmark entry point: d (M, N) = a (M, K) @ b (N, K)^T in bf16 on raw pointers.
TEST(CudaGemm, BenchEntryPointIsTheNtProduct) {
  R1_SKIP_WITHOUT_CUDA();
  const GemmCase g{1, 96, 80, 200, 1, 1, 1.0, 0.0, false};
  const uint64_t seed = case_seed(600);
  const Tensor a = Tensor::randn({1, g.m, g.k}, seed + 1);
  const Tensor b = Tensor::randn({1, g.n, g.k}, seed + 2);
  const Tensor a_gpu = a.to(DType::BF16).to(kGpu), b_gpu = b.to(DType::BF16).to(kGpu);
  Tensor d = test::poisoned({1, g.m, g.n}, DType::BF16, kGpu);
  cuda::cublaslt_gemm_bf16_bench(a_gpu.data_ptr(), b_gpu.data_ptr(), d.data_ptr(), g.m, g.n,
                                 g.k, cuda::current_stream(0));
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> rows = pick(g.m, false, rng), cols = pick(g.n, false, rng);
  const std::vector<double> want =
      reference_gemm(test::rounded_f64(a, DType::BF16), test::rounded_f64(b, DType::BF16),
                     Tensor(), g, false, true, rows, cols);
  const test::Tol tol = gemm_tol(DType::BF16, g.k, 1.0);
  test::expect_close("cublaslt_gemm_bf16_bench", d.to_double_vector(), want, tol.atol,
                     tol.rtol);
}
#endif  // R1_HAVE_CUDA

// ---- matmul and linear with backward: GPU (f32, bf16) against CPU f64 --------------------

struct MatmulCase {
  Shape batch;  // a's batch dims
  int64_t m, k, n;
  bool b_2d;  // b broadcast over a's batch
};

// The gradient of every operand with respect to a random output gradient, from the GPU in
// `dt` and from the CPU in f64 on the same rounded values. `contraction` gives each checked
// tensor's sum length (output first, then each input's gradient) for its tolerance.
void expect_backward_matches(const std::string& name, DType dt,
                             const std::function<Tensor(const std::vector<Tensor>&)>& f,
                             const std::vector<Tensor>& host_inputs, const Shape& out_shape,
                             const std::vector<int64_t>& contraction, uint64_t seed) {
  SCOPED_TRACE(name);
  const Tensor dout = Tensor::randn(out_shape, seed);
  std::vector<Tensor> ref_in, gpu_in;
  for (const Tensor& h : host_inputs) {
    ref_in.push_back(test::rounded_f64(h, dt).set_requires_grad());
    gpu_in.push_back(h.to(dt).to(kGpu).set_requires_grad());
  }
  const Tensor ref_out = f(ref_in);
  backward(ref_out, test::rounded_f64(dout, dt));
  const Tensor gpu_out = f(gpu_in);
  backward(gpu_out, dout.to(dt).to(kGpu));

  auto check = [&](const std::string& what, const Tensor& got, const Tensor& want, int64_t k) {
    ASSERT_TRUE(got.defined()) << name << ": " << what << " missing";
    EXPECT_EQ(got.dtype(), dt) << name << ": " << what;
    const test::Tol tol = gemm_tol(dt, k, 1.0);
    test::expect_close(name + " " + what, got, want, tol.atol, tol.rtol);
  };
  check("output", gpu_out, ref_out, contraction[0]);
  for (size_t i = 0; i < gpu_in.size(); ++i)
    check(fmt::format("grad of input {}", i), gpu_in[i].grad(), ref_in[i].grad(),
          contraction[i + 1]);
}

TEST(CudaGemm, MatmulBackwardMatchesCpuF64) {
  R1_SKIP_WITHOUT_CUDA();
  const MatmulCase cases[] = {
      {{}, 19, 24, 9, false},
      {{2, 2}, 17, 24, 9, true},  // b 2-d: its gradient sums over the 4 batch entries
      {{3}, 5, 33, 7, false},
  };
  uint64_t k = 1000;
  for (const MatmulCase& c : cases)
    for (DType dt : {DType::F32, DType::BF16})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          Shape sa = c.batch, sb = c.b_2d ? Shape{} : c.batch, so = c.batch;
          sa.insert(sa.end(), {ta ? c.k : c.m, ta ? c.m : c.k});
          sb.insert(sb.end(), {tb ? c.n : c.k, tb ? c.k : c.n});
          so.insert(so.end(), {c.m, c.n});
          const int64_t batch = shape_numel(c.batch);
          const uint64_t seed = case_seed(++k);
          expect_backward_matches(
              fmt::format("matmul {} a {} b {} trans_a {} trans_b {}", dtype_name(dt),
                          shape_str(sa), shape_str(sb), ta, tb),
              dt, [&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
              {Tensor::randn(sa, seed + 1), Tensor::randn(sb, seed + 2)}, so,
              {c.k, c.n, c.b_2d ? batch * c.m : c.m}, seed + 3);
        }
}

TEST(CudaGemm, LinearBackwardMatchesCpuF64) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t in = 40, out = 24;
  const Shape sx = {3, 5, in};
  uint64_t k = 2000;
  for (DType dt : {DType::F32, DType::BF16}) {
    const uint64_t seed = case_seed(++k);
    expect_backward_matches(
        fmt::format("linear {} x {} w ({}, {})", dtype_name(dt), shape_str(sx), out, in), dt,
        [](const std::vector<Tensor>& v) { return linear(v[0], v[1]); },
        {Tensor::randn(sx, seed + 1), Tensor::randn({out, in}, seed + 2)}, {3, 5, out},
        {in, out, 15}, seed + 3);
  }
}

TEST(CudaGemm, LinearWithBiasBackwardMatchesCpuF64) {
  R1_SKIP_WITHOUT_CUDA();
  // The bias gradient is a column sum (the reduce kernel), which is not this file's subject.
  if (!kernels::reduce().has(DeviceType::CUDA)) GTEST_SKIP() << "reduce has no CUDA kernel yet";
  const int64_t in = 40, out = 24;
  const Shape sx = {3, 5, in};
  uint64_t k = 3000;
  for (DType dt : {DType::F32, DType::BF16}) {
    const uint64_t seed = case_seed(++k);
    expect_backward_matches(
        fmt::format("linear+bias {} x {} w ({}, {})", dtype_name(dt), shape_str(sx), out, in),
        dt, [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); },
        {Tensor::randn(sx, seed + 1), Tensor::randn({out, in}, seed + 2),
         Tensor::randn({out}, seed + 3)},
        {3, 5, out}, {in, out, 15, 15}, seed + 4);
  }
}

}  // namespace
}  // namespace r1
