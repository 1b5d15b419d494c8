// The MoE router ops (engine/ops_moe.h): checks, the kernels of engine/kernels_moe.h, and one
// tape node per differentiable op (moe_route saves logits, indices and the per-token sum of
// the chosen scores; moe_balance_loss saves logits, the sequence offsets and f).
#include "engine/ops_moe.h"

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels_moe.h"
#include "engine/nvtx.h"

namespace r1 {
namespace {

// The kernel's view of an input: contiguous, with no autograd history (not recorded).
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }

bool is_int(const Tensor& t) {
  return t.defined() && (t.dtype() == DType::I32 || t.dtype() == DType::I64);
}

void check_logits(const char* op, const Tensor& logits) {
  R1_CHECK(logits.defined() && dtype_is_floating(logits.dtype()) && logits.dim() == 2,
           "{}: logits {} must be an (N, E) float tensor", op,
           logits.defined() ? logits.str() : "undefined");
}

}  // namespace

void MoeRouteConfig::validate(int64_t E) const {
  R1_CHECK(E >= 1, "MoeRouteConfig: n_routed_experts (E = {}) must be >= 1", E);
  R1_CHECK(n_group >= 1 && E % n_group == 0,
           "MoeRouteConfig: n_group {} must be >= 1 and divide n_routed_experts {}", n_group, E);
  R1_CHECK(n_group == 1 || E / n_group >= 2,
           "MoeRouteConfig: n_group {} leaves {} expert(s) per group; the group score is a "
           "top-2 sum and needs >= 2", n_group, E / n_group);
  R1_CHECK(n_group == 1 || (topk_group >= 1 && topk_group <= n_group),
           "MoeRouteConfig: topk_group {} must be in [1, n_group = {}]", topk_group, n_group);
  const int64_t available = n_group == 1 ? E : topk_group * (E / n_group);
  R1_CHECK(top_k >= 1 && top_k <= available,
           "MoeRouteConfig: top_k (num_experts_per_tok) {} must be in [1, {}] (the experts of "
           "the kept groups: topk_group {} x {} per group)", top_k, available,
           n_group == 1 ? 1 : topk_group, E / n_group);
  R1_CHECK(std::isfinite(routed_scaling_factor) && routed_scaling_factor > 0,
           "MoeRouteConfig: routed_scaling_factor {} must be finite and > 0",
           routed_scaling_factor);
}

MoeRoute moe_route(const Tensor& logits, const Tensor& bias, const MoeRouteConfig& cfg) {
  R1_NVTX_RANGE("moe_route");
  check_logits("moe_route", logits);
  const int64_t N = logits.size(0), E = logits.size(1), K = cfg.top_k;
  cfg.validate(E);
  const Device dev = logits.device();
  const DType sd = stat_dtype(logits.dtype());
  R1_CHECK(bias.defined() && bias.dim() == 1 && bias.size(0) == E && bias.dtype() == sd &&
               bias.device() == dev,
           "moe_route: bias {} must be (E = {}) {} on {} (e_score_correction_bias, fp32 for "
           "bf16/f32 logits)", bias.defined() ? bias.str() : "undefined", E, dtype_name(sd),
           dev.str());
  const Tensor lc = plain(logits);
  MoeRoute r;
  r.indices = Tensor::empty({N, K}, DType::I64, dev);
  r.weights = Tensor::empty({N, K}, sd, dev);
  r.load = Tensor::empty({E}, DType::I64, dev);
  Tensor denom = Tensor::empty({N}, sd, dev);
  kernels::moe_route_forward()(dev, lc, plain(bias), cfg, r.indices, r.weights, denom, r.load);
  const Tensor idx = r.indices;
  record("moe_route", {logits}, {&r.weights},
         [lc, idx, denom, cfg](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dlogits = Tensor::empty(lc.shape(), lc.dtype(), lc.device());
           kernels::moe_route_backward()(lc.device(), lc, idx, denom, g[0].contiguous(), cfg,
                                         dlogits);
           return {dlogits};
         });
  return r;
}

