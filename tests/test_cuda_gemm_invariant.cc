// The batch-invariant bf16 GEMM (kernels/cuda/gemm_bf16_mma.cu): against an fp64 loop on the
// same bf16 inputs, and bit for bit against itself when a row moves to another batch (alone,
// among other rows, at another index) or the stage count changes. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tests/harness.h"

#if defined(R1_HAVE_CUDA)
#include "kernels/cuda/gemm_bf16_mma.h"
#endif

namespace r1 {
namespace {

using test::case_seed;

[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();

#if defined(R1_HAVE_CUDA)

const Device kGpu = Device::cuda(0);

// d = a b^T on the GPU into a poisoned (M, N) tensor of dtype `out`.
Tensor run(const Tensor& a, const Tensor& b, DType out, int stages) {
  Tensor d = test::poisoned({a.size(0), b.size(0)}, out, kGpu);
  cuda::gemm_bf16_nt_invariant(a.to(kGpu), b.to(kGpu), d, stages);
  return d;
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).contiguous();
  std::vector<unsigned char> v(h.nbytes());
  std::memcpy(v.data(), h.data_ptr(), v.size());
  return v;
}

TEST(CudaGemmInvariant, MatchesFp64Reference) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t shapes[][3] = {{1, 8, 8},       {37, 129, 72},   {130, 260, 1040},
                               {256, 384, 1024}, {5, 4096, 7168}, {3, 5, 0}};
  uint64_t k = 100;
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    const Tensor a = Tensor::randn({M, K}, case_seed(++k), DType::BF16);
    const Tensor b = Tensor::randn({N, K}, case_seed(++k), DType::BF16);
    const std::vector<double> av = a.to_double_vector(), bv = b.to_double_vector();
    std::vector<double> ref(static_cast<size_t>(M * N)), abs(ref.size());
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double v = 0, w = 0;
        for (int64_t l = 0; l < K; ++l) {
          const double p = av[static_cast<size_t>(i * K + l)] * bv[static_cast<size_t>(j * K + l)];
          v += p;
          w += std::fabs(p);
        }
        ref[static_cast<size_t>(i * N + j)] = v;
        abs[static_cast<size_t>(i * N + j)] = w;
      }
    // fp32 accumulation in any order: |error| <= K u sum |a b| (u = 2^-24), plus one bf16
    // rounding of the result (2^-8 relative) for bf16 output. Products of bf16 are exact.
    const double gamma = static_cast<double>(K + 2) * 0x1p-24;
    for (int stages : {1, 2})
      for (DType out : {DType::F32, DType::BF16}) {
        const std::vector<double> got = run(a, b, out, stages).to_double_vector();
        const double rtol = out == DType::BF16 ? 0x1p-8 : 0.0;
        int64_t bad = 0;
        size_t worst = 0;
        double worst_ratio = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const double err = std::fabs(got[i] - ref[i]);
          const double bound = rtol * std::fabs(ref[i]) + gamma * abs[i] + 1e-30;
          if (!(err <= bound)) ++bad;
          const double r = std::isnan(err) ? INFINITY : err / bound;
          if (r > worst_ratio) worst_ratio = r, worst = i;
        }
        EXPECT_EQ(bad, 0) << "(" << M << ", " << N << ", " << K << ") " << dtype_name(out)
                          << " stages=" << stages << ": " << bad << " of " << got.size()
                          << " out of bound; worst [" << worst << "] "
                          << (got.empty() ? 0.0 : got[worst]) << " vs "
                          << (ref.empty() ? 0.0 : ref[worst]) << " (" << worst_ratio << "x)";
      }
  }
}

TEST(CudaGemmInvariant, RowsDoNotDependOnTheBatch) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t M = 37, N = 300, K = 1040;
  const Tensor a = Tensor::randn({M, K}, case_seed(200), DType::BF16);
  const Tensor b = Tensor::randn({N, K}, case_seed(201), DType::BF16);
  const Tensor full = run(a, b, DType::F32, 2).to(Device::cpu());
  EXPECT_EQ(bytes_of(run(a, b, DType::F32, 1)), bytes_of(full)) << "stages 1 vs 2";
  for (int64_t i : {int64_t{0}, int64_t{17}, M - 1}) {
    // Alone.
    const Tensor one = run(a.narrow(0, i, 1).contiguous(), b, DType::F32, 2);
    EXPECT_EQ(bytes_of(one), bytes_of(full.narrow(0, i, 1))) << "row " << i << " alone";
    // At index 5 of a batch of 200 other rows (a different tile and grid row).
    Tensor batch = Tensor::randn({200, K}, case_seed(300 + static_cast<uint64_t>(i)),
                                 DType::BF16);
    batch.narrow(0, 5, 1).copy_(a.narrow(0, i, 1));
    const Tensor in_batch = run(batch, b, DType::F32, 2).to(Device::cpu());
    EXPECT_EQ(bytes_of(in_batch.narrow(0, 5, 1)), bytes_of(full.narrow(0, i, 1)))
        << "row " << i << " at index 5 of 200";
  }
}

TEST(CudaGemmInvariant, RejectsBadInput) {
  R1_SKIP_WITHOUT_CUDA();
  Tensor d = Tensor::empty({4, 4}, DType::F32, kGpu);
  const Tensor a12 = Tensor::zeros({4, 12}, DType::BF16, kGpu);
  EXPECT_THROW(cuda::gemm_bf16_nt_invariant(a12, a12, d), Error);  // K % 8 != 0
  const Tensor af = Tensor::zeros({4, 16}, DType::F32, kGpu);
  EXPECT_THROW(cuda::gemm_bf16_nt_invariant(af, af, d), Error);    // f32 inputs
  const Tensor a16 = Tensor::zeros({4, 16}, DType::BF16, kGpu);
  EXPECT_THROW(cuda::gemm_bf16_nt_invariant(a16, a16, d, 3), Error);  // stages
}

#endif  // R1_HAVE_CUDA

}  // namespace
}  // namespace r1
