// The batch-invariant CPU product (kernels/cpu/gemm_invariant.cc), taken under
// BatchInvariantScope: every row of c bit for bit the same whatever rows share the call
// (alone, among other rows, at another index, after padding rows), through the gemm kernel,
// matmul and linear, for every transpose combination and odd shapes (row and column
// remainders, both tile shapes, several K blocks); every column the same whatever N; equal
// bit for bit to the contract's plain loop (cpu::invariant_product_reference); against an
// fp64 loop in f32 and f64; the same bits on 1, 2 and 3 OpenMP threads; alpha and beta as
// BLAS has them. Inputs are Philox normals (Tensor::randn), never zeros.
//
// The ISA is the process's (the widest the CPU has). To cover the others on one machine:
//   R1_INVARIANT_GEMM_ISA=avx2 ./test_gemm_invariant_cpu   (and =sse2)
// FixedInputsDigest prints a digest of a fixed-seed product: avx2 and avx512 print the same.
//
// The OpenBLAS path (switch off) is not invariant: OpenBlasIsNotInvariant prints by how much
// on this machine (informational, not asserted: it depends on OpenBLAS's kernel choice; here,
// SkylakeX kernels, row 0 at M 1 and at M 64 differed in 211-240 of 256 elements at K 64,
// 512 and 2048).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/determinism.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "kernels/cpu/gemm_invariant.h"
#include "tests/harness.h"

