// AdamW (fused, decoupled weight decay, PyTorch semantics) and global-norm gradient clipping.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

class AdamW {
 public:
  AdamW(std::vector<Tensor> params, const AdamWConfig& cfg);
  // One step over every parameter that has a grad; grads are multiplied by grad_scale first
  // (clip_grad_norm's factor can be folded in here instead of rescaling the grads).
  void step(double grad_scale = 1.0);
  void zero_grad();
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  AdamWConfig& config() { return cfg_; }
  const std::vector<Tensor>& params() const { return params_; }
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> m_, v_;
  AdamWConfig cfg_;
  int64_t step_ = 0;
};

// Global L2 norm of all defined grads (accumulated in f64).
double grad_norm(const std::vector<Tensor>& params);
// Scales every grad by min(1, max_norm / (norm + 1e-6)) in place; returns the norm before.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace r1
