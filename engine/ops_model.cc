// Model ops with hand-written backward: embedding, rmsnorm, rope, swiglu, softmax,
// log_softmax, cross_entropy. Each checks its inputs, flattens leading dims into rows, calls
// the device kernel (engine/kernels.h) and records one tape node saving only what its
// backward needs.
#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"

namespace r1 {
namespace {

// The kernel's view of an input: contiguous, with no autograd history (not recorded).
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }

void check_float(const char* op, const Tensor& t) {
  R1_CHECK(t.defined() && dtype_is_floating(t.dtype()), "{}: expected a float tensor, got {}",
           op, t.str());
}
void check_int(const char* op, const Tensor& t) {
  R1_CHECK(t.defined() && (t.dtype() == DType::I32 || t.dtype() == DType::I64),
           "{}: expected an i32 or i64 index tensor, got {}", op, t.str());
}
void check_same(const char* op, const Tensor& a, const Tensor& b) {
  R1_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), "{}: {} and {} differ in dtype "
           "or device", op, a.str(), b.str());
}

int64_t rows_of(const Tensor& x) { return x.dim() == 0 ? 1 : x.numel() / x.size(-1); }

}  // namespace

// ids (...) int, table (V, D) -> (..., D). Saves ids; backward scatters into a (V, D) zero grad.
Tensor embedding(const Tensor& ids, const Tensor& table) {
  check_int("embedding", ids);
  check_float("embedding", table);
  R1_CHECK(table.dim() == 2, "embedding: table {} must be (V, D)", shape_str(table.shape()));
  R1_CHECK(ids.device() == table.device(), "embedding: ids {} and table {} on different devices",
           ids.str(), table.str());
  const int64_t N = ids.numel(), V = table.size(0), D = table.size(1);
  const Tensor ids_c = plain(ids).view({N});
  Tensor out = Tensor::empty({N, D}, table.dtype(), table.device());
  kernels::embedding_forward()(table.device(), ids_c, plain(table), out);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  out = out.view(out_shape);
  record("embedding", {table}, {&out},
         [ids_c, N, V, D](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dtable = Tensor::zeros({V, D}, g[0].dtype(), g[0].device());
           kernels::embedding_backward()(dtable.device(), ids_c, g[0].contiguous().view({N, D}),
                                         dtable);
           return {dtable};
         });
  return out;
}

// x (..., D), w (D) -> (..., D). Saves x, w and rstd (N).
Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps, Fp8Rows* quantized) {
  check_float("rmsnorm", x);
  check_same("rmsnorm", x, w);
  R1_CHECK(x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1),
           "rmsnorm: x {} and w {}: w must be (D) with D = x's last dim", shape_str(x.shape()),
           shape_str(w.shape()));
  R1_CHECK(eps >= 0, "rmsnorm: eps {} < 0", eps);
  const int64_t N = rows_of(x), D = x.size(-1);
  const Tensor x2 = plain(x).view({N, D}), wc = plain(w);
  Tensor y = Tensor::empty({N, D}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({N}, stat_dtype(x.dtype()), x.device());
  if (quantized) {
    R1_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16,
             "rmsnorm: FP8 output needs f32 or bf16, got {}", x.str());
    quantized->q = Tensor::empty({N, D}, DType::E4M3, x.device());
    quantized->scales = Tensor::empty({N, fp8_blocks(D)}, DType::F32, x.device());
    kernels::rmsnorm_quantize_fp8()(x.device(), x2, wc, eps, y, rstd, quantized->q,
                                    quantized->scales);
  } else {
    kernels::rmsnorm_forward()(x.device(), x2, wc, eps, y, rstd);
  }
  y = y.view(x.shape());
  const Shape xs = x.shape();
  record("rmsnorm", {x, w}, {&y},
         [x2, wc, rstd, xs](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dx = Tensor::empty(x2.shape(), x2.dtype(), x2.device());
           Tensor dw = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
           kernels::rmsnorm_backward()(x2.device(), x2, wc, rstd,
                                       g[0].contiguous().view(x2.shape()), dx, dw);
           return {dx.view(xs), dw};
         });
  return y;
}

namespace {
// positions (T) or (B, T) int for x (B, T, ...) on x's device -> a contiguous (B, T).
Tensor positions_bt(const char* op, const Tensor& positions, const Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1);
  R1_CHECK((positions.dim() == 1 && positions.size(0) == T) ||
               (positions.dim() == 2 && positions.size(0) == B && positions.size(1) == T),
           "{}: positions {} for {}: expected (T) or (B, T)", op, shape_str(positions.shape()),
           shape_str(x.shape()));
  R1_CHECK(positions.device() == x.device(), "{}: positions {} and {} on different devices", op,
           positions.str(), x.str());
  return positions.dim() == 2 ? plain(positions)
                              : plain(positions).view({1, T}).expand({B, T}).contiguous();
}
}  // namespace

