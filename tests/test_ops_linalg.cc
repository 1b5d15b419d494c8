// matmul, linear and the gemm kernel: f32 forward against an fp64 triple loop, gradients
// against f64 finite differences (every transpose combination, broadcast operands, odd and
// one-row shapes), kernel alpha/beta, and shape errors.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/kernels.h"
#include "engine/ops.h"
#include "tests/harness.h"

namespace r1 {
namespace {

Tensor rnd(const Shape& s, uint64_t k, DType dt = DType::F64) {
  return Tensor::randn(s, test::case_seed(k), dt);
}
Tensor rnd_grad(const Shape& s, uint64_t k) { return rnd(s, k).set_requires_grad(); }

// Reference c = alpha * op(a) @ op(b) + beta * c0 in fp64 for 3-d (batch, ., .) operands
// whose batch is B or 1. Also returns, per element, sum |alpha * a * b| + |beta * c0| (the
// scale that bounds the rounding error of any summation order).
struct Reference {
  std::vector<double> c, magnitude;
};
Reference reference_gemm(const Tensor& a, const Tensor& b, const Tensor& c0, bool ta, bool tb,
                         double alpha, double beta) {
  const std::vector<double> av = a.to_double_vector(), bv = b.to_double_vector();
  const std::vector<double> cv = c0.to_double_vector();
  const int64_t B = c0.size(0), M = c0.size(1), N = c0.size(2);
  const int64_t K = ta ? a.size(1) : a.size(2);
  auto A = [&](int64_t bi, int64_t m, int64_t k) {
    const int64_t base = (a.size(0) == 1 ? 0 : bi) * a.size(1) * a.size(2);
    return ta ? av[base + k * M + m] : av[base + m * K + k];
  };
  auto Bm = [&](int64_t bi, int64_t k, int64_t n) {
    const int64_t base = (b.size(0) == 1 ? 0 : bi) * b.size(1) * b.size(2);
    return tb ? bv[base + n * K + k] : bv[base + k * N + n];
  };
  Reference r{std::vector<double>(cv.size()), std::vector<double>(cv.size())};
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double p = A(bi, m, k) * Bm(bi, k, n);
          acc += p;
          mag += std::fabs(p);
        }
        const int64_t i = (bi * M + m) * N + n;
        r.c[i] = alpha * acc + beta * cv[i];
        r.magnitude[i] = std::fabs(alpha) * mag + std::fabs(beta * cv[i]);
      }
  return r;
}