Tensor moe_balance_loss(const Tensor& logits, const Tensor& indices, const Tensor& seq_lens,
                        double alpha) {
  R1_NVTX_RANGE("moe_balance_loss");
  check_logits("moe_balance_loss", logits);
  const int64_t N = logits.size(0), E = logits.size(1);
  const Device dev = logits.device();
  R1_CHECK(is_int(indices) && indices.dim() == 2 && indices.size(0) == N &&
               indices.size(1) >= 1 && indices.device() == dev,
           "moe_balance_loss: indices {} must be (N = {}, K >= 1) i32/i64 on {}",
           indices.defined() ? indices.str() : "undefined", N, dev.str());
  R1_CHECK(is_int(seq_lens) && seq_lens.dim() == 1 && seq_lens.size(0) >= 1,
           "moe_balance_loss: seq_lens {} must be (B >= 1) i32/i64",
           seq_lens.defined() ? seq_lens.str() : "undefined");
  R1_CHECK(std::isfinite(alpha) && alpha >= 0, "moe_balance_loss: alpha {} must be finite and "
           ">= 0", alpha);
  const Tensor ic = plain(indices);
  // Host checks: B + N K ints, the price of an error instead of a wrong count on the device.
  const std::vector<int64_t> lens = seq_lens.to_int_vector();
  std::vector<int64_t> off{0};
  for (size_t b = 0; b < lens.size(); ++b) {
    R1_CHECK(lens[b] >= 1, "moe_balance_loss: seq_lens[{}] = {} must be >= 1", b, lens[b]);
    off.push_back(off.back() + lens[b]);
  }
  R1_CHECK(off.back() == N, "moe_balance_loss: seq_lens sum to {}, logits have N = {} rows",
           off.back(), N);
  for (int64_t i : ic.to_int_vector())
    R1_CHECK(i >= 0 && i < E, "moe_balance_loss: index {} outside [0, E = {})", i, E);

  const DType sd = stat_dtype(logits.dtype());
  const int64_t B = static_cast<int64_t>(lens.size());
  const Tensor lc = plain(logits);
  const Tensor offsets = Tensor::from_vector(off, {B + 1}, DType::I64, dev);
  Tensor f = Tensor::empty({B, E}, sd, dev), terms = Tensor::empty({N}, sd, dev);
  kernels::moe_balance_loss_forward()(dev, lc, ic, offsets, alpha, f, terms);
  Tensor out = Tensor::empty({1, 1}, sd, dev), no_argmax;
  kernels::reduce()(dev, ReduceOp::Sum, terms.view({1, N, 1}), out, no_argmax);
  out = out.view({});
  record("moe_balance_loss", {logits}, {&out},
         [lc, offsets, f, alpha](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dlogits = Tensor::empty(lc.shape(), lc.dtype(), lc.device());
           kernels::moe_balance_loss_backward()(lc.device(), lc, offsets, f,
                                                g[0].contiguous().view({}), alpha, dlogits);
           return {dlogits};
         });
  return out;
}

bool moe_combine_available(Device dev) {
  return kernels::moe_combine_forward().has(dev.type) &&
         kernels::moe_combine_backward().has(dev.type);
}

