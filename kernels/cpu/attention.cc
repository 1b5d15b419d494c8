// CPU: attention forward and backward (contracts in engine/kernels_attention.h), the reference
// backend. f32 or f64, computed in that type. One query row at a time: a (T) row of scores
// per thread, never a (T, T) matrix. OpenMP over rows: forward and dq over (b, h, t) query
// rows, dk/dv over (b, kv head, s) key rows; each output row is owned by one thread and
// summed in a fixed order (keys ascending; query heads of the group, then query rows,
// ascending), so results do not depend on the thread count or on B.
#include <cmath>
#include <limits>
#include <vector>

#include "engine/kernels_attention.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// The operands as raw pointers with the index arithmetic of the contract's layouts.
template <class T>
struct AttnView {
  AttentionShape a;
  const T *q, *k, *v;
  const Tensor* seg;  // undefined: no segments
  double scale;
  bool causal;

  const T* q_row(int64_t b, int64_t t, int64_t h) const {
    return q + ((b * a.T + t) * a.H + h) * a.Dk;
  }
  const T* k_row(int64_t b, int64_t s, int64_t g) const {
    return k + ((b * a.T + s) * a.Hk + g) * a.Dk;
  }
  const T* v_row(int64_t b, int64_t s, int64_t g) const {
    return v + ((b * a.T + s) * a.Hk + g) * a.Dv;
  }
  int64_t seg_at(int64_t b, int64_t t) const {
    return seg->defined() ? index_at(*seg, b * a.T + t) : 0;
  }
  // Key rows t may attend to lie in [0, last(t)); the segment test is on top.
  int64_t last(int64_t t) const { return causal ? t + 1 : a.T; }
  bool same_segment(int64_t b, int64_t t, int64_t s) const {
    return !seg->defined() || seg_at(b, s) == seg_at(b, t);
  }
};

template <class T>
T dot(const T* x, const T* y, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

template <class T>
AttnView<T> view_of(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v,
                    const Tensor& segments, double scale, bool causal) {
  return {a, q.data<T>(), k.data<T>(), v.data<T>(), &segments, scale, causal};
}

bool cpu_float(DType t) { return t == DType::F32 || t == DType::F64; }

// out (B, T, H, Dv), lse (B, H, T): per query row, the scores of the allowed keys, their max
// m, l = sum exp(S - m), out = sum exp(S - m) v / l, lse = m + log l.
void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& segments, double scale, bool causal, Tensor& out,
                           Tensor& lse) {
  const AttentionShape a =
      check_attention("attention_forward", q, k, v, segments, out, lse, cpu_float(q.dtype()));
  dispatch_float(q.dtype(), "attention_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const AttnView<T> w = view_of<T>(a, q, k, v, segments, scale, causal);
    T* po = out.data<T>();
    T* pl = lse.data<T>();
    const int64_t rows = a.B * a.H * a.T, G = a.group();
#pragma omp parallel if (worth_parallel(rows * a.T * (a.Dk + a.Dv)))
    {
      std::vector<T> srow(static_cast<size_t>(a.T));
#pragma omp for schedule(static)
      for (int64_t row = 0; row < rows; ++row) {  // row = (b * H + h) * T + t
        const int64_t t = row % a.T, h = row / a.T % a.H, b = row / a.T / a.H, g = h / G;
        const T* qr = w.q_row(b, t, h);
        T* orow = po + ((b * a.T + t) * a.H + h) * a.Dv;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t s = 0; s < w.last(t); ++s) {
          srow[s] = w.same_segment(b, t, s) ? T(scale) * dot(qr, w.k_row(b, s, g), a.Dk)
                                            : -std::numeric_limits<T>::infinity();
          m = std::max(m, srow[s]);
        }
        for (int64_t d = 0; d < a.Dv; ++d) orow[d] = 0;
        if (m == -std::numeric_limits<T>::infinity()) {  // nothing to attend to
          pl[row] = m;
          continue;
        }
        T l = 0;
        for (int64_t s = 0; s < w.last(t); ++s) {
          if (srow[s] == -std::numeric_limits<T>::infinity()) continue;
          const T p = std::exp(srow[s] - m);
          l += p;
          const T* vr = w.v_row(b, s, g);
          for (int64_t d = 0; d < a.Dv; ++d) orow[d] += p * vr[d];
        }
        const T inv = T(1) / l;
        for (int64_t d = 0; d < a.Dv; ++d) orow[d] *= inv;
        pl[row] = m + std::log(l);
      }
    }
  });
}

