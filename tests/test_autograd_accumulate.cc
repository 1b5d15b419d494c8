// Gradient accumulation into non-leaf tensors (engine/autograd.cc): a later grad is added in
// place only when the accumulated buffer has no other holder, so a grad that a backward
// returned for several inputs, or that a caller retains, is never written through.
#include <gtest/gtest.h>

#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "tests/harness.h"

namespace r1 {
namespace {

TEST(AutogradAccumulate, SharedGradIsNotWrittenThrough) {
  Tensor x = Tensor::randn({3, 5}, test::run_seed());
  x.set_requires_grad();
  Tensor h = scale(x, 1.0);  // non-leaf; its backward hands its grad on as is
  Tensor u = add(h, h);      // add's backward returns the same tensor for both inputs
  retain_grad(u);
  Tensor v = add(u, mul(u, u));  // u gets two grads: 1 and 2u
  retain_grad(h);
  backward(sum(v));
  const std::vector<float> xv = x.to_float_vector(), hg = h.grad().to_float_vector();
  const std::vector<float> ug = u.grad().to_float_vector(), xg = x.grad().to_float_vector();
  for (size_t i = 0; i < xv.size(); ++i) {
    const float uu = xv[i] + xv[i];
    const float gu = (1.0f + uu) + uu;  // grad of u: the add's 1, then mul's u, u
    EXPECT_EQ(ug[i], gu) << i;
    EXPECT_EQ(hg[i], gu + gu) << i;  // h's grad: u's grad twice, not its buffer doubled
    EXPECT_EQ(xg[i], gu + gu) << i;
  }
}

TEST(AutogradAccumulate, RepeatedUseSumsInOrder) {
  // y used by four consumers: its grad is ((g1 + g2) + g3) + g4 in tape-reverse order,
  // whether each sum lands in place or in a new buffer.
  Tensor x = Tensor::randn({64}, test::run_seed() + 1, DType::F64);
  x.set_requires_grad();
  Tensor y = scale(x, 1.5);
  retain_grad(y);
  const Tensor a = Tensor::randn({64}, 11, DType::F64), b = Tensor::randn({64}, 12, DType::F64);
  const Tensor c = Tensor::randn({64}, 13, DType::F64), d = Tensor::randn({64}, 14, DType::F64);
  Tensor l = sum(mul(y, a));  // one statement per use: the tape's order is the code's
  l = add(l, sum(mul(y, b)));
  l = add(l, sum(mul(y, c)));
  l = add(l, sum(mul(y, d)));
  backward(l);
  const std::vector<double> av = a.to_double_vector(), bv = b.to_double_vector();
  const std::vector<double> cv = c.to_double_vector(), dv = d.to_double_vector();
  const std::vector<double> yg = y.grad().to_double_vector();
  for (size_t i = 0; i < yg.size(); ++i) EXPECT_EQ(yg[i], ((dv[i] + cv[i]) + bv[i]) + av[i]) << i;
}

}  // namespace
}  // namespace r1