namespace r1 {
namespace {

[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();

template <class T>
constexpr DType kDType = std::is_same_v<T, float> ? DType::F32 : DType::F64;

// count normal values (Philox, via Tensor::randn; zero has probability 0), rounded to T.
template <class T>
std::vector<T> random_values(int64_t count, uint64_t seed) {
  const std::vector<double> d = Tensor::randn({count}, seed, DType::F64).to_double_vector();
  return std::vector<T>(d.begin(), d.end());
}

// x (rows, cols) row-major -> x^T (cols, rows).
template <class T>
std::vector<T> transposed(const std::vector<T>& x, int64_t rows, int64_t cols) {
  std::vector<T> t(x.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = x[i * cols + j];
  return t;
}

// One product's operands on the host: op(a) (m, k), op(b) (k, n), row-major.
template <class T>
struct Problem {
  int64_t m, n, k;
  std::vector<T> a, b;
};

template <class T>
Problem<T> random_problem(int64_t m, int64_t n, int64_t k, uint64_t case_k) {
  return {m, n, k, random_values<T>(m * k, test::case_seed(case_k)),
          random_values<T>(k * n, test::case_seed(case_k + 1000))};
}

// c (m, n) = alpha * op(a) @ op(b) + beta * c0 through kernels::gemm, the operands stored as
// the transposes say. c0 empty: c starts as NaN (beta must be 0 then).
template <class T>
std::vector<T> run_gemm(const Problem<T>& p, bool ta, bool tb, double alpha = 1.0,
                        double beta = 0.0, const std::vector<T>& c0 = {}) {
  const Tensor a = Tensor::from_vector(ta ? transposed(p.a, p.m, p.k) : p.a,
                                       ta ? Shape{1, p.k, p.m} : Shape{1, p.m, p.k}, kDType<T>);
  const Tensor b = Tensor::from_vector(tb ? transposed(p.b, p.k, p.n) : p.b,
                                       tb ? Shape{1, p.n, p.k} : Shape{1, p.k, p.n}, kDType<T>);
  Tensor c = c0.empty() ? Tensor::full({1, p.m, p.n}, NAN, kDType<T>)
                        : Tensor::from_vector(c0, {1, p.m, p.n}, kDType<T>);
  kernels::gemm()(Device::cpu(), a, b, c, ta, tb, alpha, beta);
  const T* pc = c.data<T>();
  return std::vector<T>(pc, pc + p.m * p.n);
}

// Bitwise equality of n values; reports the first difference.
template <class T>
void expect_bits_equal(const std::string& name, const T* got, const T* want, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    if (std::memcmp(&got[j], &want[j], sizeof(T)) != 0) {
      ADD_FAILURE() << name << ": column " << j << ": " << got[j] << " vs " << want[j]
                    << " (bits differ)";
      return;
    }
}

void expect_bits_equal(const std::string& name, const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.shape(), want.shape()) << name;
  ASSERT_EQ(got.dtype(), want.dtype()) << name;
  const Tensor g = got.contiguous(), w = want.contiguous();
  EXPECT_EQ(std::memcmp(g.data_ptr(), w.data_ptr(), g.nbytes()), 0) << name << ": bits differ";
}

std::string label(const char* what, int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  return fmt::format("{} M {} N {} K {}{}{}", what, m, n, k, ta ? " a^T" : "", tb ? " b^T" : "");
}

// Odd sizes for row (M % 6, M % 4) and column (N % lanes) remainders, the model's shapes
// (lm head N 1024 K 128; projections N 40..384, K 32..384), N that take the 4 x 3-vector
// tile (40, 48, 129, 1000 with AVX-512), K over one block (384, 600, 1100: blocks of 256
// with AVX-512), M over one row block (129, 130: panels packed once and shared) and one row
// per thread (2).
const int64_t kShapes[][3] = {{1, 1, 1},     {3, 17, 129},  {17, 129, 3},    {129, 3, 17},
                              {37, 40, 128}, {64, 48, 32},  {13, 1024, 128}, {7, 96, 384},
                              {2, 192, 64},  {9, 1000, 1100}, {130, 72, 600}};

// Row i of op(a) alone (M = 1), and all rows reversed behind `pad` other rows (each row at
// another index, among other neighbours, M changed): every row of c keeps its bits.
template <class T>
void expect_rows_invariant(uint64_t case_k) {
  BatchInvariantScope invariant;
  for (const auto& s : kShapes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const int64_t M = s[0], N = s[1], K = s[2], pad = 5;
      const Problem<T> p = random_problem<T>(M, N, K, case_k += 2);
      const std::vector<T> full = run_gemm(p, ta, tb);
      for (int64_t i : {int64_t{0}, M / 2, M - 1}) {
        Problem<T> one{1, N, K, std::vector<T>(p.a.begin() + i * K, p.a.begin() + (i + 1) * K),
                       p.b};
        expect_bits_equal(label("row alone", M, N, K, ta, tb) + fmt::format(" row {}", i),
                          run_gemm(one, ta, tb).data(), full.data() + i * N, N);
      }
      Problem<T> shuffled{pad + M, N, K, random_values<T>(pad * K, test::case_seed(++case_k)),
                          p.b};
      for (int64_t i = M - 1; i >= 0; --i)
        shuffled.a.insert(shuffled.a.end(), p.a.begin() + i * K, p.a.begin() + (i + 1) * K);
      const std::vector<T> got = run_gemm(shuffled, ta, tb);
      for (int64_t i = 0; i < M; ++i)
        expect_bits_equal(label("reversed and padded", M, N, K, ta, tb) +
                              fmt::format(" row {}", i),
                          got.data() + (pad + M - 1 - i) * N, full.data() + i * N, N);
    }
}

// Columns too: c[:, j] depends on column j of op(b), not on N (the panel width and tile
// shape are picked from N; the padded columns of a partial panel are never stored).
template <class T>
void expect_columns_invariant(uint64_t case_k) {
  BatchInvariantScope invariant;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t M = 23, K = 77, N = 1024;
    const Problem<T> p = random_problem<T>(M, N, K, case_k += 2);
    const std::vector<T> full = run_gemm(p, ta, tb);
    for (int64_t n : {1, 7, 40, 48, 72, 130, 1000}) {
      Problem<T> narrow{M, n, K, p.a, {}};
      for (int64_t k = 0; k < K; ++k)
        narrow.b.insert(narrow.b.end(), p.b.begin() + k * N, p.b.begin() + k * N + n);
      const std::vector<T> got = run_gemm(narrow, ta, tb);
      for (int64_t i = 0; i < M; ++i)
        expect_bits_equal(label("first columns of N 1024", M, n, K, ta, tb) +
                              fmt::format(" row {}", i),
                          got.data() + i * n, full.data() + i * N, n);
    }
  }
}

TEST(GemmInvariant, ColumnsDoNotDependOnN) {
  expect_columns_invariant<float>(150);
  expect_columns_invariant<double>(160);
}

TEST(GemmInvariant, RowsDoNotDependOnTheBatchF32) { expect_rows_invariant<float>(100); }
TEST(GemmInvariant, RowsDoNotDependOnTheBatchF64) { expect_rows_invariant<double>(200); }

// The kernels against the contract's plain loop (cpu::invariant_product_reference), bit for
// bit: the same operations in the same order, whatever the tile, panel, K block or thread.
template <class T>
void expect_matches_reference_chain(uint64_t case_k) {
  BatchInvariantScope invariant;
  const bool fused = std::string(cpu::invariant_product_isa()) != "sse2";
  for (const auto& s : kShapes)
    for (int t = 0; t < 4; ++t)
      for (const auto& [alpha, beta] : {std::pair{1.0, 0.0}, std::pair{-0.75, 1.5}}) {
        const bool ta = t & 1, tb = t & 2;
        const int64_t M = s[0], N = s[1], K = s[2];
        const Problem<T> p = random_problem<T>(M, N, K, case_k += 2);
        std::vector<T> want = random_values<T>(M * N, test::case_seed(++case_k));
        const std::vector<T> got = run_gemm(p, ta, tb, alpha, beta, want);
        const std::vector<T> sa = ta ? transposed(p.a, M, K) : p.a;
        const std::vector<T> sb = tb ? transposed(p.b, K, N) : p.b;
        const cpu::ProductShape shape{ta, tb, M, N, K, ta ? M : K, tb ? K : N, N};
        cpu::invariant_product_reference(shape, static_cast<T>(alpha), sa.data(), sb.data(),
                                         static_cast<T>(beta), want.data(), fused);
        expect_bits_equal(label("plain loop", M, N, K, ta, tb) + fmt::format(" beta {}", beta),
                          got.data(), want.data(), M * N);
      }
}

TEST(GemmInvariant, EqualsThePlainLoopBitForBit) {
  expect_matches_reference_chain<float>(250);
  expect_matches_reference_chain<double>(260);
}

// |got - ref| <= (K + 2) u |alpha| sum_k |a b| + |beta c0| (u = 2^-24 or 2^-53): the
// worst-case rounding bound of a K-term chain and the epilogue; a wrong index or transpose
// is off by O(sum |a b| / sqrt(K)).
template <class T>
void expect_matches_fp64(uint64_t case_k) {
  BatchInvariantScope invariant;
  const double u = std::ldexp(1.0, std::is_same_v<T, float> ? -24 : -53);
  for (const auto& s : kShapes)
    for (int t = 0; t < 4; ++t)
      for (const auto& [alpha, beta] : {std::pair{1.0, 0.0}, std::pair{0.75, -1.5}}) {
        const bool ta = t & 1, tb = t & 2;
        const int64_t M = s[0], N = s[1], K = s[2];
        const Problem<T> p = random_problem<T>(M, N, K, case_k += 2);
        const std::vector<T> c0 = random_values<T>(M * N, test::case_seed(++case_k));
        const std::vector<T> got =
            beta == 0.0 ? run_gemm(p, ta, tb, alpha, beta) : run_gemm(p, ta, tb, alpha, beta, c0);
        int bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double ref = 0, mag = 0;
            for (int64_t l = 0; l < K; ++l) {
              const double x = static_cast<double>(p.a[i * K + l]) * p.b[l * N + j];
              ref += x;
              mag += std::fabs(x);
            }
            const double c = beta == 0.0 ? 0.0 : static_cast<double>(c0[i * N + j]);
            ref = alpha * ref + beta * c;
            const double tol = (K + 2) * u * (std::fabs(alpha) * mag + std::fabs(beta * c));
            const double g = got[i * N + j];
            if (!(std::fabs(g - ref) <= tol) && bad++ < 3)
              ADD_FAILURE() << label("fp64 loop", M, N, K, ta, tb) << " alpha " << alpha
                            << " beta " << beta << ": c[" << i << ", " << j << "] " << g
                            << " vs " << ref << " (tol " << tol << ")";
          }
      }
}

TEST(GemmInvariant, MatchesFp64LoopF32) { expect_matches_fp64<float>(300); }
TEST(GemmInvariant, MatchesFp64LoopF64) { expect_matches_fp64<double>(400); }

// The split over threads (rows, panels) and the K block (it follows the panels per thread)
// change with the thread count; the bits do not.
template <class T>
void expect_thread_count_invariant(uint64_t case_k) {
  BatchInvariantScope invariant;
  const int saved = omp_get_max_threads();
  const int64_t shapes[][3] = {{200, 96, 64}, {5, 1000, 1100}, {301, 384, 384}, {64, 1024, 128},
                               {1, 1024, 128}};
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const Problem<T> p = random_problem<T>(s[0], s[1], s[2], case_k += 2);
      omp_set_num_threads(1);
      const std::vector<T> one = run_gemm(p, ta, tb);
      for (int threads : {2, 3}) {
        omp_set_num_threads(threads);
        expect_bits_equal(label("threads", s[0], s[1], s[2], ta, tb) +
                              fmt::format(" 1 vs {}", threads),
                          run_gemm(p, ta, tb).data(), one.data(), s[0] * s[1]);
      }
    }
  omp_set_num_threads(saved);
}