void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& segments, const Tensor& out, const Tensor& lse,
                            const Tensor& dout, double scale, bool causal, Tensor& dq, Tensor& dk,
                            Tensor& dv) {
  const char* what = "attention_backward";
  const AttentionShape a = check_attention(what, q, k, v, segments, out, lse, cpu_float(q.dtype()));
  attention_detail::check_tensor(what, "dout", dout, out.shape(), out.dtype(), out.device());
  check_attention_grads(what, q, k, v, dq, dk, dv);
  dispatch_float(q.dtype(), what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const AttnView<T> w = view_of<T>(a, q, k, v, segments, scale, causal);
    const T *po = out.data<T>(), *pl = lse.data<T>(), *pg = dout.data<T>();
    T *pdq = dq.data<T>(), *pdk = dk.data<T>(), *pdv = dv.data<T>();
    const int64_t rows = a.B * a.H * a.T, G = a.group(), Dk = a.Dk, Dv = a.Dv;
    const T ts = T(scale), kNegInf = -std::numeric_limits<T>::infinity();
    const bool par = worth_parallel(rows * a.T * (Dk + Dv));
    auto grad_row = [&](int64_t b, int64_t t, int64_t h) {  // dout[b, t, h, :]
      return pg + ((b * a.T + t) * a.H + h) * Dv;
    };
    // D (B, H, T) = rowsum(dout * out), indexed like lse.
    std::vector<T> Drow(static_cast<size_t>(rows));
#pragma omp parallel for if (par)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t t = row % a.T, h = row / a.T % a.H, b = row / a.T / a.H;
      Drow[row] = dot(grad_row(b, t, h), po + ((b * a.T + t) * a.H + h) * Dv, Dv);
    }
    // dq: per query row, dS over its allowed keys (ascending), dq = scale sum_s dS k[s].
#pragma omp parallel for if (par)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t t = row % a.T, h = row / a.T % a.H, b = row / a.T / a.H, g = h / G;
      T* dqr = pdq + ((b * a.T + t) * a.H + h) * Dk;
      for (int64_t d = 0; d < Dk; ++d) dqr[d] = 0;
      if (pl[row] == kNegInf) continue;  // an empty row: P = 0
      const T* qr = w.q_row(b, t, h);
      const T* gr = grad_row(b, t, h);
      for (int64_t s = 0; s < w.last(t); ++s) {
        if (!w.same_segment(b, t, s)) continue;
        const T* kr = w.k_row(b, s, g);
        const T p = std::exp(ts * dot(qr, kr, Dk) - pl[row]);
        const T ds = p * (dot(gr, w.v_row(b, s, g), Dv) - Drow[row]);
        for (int64_t d = 0; d < Dk; ++d) dqr[d] += ds * kr[d];
      }
      for (int64_t d = 0; d < Dk; ++d) dqr[d] *= ts;
    }
    // dk, dv: per key row s of kv head g, over the group's query heads h ascending and the
    // query rows t that see s, ascending.
    const int64_t krows = a.B * a.Hk * a.T;
#pragma omp parallel for if (par)
    for (int64_t kr_i = 0; kr_i < krows; ++kr_i) {  // kr_i = (b * T + s) * Hk + g
      const int64_t g = kr_i % a.Hk, s = kr_i / a.Hk % a.T, b = kr_i / a.Hk / a.T;
      T* dkr = pdk + kr_i * Dk;
      T* dvr = pdv + kr_i * Dv;
      for (int64_t d = 0; d < Dk; ++d) dkr[d] = 0;
      for (int64_t d = 0; d < Dv; ++d) dvr[d] = 0;
      const T* kr = w.k_row(b, s, g);
      const T* vr = w.v_row(b, s, g);
      for (int64_t h = g * G; h < (g + 1) * G; ++h)
        for (int64_t t = causal ? s : 0; t < a.T; ++t) {
          const int64_t row = (b * a.H + h) * a.T + t;
          if (pl[row] == kNegInf || !w.same_segment(b, t, s)) continue;
          const T* qr = w.q_row(b, t, h);
          const T* gr = grad_row(b, t, h);
          const T p = std::exp(ts * dot(qr, kr, Dk) - pl[row]);
          const T ds = p * (dot(gr, vr, Dv) - Drow[row]);
          for (int64_t d = 0; d < Dv; ++d) dvr[d] += p * gr[d];
          for (int64_t d = 0; d < Dk; ++d) dkr[d] += ds * qr[d];
        }
      for (int64_t d = 0; d < Dk; ++d) dkr[d] *= ts;
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(attention_forward, CPU, attention_forward_cpu);
R1_REGISTER_KERNEL(attention_backward, CPU, attention_backward_cpu);

}  // namespace r1::cpu
