// CPU: broadcasting binary ops, reductions over (outer, R, inner), sum of squares.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// out[i] = f(a[i * sa], b[i * sb]), i < n. `omp simd`: out may be a (the autograd's in-place
// accumulation), which an aliasing check would send to the scalar loop; every element is
// read before it is written, in its own lane. Vector lanes give each element the same single
// IEEE operation as the scalar loop, so the bits are the same.
template <class T, class F>
inline void map_row(const T* pa, int64_t sa, const T* pb, int64_t sb, T* po, int64_t n, F f) {
  if (sa == 1 && sb == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
  }
}

// out (shape S, contiguous) = a op b with a, b views of S whose strides are contiguous or 0.
template <class T, class F>
void binary_map(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* po = out.data<T>();
  const int64_t n = out.numel();
  if (n == 0) return;
  if (a.is_contiguous() && b.is_contiguous()) {
    constexpr int64_t kSlice = 1 << 14;  // elements per OpenMP task
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; i += kSlice)
      map_row(pa + i, 1, pb + i, 1, po + i, std::min(kSlice, n - i), f);
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
    map_row(pa + oa, sa, pb + ob, sb, po + r * inner, inner, f);
  }
}

void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  R1_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "binary: dtypes {} {} -> {}",
           dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(out.dtype()));
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case BinaryOp::Add: return binary_map<T>(a, b, out, [](T x, T y) { return x + y; });
      case BinaryOp::Sub: return binary_map<T>(a, b, out, [](T x, T y) { return x - y; });
      case BinaryOp::Mul: return binary_map<T>(a, b, out, [](T x, T y) { return x * y; });
      case BinaryOp::Div: return binary_map<T>(a, b, out, [](T x, T y) { return x / y; });
    }
  });
}

// Sums of x (outer, R, inner) over R for outer rows [o0, o1), each element one double chain
// over r ascending. inner == 1: several rows' chains interleaved; else r outer, the inner
// elements' chains side by side in acc (a contiguous walk of x that the compiler vectorizes):
// the same additions in the same order as one element at a time.
template <class T>
void sum_rows(const T* px, int64_t o0, int64_t o1, int64_t R, int64_t inner, T* po,
              std::vector<double>& acc) {
  if (inner == 1) {
    constexpr int64_t kRows = 8;
    for (int64_t o = o0; o < o1; o += kRows) {
      const int64_t nr = std::min(kRows, o1 - o);
      double a[kRows] = {};
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < nr; ++k) a[k] += px[(o + k) * R + r];
      for (int64_t k = 0; k < nr; ++k) po[o + k] = static_cast<T>(a[k]);
    }
    return;
  }
  acc.resize(static_cast<size_t>(inner));
  for (int64_t o = o0; o < o1; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const T* p = px + o * R * inner;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < inner; ++j) acc[j] += p[r * inner + j];
    for (int64_t j = 0; j < inner; ++j) po[o * inner + j] = static_cast<T>(acc[j]);
  }
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
    if (op == ReduceOp::Sum) {
      constexpr int64_t kBlock = 64;  // outer rows per OpenMP task
#pragma omp parallel if (worth_parallel(outer * R * inner))
      {
        std::vector<double> acc;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < outer; o += kBlock)
          sum_rows(px, o, std::min(outer, o + kBlock), R, inner, po, acc);
      }
      return;
    }
    int64_t* pi = argmax.data<int64_t>();
    R1_CHECK(R > 0, "max over an empty dim");
#pragma omp parallel for if (worth_parallel(outer * R * inner))
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t j = 0; j < inner; ++j) {
        const T* p = px + o * R * inner + j;
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
