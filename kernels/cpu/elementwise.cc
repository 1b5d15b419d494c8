// CPU: broadcasting binary ops, reductions over (outer, R, inner), sum of squares.
#include <cmath>
#include <limits>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

template <class T>
inline T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

// out (shape S, contiguous) = a op b with a, b views of S whose strides are contiguous or 0.
void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  R1_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "binary: dtypes {} {} -> {}",
           dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(out.dtype()));
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    T* po = out.data<T>();
    const int64_t n = out.numel();
    if (n == 0) return;
    if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (worth_parallel(n))
      for (int64_t i = 0; i < n; ++i) po[i] = apply(op, pa[i], pb[i]);
      return;
    }
    const Shape& s = out.shape();
    const int64_t nd = out.dim();
    const int64_t inner = s[nd - 1];
    const int64_t sa = a.strides()[nd - 1], sb = b.strides()[nd - 1];
    const int64_t rows = n / inner;
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t r = 0; r < rows; ++r) {
      int64_t rem = r, oa = 0, ob = 0;
      for (int64_t d = nd - 2; d >= 0; --d) {
        const int64_t idx = rem % s[d];
        rem /= s[d];
        oa += idx * a.strides()[d];
        ob += idx * b.strides()[d];
      }
      T* o = po + r * inner;
      for (int64_t i = 0; i < inner; ++i) o[i] = apply(op, pa[oa + i * sa], pb[ob + i * sb]);
    }
  });
}

// x (outer, R, inner) -> out (outer, inner). Sums accumulate in double.
void reduce_cpu(ReduceOp op, const Tensor& x, Tensor& out, Tensor& argmax) {
  R1_CHECK(x.dim() == 3 && out.numel() == x.size(0) * x.size(2), "reduce: {} -> {}", x.str(),
           out.str());
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t outer = x.size(0), R = x.size(1), inner = x.size(2);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    int64_t* pi = op == ReduceOp::Max ? argmax.data<int64_t>() : nullptr;
    R1_CHECK(op != ReduceOp::Max || R > 0, "max over an empty dim");
#pragma omp parallel for if (worth_parallel(outer * R * inner))
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t j = 0; j < inner; ++j) {
        const T* p = px + o * R * inner + j;
        if (op == ReduceOp::Sum) {
          double acc = 0;
          for (int64_t r = 0; r < R; ++r) acc += p[r * inner];
          po[o * inner + j] = static_cast<T>(acc);
        } else {
          T best = p[0];
          int64_t bi = 0;
          for (int64_t r = 1; r < R; ++r) {
            const T v = p[r * inner];
            if (v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              bi = r;
            }
          }
          po[o * inner + j] = best;
          pi[o * inner + j] = bi;
        }
      }
    }
  });
}

double sum_squares_cpu(const Tensor& x) {
  return dispatch_float(x.dtype(), "sum_squares", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0;
#pragma omp parallel for reduction(+ : acc) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
    return acc;
  });
}

}  // namespace

R1_REGISTER_KERNEL(binary, CPU, binary_cpu);
R1_REGISTER_KERNEL(reduce, CPU, reduce_cpu);
R1_REGISTER_KERNEL(sum_squares, CPU, sum_squares_cpu);

}  // namespace r1::cpu
