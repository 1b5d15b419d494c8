// Elementwise ops with NumPy broadcasting, scalar ops, and reductions (sum, mean, max).
#include <algorithm>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1 {
namespace {

void check_float_pair(const Tensor& a, const Tensor& b, const char* op) {
  R1_CHECK(a.defined() && b.defined(), "{}: undefined input", op);
  R1_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ ({} vs {})", op, dtype_name(a.dtype()),
           dtype_name(b.dtype()));
  R1_CHECK(dtype_is_floating(a.dtype()), "{}: needs floating tensors, got {}", op,
           dtype_name(a.dtype()));
  R1_CHECK(a.device() == b.device(), "{}: devices differ ({} vs {})", op, a.device().str(),
           b.device().str());
}

// out = a op b over the broadcast shape; not recorded.
Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b) {
  const Shape s = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  if (out.numel() == 0) return out;
  const Tensor ae = a.detach().contiguous().expand(s);
  const Tensor be = b.detach().contiguous().expand(s);
  kernels::binary()(a.device(), op, ae, be, out);
  return out;
}

// x viewed as (outer, R, inner) around dim d, reduced over R.
Tensor reduce_raw(ReduceOp op, const Tensor& x, int64_t d, bool keepdim, Tensor* argmax) {
  const Tensor xc = x.detach().contiguous();
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  Shape out_shape = x.shape();
  if (keepdim) out_shape[d] = 1;
  else out_shape.erase(out_shape.begin() + d);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor idx;
  if (op == ReduceOp::Max) idx = Tensor::empty(out_shape, DType::I64, x.device());
  const Tensor x3 = xc.view({outer, x.size(d), inner});
  kernels::reduce()(x.device(), op, x3, out, idx);
  if (argmax) *argmax = idx;
  return out;
}

// grad (shape of the reduction's output) -> x's shape, copied along dim d.
Tensor expand_back(const Tensor& g, const Shape& x_shape, int64_t d, bool keepdim) {
  Shape keep = x_shape;
  keep[d] = 1;
  Tensor gk = keepdim ? g : g.reshape(keep);
  return gk.expand(x_shape).contiguous();
}

Tensor record_binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  R1_NVTX_RANGE(name);
  check_float_pair(a, b, name);
  Tensor out = binary_raw(op, a, b);
  if (!needs_grad({a, b})) return out;
  const Shape sa = a.shape(), sb = b.shape();
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const Tensor ad = a.detach(), bd = b.detach(), od = out.detach();
  record(name, {a, b}, {&out},
         [op, sa, sb, ga, gb, ad, bd, od](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& go = g[0];
           Tensor da, db;
           switch (op) {
             case BinaryOp::Add:
               if (ga) da = sum_to_shape(go, sa);
               if (gb) db = sum_to_shape(go, sb);
               break;
             case BinaryOp::Sub:
               if (ga) da = sum_to_shape(go, sa);
               if (gb) db = sum_to_shape(scale(go, -1.0), sb);
               break;
             case BinaryOp::Mul:
               if (ga) da = sum_to_shape(mul(go, bd), sa);
               if (gb) db = sum_to_shape(mul(go, ad), sb);
               break;
             case BinaryOp::Div:  // d(a/b)/db = -(a/b)/b
               if (ga) da = sum_to_shape(div(go, bd), sa);
               if (gb) db = sum_to_shape(scale(div(mul(go, od), bd), -1.0), sb);
               break;
           }
           return {da, db};
         });
  return out;
}

Tensor affine_op(const Tensor& x, double s, double b, const char* name) {
  R1_NVTX_RANGE(name);
  R1_CHECK(x.defined() && dtype_is_floating(x.dtype()), "{}: needs a floating tensor", name);
  const Tensor xc = x.detach().contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::affine()(x.device(), xc, s, b, out);
  record(name, {x}, {&out}, [s](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {s == 1.0 ? g[0] : scale(g[0], s)};
  });
  return out;
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    R1_CHECK(da == db || da == 1 || db == 1, "shapes {} and {} do not broadcast", shape_str(a),
             shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  R1_CHECK(broadcast_shapes(x.shape(), shape) == x.shape(), "sum_to_shape: {} to {}",
           shape_str(x.shape()), shape_str(shape));
  NoGrad ng;
  Tensor y = x;
  while (y.dim() > static_cast<int64_t>(shape.size())) y = reduce_raw(ReduceOp::Sum, y, 0, false, nullptr);
  for (int64_t d = 0; d < y.dim(); ++d)
    if (shape[d] == 1 && y.size(d) != 1) y = reduce_raw(ReduceOp::Sum, y, d, true, nullptr);
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) { return record_binary(BinaryOp::Add, a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return record_binary(BinaryOp::Sub, a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return record_binary(BinaryOp::Mul, a, b, "mul"); }
Tensor div(const Tensor& a, const Tensor& b) { return record_binary(BinaryOp::Div, a, b, "div"); }
Tensor scale(const Tensor& x, double s) { return affine_op(x, s, 0.0, "scale"); }
Tensor add_scalar(const Tensor& x, double s) { return affine_op(x, 1.0, s, "add_scalar"); }

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  R1_NVTX_RANGE("sum");
  R1_CHECK(x.defined() && dtype_is_floating(x.dtype()), "sum: needs a floating tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "sum");
  Tensor out = reduce_raw(ReduceOp::Sum, x, d, keepdim, nullptr);
  const Shape xs = x.shape();
  record("sum", {x}, {&out}, [xs, d, keepdim](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {expand_back(g[0], xs, d, keepdim)};
  });
  return out;
}

Tensor sum(const Tensor& x) {
  if (x.dim() == 0) return x.clone();
  return sum(x.reshape({x.numel()}), 0, false);
}

Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t n = x.size(dim);
  R1_CHECK(n > 0, "mean over an empty dim");
  return scale(sum(x, dim, keepdim), 1.0 / static_cast<double>(n));
}

Tensor mean(const Tensor& x) {
  R1_CHECK(x.numel() > 0, "mean of an empty tensor");
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  R1_NVTX_RANGE("max");
  R1_CHECK(x.defined() && dtype_is_floating(x.dtype()), "max: needs a floating tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "max");
  Tensor argmax;
  Tensor out = reduce_raw(ReduceOp::Max, x, d, keepdim, &argmax);
  const Shape xs = x.shape();
  record("max", {x}, {&out},
         [xs, d, argmax](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           // Scatter each grad into its row's first maximum.
           int64_t outer = 1, inner = 1;
           for (int64_t i = 0; i < d; ++i) outer *= xs[i];
           for (int64_t i = d + 1; i < static_cast<int64_t>(xs.size()); ++i) inner *= xs[i];
           Tensor dx = Tensor::zeros(xs, g[0].dtype(), g[0].device());
           Tensor dx3 = dx.view({outer, xs[d], inner});
           const Tensor g3 = g[0].contiguous().view({outer, 1, inner});
           const Tensor i3 = argmax.view({outer, 1, inner});
           kernels::scatter_add()(dx.device(), g3, i3, dx3);
           return {dx};
         });
  return out;
}

}  // namespace r1