Tensor moe_combine(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                   const Tensor& row) {
  R1_NVTX_RANGE("moe_combine");
  R1_CHECK(!ys.empty() && w.defined() && dtype_is_floating(w.dtype()) && w.numel() > 0,
           "moe_combine: needs expert outputs and float weights, got {} outputs, w {}",
           ys.size(), w.defined() ? w.str() : "undefined");
  const Device dev = w.device();
  const int64_t P = w.numel(), D = ys[0].dim() == 2 ? ys[0].size(1) : -1;
  R1_CHECK(is_int(part) && is_int(row) && part.numel() == P && row.numel() == P,
           "moe_combine: part {} and row {} must be int with one entry per weight ({})",
           part.defined() ? part.str() : "undefined", row.defined() ? row.str() : "undefined",
           P);
  std::vector<int64_t> rows_of;
  std::vector<Tensor> yc;
  for (const Tensor& y : ys) {
    R1_CHECK(y.defined() && y.dim() == 2 && y.size(1) == D && y.dtype() == w.dtype() &&
                 y.device() == dev,
             "moe_combine: expert output {} must be (n, {}) {} on {}",
             y.defined() ? y.str() : "undefined", D, dtype_name(w.dtype()), dev.str());
    rows_of.push_back(y.size(0));
    yc.push_back(plain(y));
  }
  // Every row of every output read by exactly one pair: the backward writes each once.
  const std::vector<int64_t> pv = part.to_int_vector(), rv = row.to_int_vector();
  std::vector<int64_t> offset(ys.size() + 1, 0);
  for (size_t j = 0; j < ys.size(); ++j) offset[j + 1] = offset[j] + rows_of[j];
  R1_CHECK(offset.back() == P, "moe_combine: {} expert rows for {} pairs", offset.back(), P);
  std::vector<char> seen(static_cast<size_t>(P), 0);
  for (int64_t p = 0; p < P; ++p) {
    R1_CHECK(pv[p] >= 0 && pv[p] < static_cast<int64_t>(ys.size()) && rv[p] >= 0 &&
                 rv[p] < rows_of[pv[p]],
             "moe_combine: pair {} reads row {} of output {} (of {})", p, rv[p], pv[p],
             ys.size());
    char& s = seen[offset[pv[p]] + rv[p]];
    R1_CHECK(!s, "moe_combine: row {} of output {} read twice", rv[p], pv[p]);
    s = 1;
  }
  const int64_t N = w.dim() == 2 ? w.size(0) : -1;
  R1_CHECK(w.dim() == 2, "moe_combine: w {} must be (N, K)", w.str());
  const Tensor wc = plain(w).view({P});
  const Tensor pc = plain(part).to(DType::I64).to(dev).view({P});
  const Tensor rc = plain(row).to(DType::I64).to(dev).view({P});
  Tensor y = Tensor::empty({N, D}, w.dtype(), dev);
  kernels::moe_combine_forward()(dev, yc, wc, pc, rc, y);
  std::vector<Tensor> inputs = ys;
  inputs.push_back(w);
  const bool gw = w.requires_grad();
  const Shape ws = w.shape();
  record("moe_combine", inputs, {&y},
         [yc, wc, pc, rc, gw, ws](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Device dev = wc.device();
           std::vector<Tensor> dys;
           for (const Tensor& y : yc) dys.push_back(Tensor::empty(y.shape(), y.dtype(), dev));
           Tensor dw = gw ? Tensor::empty({wc.numel()}, wc.dtype(), dev) : Tensor();
           kernels::moe_combine_backward()(dev, yc, wc, pc, rc, g[0].contiguous(), dys, dw);
           if (gw) dw = dw.view(ws);
           dys.push_back(dw);
           return dys;
         });
  return y;
}

Tensor moe_combine_all(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& indices) {
  R1_NVTX_RANGE("moe_combine_all");
  R1_CHECK(!ys.empty() && w.defined() && dtype_is_floating(w.dtype()) && w.dim() == 2 &&
               w.numel() > 0,
           "moe_combine_all: needs expert outputs and (N, K) float weights, got {} outputs, w {}",
           ys.size(), w.defined() ? w.str() : "undefined");
  const Device dev = w.device();
  const int64_t N = w.size(0), K = w.size(1), E = static_cast<int64_t>(ys.size());
  const int64_t D = ys[0].dim() == 2 ? ys[0].size(1) : -1;
  R1_CHECK(is_int(indices) && indices.shape() == w.shape() && indices.device() == dev,
           "moe_combine_all: indices {} must be int like w {} on {}",
           indices.defined() ? indices.str() : "undefined", w.str(), dev.str());
  R1_CHECK(K <= E, "moe_combine_all: {} choices per token among {} expert outputs", K, E);
  std::vector<Tensor> inputs = ys;
  inputs.push_back(w);
  R1_CHECK(!needs_grad(inputs), "moe_combine_all: forward only (use moe_combine to train)");
  std::vector<Tensor> yc;
  for (const Tensor& y : ys) {
    R1_CHECK(y.defined() && y.dim() == 2 && y.size(0) == N && y.size(1) == D &&
                 y.dtype() == w.dtype() && y.device() == dev,
             "moe_combine_all: expert output {} must be ({}, {}) {} on {}",
             y.defined() ? y.str() : "undefined", N, D, dtype_name(w.dtype()), dev.str());
    yc.push_back(plain(y));
  }
  Tensor y = Tensor::empty({N, D}, w.dtype(), dev);
  kernels::moe_combine_forward()(dev, yc, plain(w).view({N * K}),
                                 plain(indices).to(DType::I64).view({N * K}), Tensor(), y);
  return y;
}