TEST(GemmInvariant, SameBitsOnAnyThreadCountF32) { expect_thread_count_invariant<float>(500); }
TEST(GemmInvariant, SameBitsOnAnyThreadCountF64) { expect_thread_count_invariant<double>(600); }

TEST(GemmInvariant, AlphaBetaAsBlas) {
  BatchInvariantScope invariant;
  uint64_t k = 700;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t M = 19, N = 70, K = 45;
    const Problem<float> p = random_problem<float>(M, N, K, k += 2);
    const std::vector<float> c0 = random_values<float>(M * N, test::case_seed(++k));
    // beta = 0 never reads c: NaN there gives the bits of a zero c.
    const std::vector<float> zeros(static_cast<size_t>(M * N), 0.0f);
    const std::vector<float> from_nan = run_gemm(p, ta, tb, 0.5, 0.0);
    expect_bits_equal(label("beta 0 over NaN", M, N, K, ta, tb), from_nan.data(),
                      run_gemm(p, ta, tb, 0.5, 0.0, zeros).data(), M * N);
    // alpha = 0 reads neither a nor b (NaN in a stays out): c = beta * c0.
    Problem<float> nan_a = p;
    nan_a.a[3] = NAN;
    const std::vector<float> scaled = run_gemm(nan_a, ta, tb, 0.0, 2.0, c0);
    for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(scaled[i], 2.0f * c0[i]) << "alpha 0, " << i;
    // With beta != 0 a row's bits depend on its own row of c0 only.
    const std::vector<float> full = run_gemm(p, ta, tb, -0.75, 1.5, c0);
    const int64_t i = M - 1;
    const Problem<float> one{1, N, K, std::vector<float>(p.a.begin() + i * K, p.a.end()), p.b};
    const std::vector<float> c0_row(c0.begin() + i * N, c0.end());
    expect_bits_equal(label("alpha/beta row alone", M, N, K, ta, tb),
                      run_gemm(one, ta, tb, -0.75, 1.5, c0_row).data(), full.data() + i * N, N);
  }
}

