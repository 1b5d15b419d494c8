// AdamW over a parameter list, and global-norm gradient clipping.
#include "engine/optim.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/kernels.h"

namespace r1 {

AdamW::AdamW(std::vector<Tensor> params, const AdamWConfig& cfg)
    : params_(std::move(params)), m_(params_.size()), v_(params_.size()), cfg_(cfg) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    R1_CHECK(p.defined() && dtype_is_floating(p.dtype()) && p.is_leaf() && p.is_contiguous(),
             "AdamW: parameter {} is {}: must be a contiguous float leaf", i, p.str());
  }
}

// One global step count for all parameters (PyTorch keeps one per parameter; they agree
// unless a parameter skips steps). Moments are allocated at a parameter's first grad.
void AdamW::step(double grad_scale) {
  NoGrad ng;
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    R1_CHECK(g.dtype() == p.dtype() && g.shape() == p.shape(), "AdamW: grad {} for parameter {} "
             "{}", g.str(), i, p.str());
    if (!m_[i].defined()) {
      m_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      v_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
    }
    kernels::adamw_step()(p.device(), p, g.contiguous(), m_[i], v_[i], cfg_.lr, cfg_.beta1,
                          cfg_.beta2, cfg_.eps, cfg_.weight_decay, step_, grad_scale);
  }
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

double grad_norm(const std::vector<Tensor>& params) {
  double ss = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor gc = g.contiguous();
    ss += kernels::sum_squares()(gc.device(), gc);
  }
  return std::sqrt(ss);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  R1_CHECK(max_norm > 0, "clip_grad_norm: max_norm {} must be positive", max_norm);
  const double norm = grad_norm(params);
  const double factor = std::min(1.0, max_norm / (norm + 1e-6));
  if (factor >= 1.0) return norm;
  NoGrad ng;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!g.is_contiguous()) {  // a grad set by hand may be a strided view: own a copy
      g = g.contiguous();
      Tensor(p).set_grad(g);
    }
    kernels::affine()(g.device(), g, factor, 0.0, g);
  }
  return norm;
}

}  // namespace r1
