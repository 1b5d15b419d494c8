// Joining and indexing ops: concat, split, gather, index_select, forward next to backward.
// concat/split move data with narrow + copy_; gather/index_select view x as (outer, D, inner)
// around `dim` and call the indexing kernels, whose accumulating twins are the backward.
#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1 {
namespace {

// (outer, shape[d], inner) of a shape around dim d.
Shape around_dim(const Shape& s, int64_t d) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[i];
  for (size_t i = d + 1; i < s.size(); ++i) inner *= s[i];
  return {outer, s[d], inner};
}

void check_index(const Tensor& index, const char* op) {
  R1_CHECK(index.defined() && (index.dtype() == DType::I32 || index.dtype() == DType::I64),
           "{}: index must be i32 or i64, got {}", op,
           index.defined() ? dtype_name(index.dtype()) : "undefined");
}

}  // namespace

// xs: k tensors of one dtype and rank, equal except along dim -> sizes along dim summed.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  R1_NVTX_RANGE("concat");
  R1_CHECK(!xs.empty(), "concat: no tensors");
  const Tensor& x0 = xs[0];
  R1_CHECK(x0.defined() && x0.dim() > 0, "concat: needs tensors of rank >= 1");
  const int64_t d = wrap_dim(dim, x0.dim(), "concat");
  Shape out_shape = x0.shape();
  out_shape[d] = 0;
  for (const Tensor& x : xs) {
    Shape want = x0.shape(), got = x.shape();
    if (x.defined() && x.dim() == x0.dim()) want[d] = got[d];
    R1_CHECK(x.defined() && got == want && x.dtype() == x0.dtype() && x.device() == x0.device(),
             "concat: along dim {} tensor {} does not fit {}", d, x.str(), x0.str());
    out_shape[d] += x.size(d);
  }
  Tensor out = Tensor::empty(out_shape, x0.dtype(), x0.device());
  std::vector<int64_t> starts, lengths;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    starts.push_back(at);
    lengths.push_back(x.size(d));
    out.narrow(d, at, x.size(d)).copy_(x.detach());
    at += x.size(d);
  }
  record("concat", xs, {&out}, [d, starts, lengths](const std::vector<Tensor>& g) {
    std::vector<Tensor> grads;
    for (size_t k = 0; k < starts.size(); ++k)
      grads.push_back(g[0].narrow(d, starts[k], lengths[k]).contiguous());
    return grads;
  });
  return out;
}

// x (..., S, ...) at dim, sizes summing to S -> one contiguous tensor per size (views of x
// when the parts are contiguous in it, else copies). One node
// records every output: the input's grad assembles from all of theirs (zeros for unused ones).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  R1_NVTX_RANGE("split");
  R1_CHECK(x.defined() && x.dim() > 0, "split: needs a tensor of rank >= 1");
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    R1_CHECK(s >= 0, "split: negative size {}", s);
    total += s;
  }
  R1_CHECK(total == x.size(d), "split: sizes {} sum to {}, but dim {} of {} has {}",
           shape_str(sizes), total, d, shape_str(x.shape()), x.size(d));
  const Tensor xd = x.detach();
  // Along the outermost dim of a contiguous x each part is already contiguous: views (they
  // share x's storage, as x's other views do), no copy.
  bool views = xd.is_contiguous();
  for (int64_t i = 0; i < d; ++i) views = views && x.size(i) == 1;
  std::vector<Tensor> outs;
  std::vector<Tensor*> out_ptrs;
  int64_t at = 0;
  for (int64_t s : sizes) {
    outs.push_back(views ? xd.narrow(d, at, s) : xd.narrow(d, at, s).clone());
    at += s;
  }
  for (Tensor& o : outs) out_ptrs.push_back(&o);
  const Shape xs = x.shape();
  record("split", {x}, out_ptrs, [d, xs, sizes](const std::vector<Tensor>& g) {
    Tensor dx = Tensor::empty(xs, g[0].dtype(), g[0].device());
    int64_t at = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      dx.narrow(d, at, sizes[k]).copy_(g[k]);
      at += sizes[k];
    }
    return std::vector<Tensor>{dx};
  });
  return outs;
}

// x (..., Dx, ...), index of x's rank with index.size(dim) = Di and other sizes <= x's
// (torch.gather) -> index's shape. Saves the index.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  R1_NVTX_RANGE("gather");
  check_index(index, "gather");
  R1_CHECK(x.defined() && x.dim() > 0 && index.dim() == x.dim(),
           "gather: index {} must have the rank of x {}", shape_str(index.shape()),
           shape_str(x.shape()));
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  // torch allows index smaller than x off `dim`: gather from the matching corner of x (a
  // recorded narrow, so its backward pads the grad back).
  Tensor xn = x;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i == d) continue;
    R1_CHECK(index.size(i) <= x.size(i), "gather: index {} larger than x {} at dim {}",
             shape_str(index.shape()), shape_str(x.shape()), i);
    if (index.size(i) < x.size(i)) xn = xn.narrow(i, 0, index.size(i));
  }
  const Shape x3 = around_dim(xn.shape(), d), i3 = around_dim(index.shape(), d);
  const Tensor idx = index.contiguous().view(i3);
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  Tensor out3 = out.view(i3);
  kernels::gather()(x.device(), xn.detach().contiguous().view(x3), idx, out3);
  const Shape xs = xn.shape();
  record("gather", {xn}, {&out}, [xs, x3, idx](const std::vector<Tensor>& g) {
    Tensor dx = Tensor::zeros(xs, g[0].dtype(), g[0].device());
    Tensor dx3 = dx.view(x3);
    kernels::scatter_add()(dx.device(), g[0].contiguous().view(idx.shape()), idx, dx3);
    return std::vector<Tensor>{dx};
  });
  return out;
}

// x (..., Dx, ...), index (n) int -> x's shape with Dx replaced by n. Saves the index.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  R1_NVTX_RANGE("index_select");
  check_index(index, "index_select");
  R1_CHECK(x.defined() && x.dim() > 0 && index.dim() == 1,
           "index_select: x {} with index {} (want a 1-d index)", shape_str(x.shape()),
           shape_str(index.shape()));
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  const Shape x3 = around_dim(x.shape(), d);
  Shape out_shape = x.shape();
  out_shape[d] = index.size(0);
  const Tensor idx = index.contiguous();
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor out3 = out.view({x3[0], index.size(0), x3[2]});
  kernels::index_select()(x.device(), x.detach().contiguous().view(x3), idx, out3);
  const Shape xs = x.shape();
  record("index_select", {x}, {&out}, [xs, x3, idx](const std::vector<Tensor>& g) {
    Tensor dx = Tensor::zeros(xs, g[0].dtype(), g[0].device());
    Tensor dx3 = dx.view(x3);
    const Tensor g3 = g[0].contiguous().view({x3[0], idx.size(0), x3[2]});
    kernels::index_add()(dx.device(), g3, idx, dx3);
    return std::vector<Tensor>{dx};
  });
  return out;
}

}  // namespace r1