// What model code calls: linear (x @ w^T + bias, beta 1), matmul with the batch folded into M
// (b 2-d), matmul per batch entry (b batched, or a transposed). Rows of a sub-batch keep
// their bits inside a bigger batch.
TEST(GemmInvariant, MatmulAndLinearRowsDoNotDependOnTheBatch) {
  BatchInvariantScope invariant;
  NoGrad ng;
  uint64_t k = 800;
  const int64_t features[][2] = {{128, 1024}, {128, 48}, {48, 40}, {384, 96}, {64, 384}};
  for (const auto& f : features) {
    const int64_t in = f[0], out = f[1], B = 6, T = 11;
    const Tensor x = Tensor::randn({B, T, in}, test::case_seed(++k));
    const Tensor w = Tensor::randn({out, in}, test::case_seed(++k));
    const Tensor bias = Tensor::randn({out}, test::case_seed(++k));
    const Tensor y = linear(x, w, bias);
    const std::string n = fmt::format("linear in {} out {}", in, out);
    expect_bits_equal(n + " batch 1", linear(x.narrow(0, 2, 1), w, bias), y.narrow(0, 2, 1));
    expect_bits_equal(n + " one token", linear(x.narrow(0, 4, 1).narrow(1, 7, 1), w, bias),
                      y.narrow(0, 4, 1).narrow(1, 7, 1));
    expect_bits_equal(n + " 2-d rows", linear(x.reshape({B * T, in}).narrow(0, 5, 9), w, bias),
                      y.reshape({B * T, out}).narrow(0, 5, 9));
    expect_bits_equal(n + " no bias vs matmul", linear(x, w), matmul(x, w, false, true));
  }
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t B = 5, M = 13, K = 96, N = 40;
    const Tensor a = Tensor::randn(ta ? Shape{B, K, M} : Shape{B, M, K}, test::case_seed(++k));
    const Tensor b2 = Tensor::randn(tb ? Shape{N, K} : Shape{K, N}, test::case_seed(++k));
    const Tensor b3 = Tensor::randn(tb ? Shape{B, N, K} : Shape{B, K, N}, test::case_seed(++k));
    const std::string n = fmt::format("matmul{}{}", ta ? " a^T" : "", tb ? " b^T" : "");
    expect_bits_equal(n + " b 2-d", matmul(a.narrow(0, 3, 2), b2, ta, tb),
                      matmul(a, b2, ta, tb).narrow(0, 3, 2));
    expect_bits_equal(n + " b batched", matmul(a.narrow(0, 1, 1), b3.narrow(0, 1, 1), ta, tb),
                      matmul(a, b3, ta, tb).narrow(0, 1, 1));
  }
}