MoeMaskedSlots moe_masked_slots(const Tensor& indices, int64_t num_experts, int64_t cap) {
  R1_NVTX_RANGE("moe_masked_slots");
  R1_CHECK(is_int(indices) && indices.dim() == 2 && num_experts >= 1 &&
               cap >= indices.size(0),
           "moe_masked_slots: indices {} must be (N, K) int, experts {} >= 1, cap {} >= N",
           indices.defined() ? indices.str() : "undefined", num_experts, cap);
  const Device dev = indices.device();
  MoeMaskedSlots r{Tensor::empty({indices.numel()}, DType::I64, dev),
                   Tensor::empty({num_experts}, DType::I64, dev)};
  kernels::moe_masked_slots()(dev, plain(indices).to(DType::I64).view({indices.numel()}), cap,
                              r.dest, r.counts);
  return r;
}

Tensor moe_scatter_rows(const Tensor& src, const Tensor& dest, int64_t rows, bool zero_rest) {
  R1_NVTX_RANGE("moe_scatter_rows");
  R1_CHECK(src.defined() && src.dim() == 2 && rows >= 0,
           "moe_scatter_rows: src {} must be (N, C), rows {} >= 0",
           src.defined() ? src.str() : "undefined", rows);
  R1_CHECK(!needs_grad({src}), "moe_scatter_rows: forward only");
  Tensor out = zero_rest ? Tensor::zeros({rows, src.size(1)}, src.dtype(), src.device())
                         : Tensor::empty({rows, src.size(1)}, src.dtype(), src.device());
  kernels::moe_scatter_rows()(src.device(), plain(src), plain(dest), out);
  return out;
}

Tensor moe_combine_rows(const Tensor& y_rows, const Tensor& w, const Tensor& dest) {
  R1_NVTX_RANGE("moe_combine_rows");
  R1_CHECK(y_rows.defined() && y_rows.dim() == 2 && w.defined() && w.dim() == 2 &&
               w.dtype() == y_rows.dtype() && w.device() == y_rows.device() &&
               dtype_is_floating(w.dtype()) && dest.defined() && dest.dtype() == DType::I64 &&
               dest.numel() == w.numel() && dest.device() == w.device() && w.size(1) > 0,
           "moe_combine_rows: y_rows {} (R, D), w {} (N, K > 0) of its dtype and dest {} (N K) i64 "
           "on one device",
           y_rows.defined() ? y_rows.str() : "undefined", w.defined() ? w.str() : "undefined",
           dest.defined() ? dest.str() : "undefined");
  R1_CHECK(!needs_grad({y_rows, w}), "moe_combine_rows: forward only");
  const int64_t N = w.size(0), D = y_rows.size(1);
  Tensor y = Tensor::empty({N, D}, w.dtype(), w.device());
  if (N == 0) return y;
  const Tensor part = Tensor::zeros({w.numel()}, DType::I64, w.device());
  const std::vector<Tensor> ys{plain(y_rows)};
  kernels::moe_combine_forward()(w.device(), ys, plain(w).view({w.numel()}), part, plain(dest),
                                 y);
  return y;
}

void moe_update_bias(Tensor& bias, const Tensor& load, double gamma) {
  R1_CHECK(bias.defined() && dtype_is_floating(bias.dtype()) && bias.dim() == 1 &&
               bias.is_contiguous(),
           "moe_update_bias: bias {} must be a contiguous (E) float tensor",
           bias.defined() ? bias.str() : "undefined");
  R1_CHECK(is_int(load) && load.shape() == bias.shape() && load.device() == bias.device(),
           "moe_update_bias: load {} must be (E = {}) i32/i64 on bias's device {}",
           load.defined() ? load.str() : "undefined", bias.size(0), bias.device().str());
  R1_CHECK(std::isfinite(gamma) && gamma >= 0, "moe_update_bias: gamma {} must be finite and "
           ">= 0", gamma);
  Tensor b = bias.detach();
  kernels::moe_update_bias()(bias.device(), b, plain(load), gamma);
}

}  // namespace r1
