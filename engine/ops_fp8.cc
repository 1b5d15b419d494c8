// linear_fp8 (engine/ops_fp8.h): quantize, block-scaled GEMM, and the same for the backward.
#include "engine/ops_fp8.h"

#include <algorithm>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/ops_moe.h"

namespace r1 {
namespace {

Fp8Blocks quantize_blocks(const Tensor& b) {
  const Device dev = b.device();
  const int64_t n = b.size(0), k = b.size(1);
  Fp8Blocks r{Tensor::empty({n, k}, DType::E4M3, dev),
              Tensor::empty({fp8_blocks(n), fp8_blocks(k)}, DType::F32, dev)};
  kernels::quantize_fp8_blocks()(dev, b, r.q, r.scales);
  return r;
}

// t (K, M) f32/bf16 -> the 1x128 row quantization of t^T (M, K), read in place
// (quantize_fp8_rows_transposed: the same bits as transposing first). wgrad's operands: K is
// the tokens, any count (an expert's share of a batch), while the tensor-core GEMMs take K in
// multiples of 16 (16-byte rows); so q's rows are padded with zero codes to the next multiple
// of 16 when K is not one. The product is unchanged (zero terms; the scales' tiles are the
// same: 128 is a multiple of 16) and runs on tensor cores instead of the simple kernel.
Fp8Rows quantize_rows_of_transpose(const Tensor& t) {
  const Device dev = t.device();
  const int64_t m = t.size(1), k = t.size(0), k16 = (k + 15) / 16 * 16;
  Fp8Rows r{Tensor::empty({m, k}, DType::E4M3, dev),
            Tensor::empty({m, fp8_blocks(k)}, DType::F32, dev)};
  kernels::quantize_fp8_rows_transposed()(dev, t, r.q, r.scales);
  if (k16 != k && m > 0) {
    Tensor padded = Tensor::zeros({m, k16}, DType::E4M3, dev);
    padded.narrow(1, 0, k).copy_(r.q);
    r.q = padded;
  }
  return r;
}

// The quantization of b^T from b's (blocks of 128x128 are the same sets of elements in b and
// in b^T, so their amax, scales and codes are too): the same bits as quantize_blocks(b^T).
Fp8Blocks transposed_blocks(const Fp8Blocks& b) {
  return {b.q.transpose(0, 1).contiguous(), b.scales.transpose(0, 1).contiguous()};
}

// a (M, K) quantized per 1x128 tile times b (N, K) quantized per 128x128 block (or, with
// Fp8Rows, per 1x128 tile: 1D1D) -> a b^T (M, N) in `out` dtype.
Tensor fp8_gemm(const Fp8Rows& a, const Tensor& b_q, const Tensor& b_scales, DType out) {
  Tensor d = Tensor::empty({a.q.size(0), b_q.size(0)}, out, a.q.device());
  kernels::gemm_fp8_blockscaled()(a.q.device(), a.q, a.scales, b_q, b_scales, d);
  return d;
}

// A producer's quantization of x (M, K), checked against x's shape.
const Fp8Rows& checked_input(const Fp8Rows& q, int64_t m, int64_t k, Device dev) {
  R1_CHECK(q.q.shape() == Shape({m, k}) && q.q.dtype() == DType::E4M3 &&
               q.scales.shape() == Shape({m, fp8_blocks(k)}) && q.q.device() == dev &&
               q.scales.device() == dev,
           "linear_fp8: the given quantized input does not fit x ({}, {})", m, k);
  return q;
}

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

namespace {

// (n) i64 on dev: i / 128 for i in 0..n-1 (which tile of 128 an index falls in).
Tensor tile_of(int64_t n, Device dev) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i / kFp8Block;
  return Tensor::from_vector(v, {n}, DType::I64, dev);
}

}  // namespace

// Views and broadcasts only (no index tensor to upload): safe inside a CUDA graph capture.
Tensor fp8_dequantize_rows(const Fp8Rows& q, DType dt) {
  R1_CHECK(q.q.dim() == 2 && q.q.dtype() == DType::E4M3 && q.scales.dtype() == DType::F32 &&
               q.scales.shape() == Shape({q.q.size(0), fp8_blocks(q.q.size(1))}),
           "fp8_dequantize_rows: q {} and scales {} are not a 1x128 quantization",
           q.q.str(), q.scales.str());
  const int64_t m = q.q.size(0), k = q.q.size(1), full = k / kFp8Block, tail = k - full * kFp8Block;
  if (m == 0 || k == 0) return Tensor::zeros({m, k}, dt, q.q.device());
  const Tensor v = q.q.to(DType::F32);
  std::vector<Tensor> parts;
  if (full > 0)
    parts.push_back(mul(v.narrow(1, 0, full * kFp8Block).reshape({m, full, kFp8Block}),
                        q.scales.narrow(1, 0, full).reshape({m, full, 1}))
                        .reshape({m, full * kFp8Block}));
  if (tail > 0)
    parts.push_back(mul(v.narrow(1, full * kFp8Block, tail), q.scales.narrow(1, full, 1)));
  const Tensor out = parts.size() == 1 ? parts[0] : concat(parts, 1);
  return out.to(dt);
}

Tensor fp8_dequantize_blocks(const Tensor& q, const Tensor& scales, DType dt) {
  R1_CHECK(q.dim() == 2 && q.dtype() == DType::E4M3 && scales.dtype() == DType::F32 &&
               scales.shape() == Shape({fp8_blocks(q.size(0)), fp8_blocks(q.size(1))}),
           "fp8_dequantize_blocks: q {} and scales {} are not a 128x128 quantization", q.str(),
           scales.str());
  const Device dev = q.device();
  const Tensor s = index_select(index_select(scales, 0, tile_of(q.size(0), dev)), 1,
                                tile_of(q.size(1), dev));
  return mul(q.to(DType::F32), s).to(dt);
}

Tensor fp8_weight_as_used(const Tensor& w) {
  R1_CHECK(w.defined() && w.dim() == 2 && (w.dtype() == DType::F32 || w.dtype() == DType::BF16),
           "fp8_weight_as_used: w {} must be (N, K) f32 or bf16", w.defined() ? w.str() : "undefined");
  const Fp8Blocks b = quantize_blocks(w.detach().contiguous());
  return fp8_dequantize_blocks(b.q, b.scales, w.dtype());
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
  const Fp8Blocks wq = quantize_blocks(w2);
  const Fp8Rows xq = x_quantized ? checked_input(*x_quantized, rows, in, x.device())
                                 : fp8_quantize_rows(x2);
  Tensor y = fp8_gemm(xq, wq.q, wq.scales, x.dtype()).view(out_shape);
  const bool gx = x.requires_grad(), gw = w.requires_grad();
  const Shape sx = x.shape();
  // The backward keeps fprop's e4m3 weight (1 byte per weight) rather than w2 for dgrad.
  const Fp8Blocks wq_saved = gx ? wq : Fp8Blocks{};
  record("linear_fp8", {x, w}, {&y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor dy = g[0].contiguous().view({rows, out_f});
    Tensor dx, dw;
    if (gx) {  // dx = dy w = dy (w^T)^T: dy per 1x128 tile, w^T per 128x128 block
      const Fp8Blocks wt = transposed_blocks(wq_saved);
      dx = fp8_gemm(fp8_quantize_rows(dy), wt.q, wt.scales, dy.dtype()).view(sx);
    }
    if (gw) {  // dw = dy^T x = dy^T (x^T)^T: both 1x128 tiles along the tokens (1D1D)
      const Fp8Rows xt = quantize_rows_of_transpose(x2);
      dw = fp8_gemm(quantize_rows_of_transpose(dy), xt.q, xt.scales, dy.dtype());
    }
    return {dx, dw};
  });
  return y;
}

Fp8Blocks fp8_quantize_weight_stack(const std::vector<Tensor>& ws) {
  R1_CHECK(!ws.empty(), "fp8_quantize_weight_stack: no weights");
  const Device dev = ws[0].device();
  const int64_t g = static_cast<int64_t>(ws.size()), n = ws[0].size(0), k = ws[0].size(1);
  Fp8Blocks r{Tensor::empty({g, n, k}, DType::E4M3, dev),
              Tensor::empty({g, fp8_blocks(n), fp8_blocks(k)}, DType::F32, dev)};
  for (int64_t e = 0; e < g; ++e) {
    Tensor q = r.q.select(0, e), s = r.scales.select(0, e);
    kernels::quantize_fp8_blocks()(dev, ws[static_cast<size_t>(e)].detach().contiguous(), q, s);
  }
  return r;
}

namespace {

// d (M, N) = the grouped product of a (M, K, 1x128 tiles) with the stack b (G, N, K): one
// grouped launch (offsets_dev) where the backend prefers it, else a dense GEMM per non-empty
// group on row slices (the same tile code per row on every backend's pair of kernels).
Tensor grouped_fp8_gemm(const Fp8Rows& a, const Fp8Blocks& b, const std::vector<int64_t>& offsets,
                        const Tensor& offsets_dev, DType out) {
  const Device dev = a.q.device();
  const int64_t m = a.q.size(0), n = b.q.size(1);
  Tensor d = Tensor::empty({m, n}, out, dev);
  if (kernels::gemm_fp8_grouped_preferred()(dev)) {
    kernels::gemm_fp8_grouped_contiguous()(dev, a.q, a.scales, b.q, b.scales, offsets_dev, d);
    return d;
  }
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    Tensor de = d.narrow(0, r0, rows);
    kernels::gemm_fp8_blockscaled()(dev, a.q.narrow(0, r0, rows), a.scales.narrow(0, r0, rows),
                                    b.q.select(0, static_cast<int64_t>(e)),
                                    b.scales.select(0, static_cast<int64_t>(e)), de);
  }
  return d;
}

// Every group's weight gradient dy_g^T x_g in one k-grouped GEMM (gemm_fp8_kgrouped): the
// rows of dy (M, N) and x (M, K) placed in a token layout where each group's segment starts
// at a multiple of 128 (zero rows between), quantized along the tokens once for all groups
// (the padding adds zeros to no tile's amax and zero terms to the sums), -> G tensors (N, K).
// Per group the same codes, scales and exact block sums as the per-group GEMM.
std::vector<Tensor> grouped_wgrad(const Tensor& dy, const Tensor& x,
                                  const std::vector<int64_t>& offsets) {
  const Device dev = dy.device();
  const int64_t m = dy.size(0), g = static_cast<int64_t>(offsets.size()) - 1;
  std::vector<int64_t> koff{0}, dest(static_cast<size_t>(m));
  for (int64_t e = 0; e < g; ++e) {
    const int64_t r0 = offsets[static_cast<size_t>(e)];
    const int64_t rows = offsets[static_cast<size_t>(e) + 1] - r0;
    for (int64_t j = 0; j < rows; ++j) dest[static_cast<size_t>(r0 + j)] = koff.back() + j;
    koff.push_back(koff.back() + (rows + kFp8Block - 1) / kFp8Block * kFp8Block);
  }
  const int64_t kt = koff.back();
  const Tensor to = Tensor::from_vector(dest, {m}, DType::I64, dev);
  const Fp8Rows dyt = quantize_rows_of_transpose(moe_scatter_rows(dy, to, kt));  // (N, Kt)
  const Fp8Rows xt = quantize_rows_of_transpose(moe_scatter_rows(x, to, kt));    // (K, Kt)
  Tensor dw = Tensor::empty({g, dy.size(1), x.size(1)}, dy.dtype(), dev);
  kernels::gemm_fp8_kgrouped()(dev, dyt.q, dyt.scales, xt.q, xt.scales,
                               Tensor::from_vector(koff, {g + 1}, DType::I64, dev), dw);
  std::vector<Tensor> out;
  for (int64_t e = 0; e < g; ++e) out.push_back(dw.select(0, e));
  return out;
}

}  // namespace

