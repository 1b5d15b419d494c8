// linear_fp8 (engine/ops_fp8.h): quantize, block-scaled GEMM, and the same for the backward.
#include "engine/ops_fp8.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1 {
namespace {

// a (M, K) and b (N, K) of one float dtype -> a b^T (M, N) in `out` dtype, both operands
// quantized as the recipe says: a per 1x128 tile, b per 128x128 block.
// a_t: a is given transposed (a_t (K, M)) and quantized from there by
// quantize_fp8_rows_transposed, the same bits as transposing it first. a_q: a's quantization
// already made by its producer (then a is only read for its shape).
Tensor fp8_product(const Tensor& a, const Tensor& b, DType out, bool a_t = false,
                   const Fp8Rows* a_q = nullptr) {
  const Device dev = a.device();
  const int64_t m = a.size(a_t ? 1 : 0), k = a.size(a_t ? 0 : 1), n = b.size(0);
  Fp8Rows aq;
  if (a_q) {
    R1_CHECK(!a_t && a_q->q.shape() == Shape({m, k}) && a_q->q.dtype() == DType::E4M3 &&
                 a_q->scales.shape() == Shape({m, fp8_blocks(k)}) &&
                 a_q->q.device() == dev && a_q->scales.device() == dev,
             "linear_fp8: the given quantized input does not fit x ({}, {})", m, k);
    aq = *a_q;
  } else if (a_t) {
    aq = {Tensor::empty({m, k}, DType::E4M3, dev), Tensor::empty({m, fp8_blocks(k)}, DType::F32, dev)};
    kernels::quantize_fp8_rows_transposed()(dev, a, aq.q, aq.scales);
  } else {
    aq = fp8_quantize_rows(a);
  }
  Tensor bq = Tensor::empty({n, k}, DType::E4M3, dev);
  Tensor bs = Tensor::empty({fp8_blocks(n), fp8_blocks(k)}, DType::F32, dev);
  kernels::quantize_fp8_blocks()(dev, b, bq, bs);
  Tensor d = Tensor::empty({m, n}, out, dev);
  kernels::gemm_fp8_blockscaled()(dev, aq.q, aq.scales, bq, bs, d);
  return d;
}

Tensor transposed(const Tensor& t) { return t.transpose(0, 1).contiguous(); }

// t's values rounded to bf16 (RNE), in t's dtype.
Tensor bf16_round(const Tensor& t) {
  return t.dtype() == DType::BF16 ? t : t.to(DType::BF16).to(t.dtype());
}

// linear_fp8's and linear_bf16's operands: x (..., in) and w (out, in), f32 or bf16, one
// dtype and device.
void check_linear_operands(const char* op, const Tensor& x, const Tensor& w) {
  R1_CHECK(x.defined() && w.defined() && x.dtype() == w.dtype() && x.device() == w.device(),
           "{}: x {} and w {} must share dtype and device", op, x.str(), w.str());
  R1_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, "{}: x {}: f32 or bf16", op,
           x.str());
  R1_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1),
           "{}: x {} and w {} (want x (..., in), w (out, in))", op, shape_str(x.shape()),
           shape_str(w.shape()));
}

}  // namespace

Fp8Rows fp8_quantize_rows(const Tensor& x) {
  R1_CHECK(x.defined() && x.dim() >= 1 && (x.dtype() == DType::F32 || x.dtype() == DType::BF16),
           "fp8_quantize_rows: x {}: f32 or bf16 (..., K)", x.defined() ? x.str() : "undefined");
  const Device dev = x.device();
  const int64_t k = x.size(-1), rows = x.numel() / std::max<int64_t>(k, 1);
  Fp8Rows r{Tensor::empty({rows, k}, DType::E4M3, dev),
            Tensor::empty({rows, fp8_blocks(k)}, DType::F32, dev)};
  kernels::quantize_fp8_rows()(dev, x.detach().contiguous().view({rows, k}), r.q, r.scales);
  return r;
}

Tensor linear_fp8(const Tensor& x, const Tensor& w, const Fp8Rows* x_quantized) {
  R1_NVTX_RANGE("linear_fp8");
  check_linear_operands("linear_fp8", x, w);
  const int64_t in = w.size(1), out_f = w.size(0);
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  const Tensor x2 = x.detach().contiguous().view({rows, in});
  const Tensor w2 = w.detach().contiguous();
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = fp8_product(x2, w2, x.dtype(), false, x_quantized).view(out_shape);
  const bool gx = x.requires_grad(), gw = w.requires_grad();
  const Shape sx = x.shape();
  record("linear_fp8", {x, w}, {&y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor dy = g[0].contiguous().view({rows, out_f});
    Tensor dx, dw;
    if (gx) dx = fp8_product(dy, transposed(w2), dy.dtype()).view(sx);  // dy (w^T)^T = dy w
    if (gw) dw = fp8_product(dy, transposed(x2), dy.dtype(), /*a_t=*/true);  // dy^T (x^T)^T
    return {dx, dw};
  });
  return y;
}

Tensor linear_bf16(const Tensor& x, const Tensor& w) {
  R1_NVTX_RANGE("linear_bf16");
  check_linear_operands("linear_bf16", x, w);
  if (x.dtype() == DType::BF16) return linear(x, w);
  const int64_t in = w.size(1), out_f = w.size(0);
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  const Tensor x2 = bf16_round(x.detach().contiguous().view({rows, in}));
  const Tensor w2 = bf16_round(w.detach().contiguous());
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = bf16_round(linear(x2, w2)).view(out_shape);
  const bool gx = x.requires_grad(), gw = w.requires_grad();
  const Shape sx = x.shape();
  record("linear_bf16", {x, w}, {&y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor dy = bf16_round(g[0].contiguous().view({rows, out_f}));
    Tensor dx, dw;
    if (gx) dx = bf16_round(matmul(dy, w2)).view(sx);                  // dy w
    if (gw) dw = bf16_round(matmul(dy, x2, /*trans_a=*/true));         // dy^T x
    return {dx, dw};
  });
  return y;
}

}  // namespace r1