// |got - ref| <= (K + 2) u * magnitude: the worst-case f32 rounding bound of a K-term dot
// product (u = 2^-24). An indexing or transpose bug is off by O(magnitude / sqrt(K)).
void expect_within_f32_bound(const std::string& name, const Tensor& got, const Reference& ref,
                             int64_t k) {
  const std::vector<double> g = got.to_double_vector();
  ASSERT_EQ(g.size(), ref.c.size()) << name;
  const double u = std::ldexp(1.0, -24);
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double tol = (static_cast<double>(k) + 2) * u * ref.magnitude[i] + 1e-30;
    if (!(std::fabs(g[i] - ref.c[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << name << ": element " << i << ": " << g[i] << " vs " << ref.c[i]
                    << " (tol " << tol << ")";
  }
  EXPECT_EQ(bad, 0) << name;
}

struct MatmulCase {
  Shape batch;  // a's batch dims
  int64_t m, k, n;
  bool b_2d;    // b broadcast over a's batch
};

// a, b stored for (trans_a, trans_b); b 2-d when broadcast.
std::pair<Shape, Shape> operand_shapes(const MatmulCase& c, bool ta, bool tb) {
  Shape sa = c.batch, sb = c.b_2d ? Shape{} : c.batch;
  sa.push_back(ta ? c.k : c.m);
  sa.push_back(ta ? c.m : c.k);
  sb.push_back(tb ? c.n : c.k);
  sb.push_back(tb ? c.k : c.n);
  return {sa, sb};
}

TEST(Matmul, F32ForwardMatchesFp64Loop) {
  const std::vector<MatmulCase> cases = {
      {{}, 1, 7, 5, false},       {{}, 64, 512, 48, false}, {{3}, 17, 33, 9, false},
      {{2, 3}, 5, 129, 11, false}, {{4}, 31, 256, 13, true}, {{2, 2}, 1, 512, 40, true},
  };
  uint64_t k = 0;
  for (const MatmulCase& c : cases)
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const auto [sa, sb] = operand_shapes(c, ta, tb);
      const Tensor a = rnd(sa, ++k, DType::F32), b = rnd(sb, ++k, DType::F32);
      const Tensor out = matmul(a, b, ta, tb);
      Shape want = c.batch;
      want.push_back(c.m);
      want.push_back(c.n);
      ASSERT_EQ(out.shape(), want);
      const int64_t B = shape_numel(c.batch);
      const Tensor a3 = a.reshape({-1, sa[sa.size() - 2], sa.back()});
      const Tensor b3 = b.reshape({-1, sb[sb.size() - 2], sb.back()});
      const Tensor zero = Tensor::zeros({B, c.m, c.n}, DType::F64);
      expect_within_f32_bound(
          "matmul " + shape_str(sa) + (ta ? "^T" : "") + " @ " + shape_str(sb) + (tb ? "^T" : ""),
          out, reference_gemm(a3, b3, zero, ta, tb, 1.0, 0.0), c.k);
    }
}

TEST(Gemm, KernelAlphaBetaAndBroadcastA) {
  // a broadcast (batch 1) against a batched b, with c accumulated: beta reads c.
  uint64_t k = 100;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t B = 3, M = 6, K = 70, N = 5;
    const Tensor a = rnd({1, ta ? K : M, ta ? M : K}, ++k, DType::F32);
    const Tensor b = rnd({B, tb ? N : K, tb ? K : N}, ++k, DType::F32);
    const Tensor c0 = rnd({B, M, N}, ++k, DType::F32);
    Tensor c = c0.clone();
    kernels::gemm()(Device::cpu(), a, b, c, ta, tb, 0.75, -1.5);
    expect_within_f32_bound("gemm alpha/beta", c, reference_gemm(a, b, c0, ta, tb, 0.75, -1.5),
                            K);
    // beta = 0 must not read c (NaN there stays out of the result).
    Tensor cn = Tensor::full({B, M, N}, NAN, DType::F32);
    kernels::gemm()(Device::cpu(), a, b, cn, ta, tb, 1.0, 0.0);
    expect_within_f32_bound("gemm beta 0", cn, reference_gemm(a, b, c0, ta, tb, 1.0, 0.0), K);
  }
}

TEST(Gemm, EmptyKScalesC) {
  const Tensor a = Tensor::empty({2, 3, 0}), b = Tensor::empty({2, 0, 4});
  const Tensor c0 = rnd({2, 3, 4}, 200, DType::F32);
  Tensor c = c0.clone();
  kernels::gemm()(Device::cpu(), a, b, c, false, false, 1.0, 2.0);
  const std::vector<double> got = c.to_double_vector(), want = c0.to_double_vector();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], 2.0 * want[i]);
}

TEST(Matmul, GradcheckEveryTransposeAndBroadcast) {
  const std::vector<MatmulCase> cases = {
      {{}, 1, 3, 4, false},   {{}, 5, 7, 3, false},    {{2}, 3, 4, 5, false},
      {{2, 3}, 3, 2, 5, false}, {{3}, 4, 5, 3, true}, {{2, 2}, 1, 3, 2, true},
  };
  uint64_t k = 300;
  for (const MatmulCase& c : cases)
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const auto [sa, sb] = operand_shapes(c, ta, tb);
      const std::string name = "matmul " + shape_str(sa) + (ta ? "^T" : "") + " @ " +
                               shape_str(sb) + (tb ? "^T" : "");
      test::expect_gradcheck(
          name, [=](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
          {rnd_grad(sa, ++k), rnd_grad(sb, ++k)}, test::case_seed(++k));
    }
}