TEST(GemmInvariant, ScopeRestoresTheSwitch) {
  EXPECT_FALSE(batch_invariant());
  {
    BatchInvariantScope on;
    EXPECT_TRUE(batch_invariant());
    {
      BatchInvariantScope off(false);
      EXPECT_FALSE(batch_invariant());
    }
    EXPECT_TRUE(batch_invariant());
  }
  EXPECT_FALSE(batch_invariant());
}

// FNV-1a over the bits of c for fixed inputs (not the run seed): compare the line across
// R1_INVARIANT_GEMM_ISA values and machines. Within a run the four layouts (transposes) give
// the same bits.
TEST(GemmInvariant, FixedInputsDigest) {
  BatchInvariantScope invariant;
  const Problem<float> p{37, 1000, 300, random_values<float>(37 * 300, 1),
                         random_values<float>(300 * 1000, 2)};
  std::vector<uint64_t> digests;
  for (int t = 0; t < 4; ++t) {
    const std::vector<float> c = run_gemm(p, t & 1, t & 2);
    uint64_t h = 1469598103934665603ull;
    for (float v : c) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      h = (h ^ bits) * 1099511628211ull;
    }
    std::printf("[invariant gemm] isa %s, a^T %d b^T %d: digest %016llx\n",
                cpu::invariant_product_isa(), t & 1, (t & 2) >> 1,
                static_cast<unsigned long long>(h));
    digests.push_back(h);
  }
  for (int t = 1; t < 4; ++t) EXPECT_EQ(digests[t], digests[0]) << "layout " << t;
}

// Informational: row 0 of op(a) @ op(b) from OpenBLAS at M = 1 and M = 64.
TEST(GemmInvariant, OpenBlasIsNotInvariant) {
  ASSERT_FALSE(batch_invariant());
  for (int64_t K : {64, 512, 2048}) {
    const Problem<float> p = random_problem<float>(64, 256, K, 900 + K);
    const Problem<float> one{1, 256, K, std::vector<float>(p.a.begin(), p.a.begin() + K), p.b};
    const std::vector<float> full = run_gemm(p, false, true), alone = run_gemm(one, false, true);
    int differ = 0;
    for (int64_t j = 0; j < 256; ++j) differ += std::memcmp(&full[j], &alone[j], 4) != 0;
    std::printf("[openblas] K %lld: row 0 at M 1 vs M 64 differs in %d of 256 elements\n",
                static_cast<long long>(K), differ);
  }
}

}  // namespace
}  // namespace r1