// x (B, T, H, D) with D == table.config.dim, positions (B, T) or (T) int -> (B, T, H, D).
// Saves positions; backward is the inverse rotation of the incoming grad.
Tensor rope(const Tensor& x, const Tensor& positions, const RopeTable& table) {
  check_float("rope", x);
  check_int("rope", positions);
  R1_CHECK(table.cos.defined(), "rope: the RopeTable is empty (default-constructed)");
  check_same("rope", x, table.cos);
  const bool il = table.config.interleaved;
  R1_CHECK(x.dim() == 4 && x.size(3) == table.config.dim && x.size(3) % 2 == 0,
           "rope: x {} must be (B, T, H, D) with D = the table's dim {} (even)",
           shape_str(x.shape()), table.config.dim);
  const Tensor pos = positions_bt("rope", positions, x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::rope()(x.device(), plain(x), pos, table.cos, table.sin, il, false, y);
  const Tensor cos = table.cos, sin = table.sin;
  record("rope", {x}, {&y},
         [pos, cos, sin, il](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dx = Tensor::empty(g[0].shape(), g[0].dtype(), g[0].device());
           kernels::rope()(dx.device(), g[0].contiguous(), pos, cos, sin, il, true, dx);
           return {dx};
         });
  return y;
}

std::vector<Tensor> mla_qkv(const Tensor& q, const Tensor& kv, const Tensor& k_rope,
                            const Tensor& positions, const RopeTable& table) {
  check_float("mla_qkv", q);
  check_same("mla_qkv", q, kv);
  check_same("mla_qkv", q, k_rope);
  check_int("mla_qkv", positions);
  R1_CHECK(table.cos.defined(), "mla_qkv: the RopeTable is empty (default-constructed)");
  check_same("mla_qkv", q, table.cos);
  const int64_t r = table.config.dim;
  R1_CHECK(q.dim() == 4 && kv.dim() == 4 && k_rope.dim() == 3 && k_rope.size(2) == r &&
               q.size(3) > r && kv.size(3) > q.size(3) - r && q.size(0) == kv.size(0) &&
               q.size(1) == kv.size(1) && q.size(2) == kv.size(2) &&
               k_rope.size(0) == q.size(0) && k_rope.size(1) == q.size(1),
           "mla_qkv: q {}, kv {}, k_rope {}: expected (B, T, H, n + r), (B, T, H, n + v), (B, T, r) "
           "with r = the table's dim {}",
           shape_str(q.shape()), shape_str(kv.shape()), shape_str(k_rope.shape()), r);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), n = q.size(3) - r, vd = kv.size(3) - n;
  const Tensor pos = positions_bt("mla_qkv", positions, q);
  const Device dev = q.device();
  Tensor qo = Tensor::empty(q.shape(), q.dtype(), dev);
  Tensor ko = Tensor::empty(q.shape(), q.dtype(), dev);
  Tensor vo = Tensor::empty({B, T, H, vd}, q.dtype(), dev);
  kernels::mla_qkv_forward()(dev, plain(q), plain(kv), plain(k_rope), pos, table.cos, table.sin,
                             table.config.interleaved, qo, ko, vo);
  const Tensor cos = table.cos, sin = table.sin;
  const bool il = table.config.interleaved;
  const Shape kv_shape = kv.shape();
  record("mla_qkv", {q, kv, k_rope}, {&qo, &ko, &vo},
         [pos, cos, sin, il, kv_shape, r](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor dqo = g[0].contiguous(), dko = g[1].contiguous(), dvo = g[2].contiguous();
           const Device dev = dqo.device();
           Tensor dq = Tensor::empty(dqo.shape(), dqo.dtype(), dev);
           Tensor dkv = Tensor::empty(kv_shape, dqo.dtype(), dev);
           Tensor dkr = Tensor::empty({dqo.size(0), dqo.size(1), r}, dqo.dtype(), dev);
           kernels::mla_qkv_backward()(dev, dqo, dko, dvo, pos, cos, sin, il, dq, dkv, dkr);
           return {dq, dkv, dkr};
         });
  return {qo, ko, vo};
}