Tensor grouped_linear_fp8(const Tensor& x, const std::vector<Tensor>& ws,
                          const std::vector<int64_t>& offsets, const Fp8Rows* x_quantized) {
  R1_NVTX_RANGE("grouped_linear_fp8");
  R1_CHECK(!ws.empty() && offsets.size() == ws.size() + 1,
           "grouped_linear_fp8: {} weights need {} offsets, got {}", ws.size(), ws.size() + 1,
           offsets.size());
  R1_CHECK(x.defined() && x.dim() == 2, "grouped_linear_fp8: x {} must be (M, K)",
           x.defined() ? x.str() : "undefined");
  for (const Tensor& w : ws) {
    check_linear_operands("grouped_linear_fp8", x, w);
    R1_CHECK(w.shape() == ws[0].shape(), "grouped_linear_fp8: weights {} and {} differ",
             shape_str(ws[0].shape()), shape_str(w.shape()));
  }
  const int64_t m = x.size(0), in = x.size(1);
  R1_CHECK(offsets.front() == 0 && offsets.back() == m &&
               std::is_sorted(offsets.begin(), offsets.end()),
           "grouped_linear_fp8: offsets must rise from 0 to M = {}", m);
  const Device dev = x.device();
  const Tensor x2 = x.detach().contiguous();
  const Fp8Blocks wq = fp8_quantize_weight_stack(ws);
  const Fp8Rows xq = x_quantized ? checked_input(*x_quantized, m, in, dev) : fp8_quantize_rows(x2);
  const Tensor off = Tensor::from_vector(offsets, {static_cast<int64_t>(offsets.size())},
                                         DType::I64, dev);
  Tensor y = grouped_fp8_gemm(xq, wq, offsets, off, x.dtype());
  std::vector<Tensor> inputs{x};
  inputs.insert(inputs.end(), ws.begin(), ws.end());
  const bool gx = x.requires_grad();
  std::vector<bool> gw;
  for (const Tensor& w : ws) gw.push_back(w.requires_grad());
  const Fp8Blocks wq_saved = gx ? wq : Fp8Blocks{};
  record("grouped_linear_fp8", inputs, {&y},
         [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor dy = g[0].contiguous();
           std::vector<Tensor> grads(gw.size() + 1);
           if (gx) {  // dx = dy w_g per group: w_g^T's blocks are fprop's, transposed
             const Fp8Blocks wt{wq_saved.q.transpose(1, 2).contiguous(),
                                wq_saved.scales.transpose(1, 2).contiguous()};
             grads[0] = grouped_fp8_gemm(fp8_quantize_rows(dy), wt, offsets, off, dy.dtype());
           }
           // dw_g = dy_g^T x_g (1D1D per group): one k-grouped GEMM where the backend
           // prefers grouped launches, else one GEMM per group.
           if (std::find(gw.begin(), gw.end(), true) == gw.end()) return grads;
           if (kernels::gemm_fp8_grouped_preferred()(dev)) {
             const std::vector<Tensor> dws = grouped_wgrad(dy, x2, offsets);
             for (size_t e = 0; e < gw.size(); ++e)
               if (gw[e] && offsets[e + 1] > offsets[e]) grads[e + 1] = dws[e];
             return grads;
           }
           for (size_t e = 0; e < gw.size(); ++e) {
             const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
             if (!gw[e] || rows == 0) continue;
             const Fp8Rows xt = quantize_rows_of_transpose(x2.narrow(0, r0, rows));
             grads[e + 1] = fp8_gemm(quantize_rows_of_transpose(dy.narrow(0, r0, rows)), xt.q,
                                     xt.scales, dy.dtype());
           }
           return grads;
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
