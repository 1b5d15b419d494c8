// RoPE tables with YaRN, following DeepSeek-V3 inference/model.py (precompute_freqs_cis),
// with one deliberate difference: YaRN is applied whenever the config has it (factor > 1),
// not only when max_seq_len exceeds original_seq_len, as DESIGN.md specifies.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "engine/ops.h"

namespace r1 {
namespace {

// The dimension index at which a frequency completes num_rotations turns over the original
// context: dim * ln(orig_max_pos / (num_rotations * 2 pi)) / (2 ln theta).
double find_correction_dim(double num_rotations, double dim, double theta, double orig_max_pos) {
  return dim * std::log(orig_max_pos / (num_rotations * 2 * std::numbers::pi)) /
         (2 * std::log(theta));
}

// Per-pair inverse frequencies (dim/2), YaRN-blended when cfg.yarn_factor > 1: pairs that turn
// fast (below `low`) keep their frequency, slow ones (above `high`) are divided by factor,
// with a linear ramp between.
std::vector<double> rope_frequencies(const RopeConfig& cfg) {
  const int64_t half = cfg.dim / 2;
  const double dim = static_cast<double>(cfg.dim);
  std::vector<double> freqs(half);
  for (int64_t i = 0; i < half; ++i) freqs[i] = 1.0 / std::pow(cfg.theta, 2.0 * i / dim);
  if (cfg.yarn_factor <= 1.0) return freqs;
  const double orig = static_cast<double>(cfg.original_max_position_embeddings);
  // DeepSeek's find_correction_range clamps low from below and high from above only.
  const double low =
      std::max(std::floor(find_correction_dim(cfg.beta_fast, dim, cfg.theta, orig)), 0.0);
  double high =
      std::min(std::ceil(find_correction_dim(cfg.beta_slow, dim, cfg.theta, orig)), dim - 1);
  if (low == high) high += 0.001;  // linear_ramp_factor's guard against 0/0
  for (int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double smooth = 1.0 - ramp;
    freqs[i] = freqs[i] / cfg.yarn_factor * (1.0 - smooth) + freqs[i] * smooth;
  }
  return freqs;
}

}  // namespace

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// cos/sin (max_positions, dim/2) in the requested dtype, angles formed in f64.
RopeTable::RopeTable(const RopeConfig& cfg, int64_t max_positions, DType dtype, Device dev)
    : config(cfg) {
  R1_CHECK(cfg.dim > 0 && cfg.dim % 2 == 0, "RopeTable: dim {} must be even and positive",
           cfg.dim);
  R1_CHECK(max_positions > 0, "RopeTable: max_positions {}", max_positions);
  R1_CHECK(cfg.theta > 1.0, "RopeTable: theta {} must exceed 1", cfg.theta);
  R1_CHECK(cfg.yarn_factor > 0.0, "RopeTable: yarn_factor {} must be positive", cfg.yarn_factor);
  const std::vector<double> freqs = rope_frequencies(cfg);
  const int64_t half = cfg.dim / 2;
  std::vector<double> c(static_cast<size_t>(max_positions * half));
  std::vector<double> s(c.size());
  for (int64_t p = 0; p < max_positions; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double a = static_cast<double>(p) * freqs[j];
      c[p * half + j] = std::cos(a);
      s[p * half + j] = std::sin(a);
    }
  cos = Tensor::from_vector(c, {max_positions, half}, dtype, dev);
  sin = Tensor::from_vector(s, {max_positions, half}, dtype, dev);
}

}  // namespace r1