TEST(Matmul, GradcheckBroadcastA) {
  // a 2-d against a batched b: a's gradient sums over the batch.
  uint64_t k = 400;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const Shape sa = ta ? Shape{4, 3} : Shape{3, 4};
    const Shape sb = tb ? Shape{2, 3, 5, 4} : Shape{2, 3, 4, 5};
    test::expect_gradcheck(
        "matmul broadcast a",
        [=](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
        {rnd_grad(sa, ++k), rnd_grad(sb, ++k)}, test::case_seed(++k));
  }
}

TEST(Matmul, GradOfOneInputOnly) {
  const Tensor a = rnd({2, 3, 4}, 500);
  test::expect_gradcheck(
      "matmul grad b only", [=](const std::vector<Tensor>& in) { return matmul(a, in[0]); },
      {rnd_grad({2, 4, 3}, 501)}, test::case_seed(502));
}

TEST(Linear, Gradcheck) {
  struct Case {
    Shape x;
    int64_t out;
    bool bias;
  };
  const std::vector<Case> cases = {
      {{1, 5}, 3, true}, {{4, 5}, 3, false}, {{2, 3, 7}, 4, true}, {{3}, 2, true},
      {{2, 1, 3}, 5, false},
  };
  uint64_t k = 600;
  for (const Case& c : cases) {
    const int64_t in = c.x.back();
    std::vector<Tensor> inputs = {rnd_grad(c.x, ++k), rnd_grad({c.out, in}, ++k)};
    if (c.bias) inputs.push_back(rnd_grad({c.out}, ++k));
    test::expect_gradcheck(
        "linear " + shape_str(c.x) + (c.bias ? " bias" : ""),
        [](const std::vector<Tensor>& t) {
          return linear(t[0], t[1], t.size() > 2 ? t[2] : Tensor());
        },
        inputs, test::case_seed(++k));
  }
}

TEST(Linear, F32ForwardMatchesMatmulPlusBias) {
  const Tensor x = rnd({3, 4, 300}, 700, DType::F32), w = rnd({17, 300}, 701, DType::F32);
  const Tensor bias = rnd({17}, 702, DType::F32);
  const Tensor y = linear(x, w, bias);
  ASSERT_EQ(y.shape(), (Shape{3, 4, 17}));
  // Reference: bias broadcast into c0, beta = 1.
  const Tensor c0 = bias.to(DType::F64).reshape({1, 1, 17}).expand({1, 12, 17}).contiguous();
  expect_within_f32_bound("linear", y.reshape({1, 12, 17}),
                          reference_gemm(x.reshape({1, 12, 300}), w.reshape({1, 17, 300}), c0,
                                         false, true, 1.0, 1.0),
                          300);
}

TEST(Matmul, ShapeErrorsThrow) {
  const Tensor a = rnd({2, 3, 4}, 800), b = rnd({2, 5, 6}, 801);
  EXPECT_THROW(matmul(a, b), Error);                        // K 4 vs 5
  EXPECT_THROW(matmul(a, rnd({3, 4, 6}, 802)), Error);      // batch 2 vs 3
  EXPECT_THROW(matmul(rnd({4}, 803), rnd({4, 2}, 804)), Error);  // 1-d
  EXPECT_THROW(matmul(a, rnd({4, 2}, 805, DType::F32)), Error);  // dtypes
  EXPECT_NO_THROW(matmul(a, rnd({3, 6}, 806), true));       // (2, 4, 3) @ (3, 6)
  try {
    matmul(a, b);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(2, 3, 4)"), std::string::npos) << msg;
  }
  EXPECT_THROW(linear(rnd({2, 5}, 807), rnd({3, 4}, 808)), Error);
  EXPECT_THROW(linear(rnd({2, 4}, 809), rnd({3, 4}, 810), rnd({4}, 811)), Error);
  Tensor c = Tensor::empty({2, 3, 6}, DType::F64);
  EXPECT_THROW(kernels::gemm()(Device::cpu(), a, rnd({3, 4, 6}, 812), c, false, false, 1, 0),
               Error);
}

}  // namespace
}  // namespace r1