// gate, up (..., F) -> silu(gate) * up. Saves gate and up.
Tensor swiglu(const Tensor& gate, const Tensor& up, Fp8Rows* quantized) {
  check_float("swiglu", gate);
  check_same("swiglu", gate, up);
  R1_CHECK(gate.shape() == up.shape(), "swiglu: gate {} and up {} differ in shape",
           shape_str(gate.shape()), shape_str(up.shape()));
  const Tensor gc = plain(gate), uc = plain(up);
  Tensor out = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  if (quantized) {
    R1_CHECK(gate.dim() >= 1 && (gate.dtype() == DType::F32 || gate.dtype() == DType::BF16),
             "swiglu: FP8 output needs f32 or bf16 (..., F), got {}", gate.str());
    const int64_t F = gate.size(-1), M = gate.numel() / std::max<int64_t>(F, 1);
    const Device dev = gate.device();
    quantized->q = Tensor::empty({M, F}, DType::E4M3, dev);
    quantized->scales = Tensor::empty({M, fp8_blocks(F)}, DType::F32, dev);
    Tensor o2 = out.view({M, F});
    kernels::swiglu_quantize_fp8()(dev, gc.view({M, F}), uc.view({M, F}), o2, quantized->q,
                                   quantized->scales);
  } else {
    kernels::swiglu_forward()(gate.device(), gc, uc, out);
  }
  record("swiglu", {gate, up}, {&out},
         [gc, uc](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dg = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
           Tensor du = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
           kernels::swiglu_backward()(gc.device(), gc, uc, g[0].contiguous(), dg, du);
           return {dg, du};
         });
  return out;
}

namespace {

// x (..., V) -> (..., V) over the last dim. Saves the output only.
Tensor softmax_impl(const Tensor& x, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float(op, x);
  R1_CHECK(x.dim() >= 1, "{}: x {} needs at least one dim", op, shape_str(x.shape()));
  const int64_t N = rows_of(x), V = x.size(-1);
  Tensor y = Tensor::empty({N, V}, x.dtype(), x.device());
  kernels::softmax_forward()(x.device(), plain(x).view({N, V}), log, y);
  const Tensor saved = y;  // captured before record gives y its autograd handle
  y = y.view(x.shape());
  const Shape xs = x.shape();
  record(op, {x}, {&y}, [saved, log, xs](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(saved.shape(), saved.dtype(), saved.device());
    kernels::softmax_backward()(dx.device(), saved, g[0].contiguous().view(saved.shape()), log,
                                dx);
    return {dx.view(xs)};
  });
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl(x, true); }

// logits (N, V), targets (N) int -> () mean of lse - logit[target] over non-ignored rows.
// Saves logits (the input itself, no copy), targets and lse (N). With every row ignored the
// loss is 0 with zero gradient (PyTorch gives NaN): a micro-batch with no labelled token
// then contributes nothing instead of poisoning the step.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_float("cross_entropy", logits);
  check_int("cross_entropy", targets);
  R1_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
           "cross_entropy: logits {} and targets {}: expected (N, V) and (N)",
           shape_str(logits.shape()), shape_str(targets.shape()));
  R1_CHECK(targets.device() == logits.device(), "cross_entropy: targets {} and logits {} on "
           "different devices", targets.str(), logits.str());
  const int64_t N = logits.size(0);
  const Device dev = logits.device();
  const Tensor lc = plain(logits), tc = plain(targets);
  int64_t count = 0;  // host readback of N ints: the mean's denominator
  for (int64_t t : tc.to_int_vector()) count += t != ignore_index;
  const double inv_count = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;

  // The loss and its statistics are f32 even for bf16 logits (stat_dtype).
  const DType sd = stat_dtype(logits.dtype());
  Tensor loss = Tensor::empty({N}, sd, dev);
  Tensor lse = Tensor::empty({N}, sd, dev);
  kernels::cross_entropy_forward()(dev, lc, tc, ignore_index, loss, lse);
  Tensor total = Tensor::empty({1, 1}, sd, dev), no_argmax;
  kernels::reduce()(dev, ReduceOp::Sum, loss.view({1, N, 1}), total, no_argmax);
  Tensor out = Tensor::empty({1, 1}, sd, dev);
  kernels::affine()(dev, total, inv_count, 0.0, out);
  out = out.view({});
  record("cross_entropy", {logits}, {&out},
         [lc, tc, lse, N, inv_count, ignore_index](
             const std::vector<Tensor>& g) -> std::vector<Tensor> {
           // dloss[n] = g / count for every row, formed on the device (no readback of g).
           Tensor dloss = g[0].reshape({1}).expand({N}).contiguous();
           if (N == 1) dloss = dloss.clone();  // a (1) grad may alias g: never scale it in place
           kernels::affine()(dloss.device(), dloss, inv_count, 0.0, dloss);
           Tensor dlogits = Tensor::empty(lc.shape(), lc.dtype(), lc.device());
           kernels::cross_entropy_backward()(lc.device(), lc, tc, lse, dloss, ignore_index,
                                             dlogits);
           return {dlogits};
         });
  return out;
}

}  // namespace r1
