// Matrix products: matmul and linear, forward next to backward. Both reduce to the gemm
// kernel on 3-D (batch, rows, cols) views; the backward calls gemm directly (no recorded ops)
// so the tape holds one node per product.
#include <algorithm>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1 {
namespace {

// x (..., R, C) contiguous -> (batch, R, C) view, batch = product of the leading dims.
Tensor as_batched(const Tensor& x) {
  int64_t batch = 1;
  for (int64_t d = 0; d + 2 < x.dim(); ++d) batch *= x.size(d);
  return x.view({batch, x.size(-2), x.size(-1)});
}

// out (B, M, N) := op(x) @ op(y) with x (Bx, ., .), y (By, ., .), Bx and By in {B, 1}.
Tensor batched_product(const Tensor& x, const Tensor& y, bool tx, bool ty, int64_t batch) {
  const int64_t m = tx ? x.size(2) : x.size(1), n = ty ? y.size(1) : y.size(2);
  Tensor out = Tensor::empty({batch, m, n}, x.dtype(), x.device());
  kernels::gemm()(x.device(), x, y, out, tx, ty, 1.0, 0.0);
  return out;
}

// out (1, M, N) := sum over b of op(x_b) @ op(y_b), x and y (B, ., .) (y may be (1, ., .)):
// the gradient of an operand that was broadcast over the batch.
Tensor summed_product(const Tensor& x, const Tensor& y, bool tx, bool ty) {
  const int64_t batch = x.size(0);
  // x_b^T @ y_b summed over b is one product over the stacked rows: (B*R, P)^T @ (B*R, Q).
  if (tx && !ty && y.size(0) == batch)
    return batched_product(x.view({1, -1, x.size(2)}), y.view({1, -1, y.size(2)}), true, false,
                           1);
  const int64_t m = tx ? x.size(2) : x.size(1), n = ty ? y.size(1) : y.size(2);
  Tensor out = Tensor::empty({1, m, n}, x.dtype(), x.device());
  for (int64_t b = 0; b < batch; ++b) {
    const Tensor yb = y.narrow(0, y.size(0) == 1 ? 0 : b, 1);
    kernels::gemm()(x.device(), x.narrow(0, b, 1), yb, out, tx, ty, 1.0, b == 0 ? 0.0 : 1.0);
  }
  return out;
}

// The gradient of one operand of c = op(x) @ op(y) expressed as op(p) @ op(q), reduced to the
// operand's batch (its own batch, or 1 when it was broadcast).
Tensor operand_grad(const Tensor& p, const Tensor& q, bool tp, bool tq, int64_t operand_batch,
                    int64_t batch) {
  if (operand_batch == batch) return batched_product(p, q, tp, tq, batch);
  return summed_product(p, q, tp, tq);
}

void check_product_inputs(const Tensor& a, const Tensor& b, const char* op) {
  R1_CHECK(a.defined() && b.defined(), "{}: undefined input", op);
  R1_CHECK(a.dtype() == b.dtype() && dtype_is_floating(a.dtype()),
           "{}: needs floating inputs of one dtype, got {} and {}", op, dtype_name(a.dtype()),
           dtype_name(b.dtype()));
  R1_CHECK(a.device() == b.device(), "{}: devices differ ({} vs {})", op, a.device().str(),
           b.device().str());
}

}  // namespace

// a (..., M, K) [(..., K, M) if trans_a], b (..., K, N) [(..., N, K) if trans_b], either one
// 2-D (broadcast over the other's batch) -> (..., M, N). Saves contiguous a and b.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  R1_NVTX_RANGE("matmul");
  check_product_inputs(a, b, "matmul");
  const auto shapes = [&] {
    return shape_str(a.shape()) + (trans_a ? "^T" : "") + " @ " + shape_str(b.shape()) +
           (trans_b ? "^T" : "");
  };
  R1_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: needs at least 2-d inputs: {}", shapes());
  const Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  const Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  R1_CHECK(batch_a == batch_b || batch_a.empty() || batch_b.empty(),
           "matmul: batch dims differ: {}", shapes());
  const int64_t m = a.size(trans_a ? -1 : -2), ka = a.size(trans_a ? -2 : -1);
  const int64_t kb = b.size(trans_b ? -1 : -2), n = b.size(trans_b ? -2 : -1);
  R1_CHECK(ka == kb, "matmul: inner sizes differ ({} vs {}): {}", ka, kb, shapes());

  const Tensor a3 = as_batched(a.detach().contiguous());
  const Tensor b3 = as_batched(b.detach().contiguous());
  const int64_t batch = std::max(a3.size(0), b3.size(0));
  Shape out_shape = batch_a.empty() ? batch_b : batch_a;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = batched_product(a3, b3, trans_a, trans_b, batch).view(out_shape);

  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const Shape sa = a.shape(), sb = b.shape();
  record("matmul", {a, b}, {&out},
         [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor dc = g[0].contiguous().view({batch, m, n});
           Tensor da, db;
           // c = op(a) op(b): d op(a) = dc op(b)^T, d op(b) = op(a)^T dc; a transposed
           // operand takes the transpose of its product.
           if (ga) {
             da = trans_a ? operand_grad(b3, dc, trans_b, true, a3.size(0), batch)
                          : operand_grad(dc, b3, false, !trans_b, a3.size(0), batch);
             da = da.view(sa);
           }
           if (gb) {
             db = trans_b ? operand_grad(dc, a3, true, trans_a, b3.size(0), batch)
                          : operand_grad(a3, dc, !trans_a, false, b3.size(0), batch);
             db = db.view(sb);
           }
           return {da, db};
         });
  return out;
}

// x (..., in), w (out, in), bias (out) or undefined -> (..., out) = x @ w^T + bias.
// Saves contiguous x and w.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  R1_NVTX_RANGE("linear");
  check_product_inputs(x, w, "linear");
  R1_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1),
           "linear: x {} and w {} (want x (..., in), w (out, in))", shape_str(x.shape()),
           shape_str(w.shape()));
  const int64_t in = w.size(1), out_f = w.size(0);
  const bool has_bias = bias.defined();
  if (has_bias) {
    check_product_inputs(x, bias, "linear");
    R1_CHECK(bias.dim() == 1 && bias.size(0) == out_f, "linear: bias {} for w {}",
             shape_str(bias.shape()), shape_str(w.shape()));
  }
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  const Tensor x3 = x.detach().contiguous().view({1, rows, in});
  const Tensor w3 = w.detach().contiguous().view({1, out_f, in});
  Tensor y3 = Tensor::empty({1, rows, out_f}, x.dtype(), x.device());
  double beta = 0.0;
  if (has_bias && rows > 0) {  // y starts as the bias rows; the product adds onto it
    kernels::copy_strided()(x.device(), bias.detach().expand({1, rows, out_f}), y3);
    beta = 1.0;
  }
  kernels::gemm()(x.device(), x3, w3, y3, false, true, 1.0, beta);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = y3.view(out_shape);

  const bool gx = x.requires_grad(), gw = w.requires_grad();
  const bool gbias = has_bias && bias.requires_grad();
  const Shape sx = x.shape();
  record("linear", {x, w, bias}, {&y},
         [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor dy = g[0].contiguous().view({1, rows, out_f});
           Tensor dx, dw, db;
           if (gx) dx = batched_product(dy, w3, false, false, 1).view(sx);        // dy @ w
           if (gw) dw = batched_product(dy, x3, true, false, 1).view({out_f, in});  // dy^T @ x
           if (gbias) db = sum(dy.view({rows, out_f}), 0);
           return {dx, dw, db};
         });
  return y;
}

}  // namespace r1
