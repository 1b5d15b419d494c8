// AdamW against a hand-written fp64 transcription of torch.optim.AdamW's update, gradient
// norm and clipping against direct sums, and a small end-to-end fit.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
using test::expect_close;

// torch/optim/adamw.py _single_tensor_adamw (no amsgrad, no maximize), one parameter, f64.
struct AdamRef {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& grad, double grad_scale, int64_t t,
            const AdamWConfig& c) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    const double bias_correction1 = 1 - std::pow(c.beta1, t);
    const double bias_correction2 = 1 - std::pow(c.beta2, t);
    const double step_size = c.lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i] * grad_scale;
      p[i] *= 1 - c.lr * c.weight_decay;                  // param.mul_(1 - lr * wd)
      m[i] += (g - m[i]) * (1 - c.beta1);                 // exp_avg.lerp_(grad, 1 - beta1)
      v[i] = v[i] * c.beta2 + (1 - c.beta2) * g * g;      // exp_avg_sq.mul_().addcmul_()
      const double denom = std::sqrt(v[i]) / bias_correction2_sqrt + c.eps;
      p[i] -= step_size * m[i] / denom;                   // param.addcdiv_(exp_avg, denom)
    }
  }
};

TEST(AdamW, MatchesPyTorchFormulaOverSeveralSteps) {
  for (DType dt : {DType::F64, DType::F32}) {
    AdamWConfig cfg;
    cfg.lr = 3e-2;
    cfg.weight_decay = 0.1;
    cfg.beta2 = 0.99;
    std::vector<Tensor> params = {Tensor::randn({4, 5}, case_seed(1), dt),
                                  Tensor::randn({7}, case_seed(2), dt),
                                  Tensor::randn({3}, case_seed(3), dt)};  // never gets a grad
    std::vector<AdamRef> ref(2);
    for (int i = 0; i < 2; ++i) ref[i].p = params[i].to_double_vector();
    const std::vector<double> untouched = params[2].to_double_vector();
    for (Tensor& p : params) p.set_requires_grad();
    AdamW opt(params, cfg);
    const double scales[] = {1.0, 0.5, 2.0, 1.0, 0.25, 1.0};
    for (int64_t t = 1; t <= 6; ++t) {
      for (int i = 0; i < 2; ++i) {
        // Grads at several magnitudes, so eps and the bias corrections both matter.
        const Tensor g = Tensor::randn(params[i].shape(), case_seed(100 * t + i), dt,
                                       Device::cpu(), std::pow(10.0, -i - t % 3));
        params[i].set_grad(g);
        ref[i].step(g.to_double_vector(), scales[t - 1], t, cfg);
      }
      opt.step(scales[t - 1]);
      EXPECT_EQ(opt.step_count(), t);
      for (int i = 0; i < 2; ++i) {
        const double tol = dt == DType::F64 ? 1e-13 : 2e-6;
        expect_close("AdamW param " + std::to_string(i) + " step " + std::to_string(t),
                     params[i].to_double_vector(), ref[i].p, tol, tol);
        expect_close("AdamW exp_avg_sq", opt.exp_avg_sq()[i].to_double_vector(), ref[i].v,
                     tol * 1e-3, tol);
      }
    }
    EXPECT_EQ(params[2].to_double_vector(), untouched);
    EXPECT_FALSE(opt.exp_avg()[2].defined());
    opt.zero_grad();
    for (const Tensor& p : params) EXPECT_FALSE(p.grad().defined());
  }
}

std::vector<Tensor> params_with_grads(uint64_t k, double grad_sd) {
  std::vector<Tensor> ps = {Tensor::randn({6, 3}, case_seed(k), DType::F32),
                            Tensor::randn({11}, case_seed(k + 1), DType::F32),
                            Tensor::randn({2}, case_seed(k + 2), DType::F32)};
  for (size_t i = 0; i < ps.size(); ++i) {
    ps[i].set_requires_grad();
    if (i != 2)  // one parameter without a grad is skipped
      ps[i].set_grad(Tensor::randn(ps[i].shape(), case_seed(k + 10 + i), DType::F32,
                                   Device::cpu(), grad_sd));
  }
  return ps;
}

double direct_norm(const std::vector<Tensor>& ps) {
  double s = 0;
  for (const Tensor& p : ps)
    if (p.grad().defined())
      for (double g : p.grad().to_double_vector()) s += g * g;
  return std::sqrt(s);
}

TEST(ClipGradNorm, ScalesOnlyAboveTheLimit) {
  std::vector<Tensor> ps = params_with_grads(200, 3.0);
  const double norm = direct_norm(ps);
  EXPECT_NEAR(grad_norm(ps), norm, 1e-12 * norm);
  std::vector<std::vector<double>> before;
  for (int i = 0; i < 2; ++i) before.push_back(ps[i].grad().to_double_vector());

  // Below the limit: nothing changes.
  EXPECT_NEAR(clip_grad_norm(ps, norm * 2), norm, 1e-12 * norm);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(ps[i].grad().to_double_vector(), before[i]);

  // Above it: every grad scaled by max_norm / (norm + 1e-6), the norm returned is the old one.
  const double max_norm = norm / 7;
  EXPECT_NEAR(clip_grad_norm(ps, max_norm), norm, 1e-12 * norm);
  const double factor = max_norm / (norm + 1e-6);
  for (int i = 0; i < 2; ++i) {
    std::vector<double> want = before[i];
    for (double& g : want) g *= factor;
    expect_close("clipped grad", ps[i].grad().to_double_vector(), want, 1e-7, 1e-6);
  }
  EXPECT_NEAR(direct_norm(ps), max_norm, 1e-5 * max_norm);
  EXPECT_FALSE(ps[2].grad().defined());
}

// A tiny model, logits = rmsnorm(embedding(ids)) with D = V, fits fixed targets: the loss
// must fall from about ln V to near zero.
TEST(AdamW, FitsATinyClassifier) {
  const int64_t V = 16, N = 12;
  Tensor table = Tensor::randn({V, V}, case_seed(300), DType::F32, Device::cpu(), 0.1);
  Tensor w = Tensor::ones({V}, DType::F32);
  table.set_requires_grad();
  w.set_requires_grad();
  // Distinct ids (reversed, so id != row), so every target is learnable.
  std::vector<int64_t> idv(N);
  for (int64_t i = 0; i < N; ++i) idv[i] = V - 1 - i;
  const Tensor ids = Tensor::from_vector(idv, {N});
  const Tensor targets = Tensor::randint({N}, case_seed(302), 0, V);
  AdamWConfig cfg;
  cfg.lr = 5e-2;
  AdamW opt({table, w}, cfg);
  double first = 0, last = 0;
  for (int step = 0; step < 100; ++step) {
    Tensor loss = cross_entropy(rmsnorm(embedding(ids, table), w, 1e-6), targets);
    last = loss.item();
    if (step == 0) first = last;
    backward(loss);
    clip_grad_norm(opt.params(), 1.0);
    opt.step();
    opt.zero_grad();
  }
  EXPECT_GT(first, 2.0);
  EXPECT_LT(last, 0.1) << "loss went from " << first << " to " << last;
}

}  // namespace
}  // namespace r1
