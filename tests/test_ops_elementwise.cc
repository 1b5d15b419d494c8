// Elementwise ops and reductions: gradients against f64 finite differences, forward values
// against direct loops, broadcasting rules.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "tests/harness.h"

namespace r1 {
namespace {

Tensor rnd(const Shape& s, uint64_t k) {
  return Tensor::randn(s, test::case_seed(k), DType::F64).set_requires_grad();
}
// Values bounded away from zero (for division).
Tensor rnd_away(const Shape& s, uint64_t k) {
  NoGrad ng;
  Tensor u = Tensor::rand(s, test::case_seed(k), 0.5, 2.0, DType::F64);
  return u.set_requires_grad();
}

TEST(Elementwise, BroadcastShapes) {
  EXPECT_EQ(broadcast_shapes({2, 1, 4}, {3, 1}), (Shape{2, 3, 4}));
  EXPECT_EQ(broadcast_shapes({}, {5}), (Shape{5}));
  EXPECT_THROW(broadcast_shapes({2, 3}, {4}), Error);
}

TEST(Elementwise, ForwardMatchesLoops) {
  Tensor a = Tensor::randn({2, 3, 4}, test::case_seed(1), DType::F64);
  Tensor b = Tensor::randn({3, 1}, test::case_seed(2), DType::F64);
  const std::vector<double> av = a.to_double_vector(), bv = b.to_double_vector();
  const std::vector<double> s = add(a, b).to_double_vector(), p = mul(a, b).to_double_vector(),
                            q = div(a, b).to_double_vector(), d = sub(a, b).to_double_vector();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) {
        const int x = (i * 3 + j) * 4 + k;
        EXPECT_EQ(s[x], av[x] + bv[j]);
        EXPECT_EQ(d[x], av[x] - bv[j]);
        EXPECT_EQ(p[x], av[x] * bv[j]);
        EXPECT_EQ(q[x], av[x] / bv[j]);
      }
  const std::vector<double> m = max(a, 1).to_double_vector();
  const std::vector<double> sm = sum(a, 2, true).to_double_vector();
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 4; ++k) {
      double best = -INFINITY;
      for (int j = 0; j < 3; ++j) best = std::max(best, av[(i * 3 + j) * 4 + k]);
      EXPECT_EQ(m[i * 4 + k], best);
    }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) {
      double acc = 0;
      for (int k = 0; k < 4; ++k) acc += av[(i * 3 + j) * 4 + k];
      EXPECT_NEAR(sm[i * 3 + j], acc, 1e-12);
    }
  EXPECT_NEAR(mean(a).item(), [&] {
    double t = 0;
    for (double v : av) t += v;
    return t / av.size();
  }(), 1e-12);
}

TEST(Elementwise, Gradients) {
  using V = std::vector<Tensor>;
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{5}, {}}, {{1, 3}, {2, 1}}};
  uint64_t k = 10;
  for (const auto& [sa, sb] : shapes) {
    const std::string tag = shape_str(sa) + " x " + shape_str(sb);
    test::expect_gradcheck("add " + tag, [](const V& in) { return add(in[0], in[1]); },
                           {rnd(sa, k), rnd(sb, k + 1)}, test::case_seed(k));
    test::expect_gradcheck("sub " + tag, [](const V& in) { return sub(in[0], in[1]); },
                           {rnd(sa, k + 2), rnd(sb, k + 3)}, test::case_seed(k + 1));
    test::expect_gradcheck("mul " + tag, [](const V& in) { return mul(in[0], in[1]); },
                           {rnd(sa, k + 4), rnd(sb, k + 5)}, test::case_seed(k + 2));
    test::expect_gradcheck("div " + tag, [](const V& in) { return div(in[0], in[1]); },
                           {rnd(sa, k + 6), rnd_away(sb, k + 7)}, test::case_seed(k + 3));
    k += 10;
  }
  test::expect_gradcheck("scale", [](const V& in) { return scale(in[0], -1.7); },
                         {rnd({3, 5}, 90)}, test::case_seed(90));
  test::expect_gradcheck("add_scalar", [](const V& in) { return add_scalar(in[0], 0.3); },
                         {rnd({4}, 91)}, test::case_seed(91));
  // The same tensor on both sides: grads from two paths add up.
  test::expect_gradcheck("mul self", [](const V& in) { return mul(in[0], in[0]); },
                         {rnd({2, 3}, 92)}, test::case_seed(92));
}

TEST(Reductions, Gradients) {
  using V = std::vector<Tensor>;
  for (int64_t d = 0; d < 3; ++d) {
    for (bool keep : {false, true}) {
      const std::string tag = " dim " + std::to_string(d) + (keep ? " keepdim" : "");
      test::expect_gradcheck("sum" + tag, [=](const V& in) { return sum(in[0], d, keep); },
                             {rnd({2, 3, 4}, 100 + d)}, test::case_seed(100 + d));
      test::expect_gradcheck("mean" + tag, [=](const V& in) { return mean(in[0], d, keep); },
                             {rnd({3, 2, 5}, 110 + d)}, test::case_seed(110 + d));
      test::expect_gradcheck("max" + tag, [=](const V& in) { return max(in[0], d, keep); },
                             {rnd({4, 3, 2}, 120 + d)}, test::case_seed(120 + d));
    }
  }
  test::expect_gradcheck("sum all", [](const V& in) { return sum(in[0]); },
                         {rnd({3, 4}, 130)}, test::case_seed(130));
  test::expect_gradcheck("mean all", [](const V& in) { return mean(in[0]); },
                         {rnd({2, 2, 3}, 131)}, test::case_seed(131));
  // Views feeding ops: grads of views.
  test::expect_gradcheck("sum of transposed narrow",
                         [](const V& in) { return mul(in[0].transpose(0, 1).narrow(0, 1, 2), in[1]); },
                         {rnd({3, 4}, 132), rnd({2, 3}, 133)}, test::case_seed(132));
}

TEST(Elementwise, Errors) {
  Tensor a = Tensor::ones({2, 3});
  EXPECT_THROW(add(a, Tensor::ones({4})), Error);
  EXPECT_THROW(add(a, Tensor::ones({2, 3}, DType::F64)), Error);
  EXPECT_THROW(sum(a, 2), Error);
}

}  // namespace
}  // namespace r1
