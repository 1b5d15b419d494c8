// CPU: fill, copy_strided (with dtype conversion), add_scaled, affine.
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/convert.h"
#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

void fill_cpu(Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  // Convert the value once into the target dtype, then replicate its bytes.
  const size_t es = dtype_size(out.dtype());
  unsigned char one[8];
  convert_buffer(&value, DType::F64, one, out.dtype(), 1);
  auto* p = static_cast<unsigned char*>(out.data_ptr());
  if (out.dtype() == DType::F32) {
    float* f = static_cast<float*>(out.data_ptr());
    const float v = static_cast<float>(value);
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) f[i] = v;
    return;
  }
  for (int64_t i = 0; i < n; ++i) std::memcpy(p + i * es, one, es);
}

// Walks `shape` in row-major order calling fn(src_offset, dst_offset) per innermost run.
template <class Fn>
void for_each_run(const Shape& shape, const Shape& s_st, const Shape& d_st, Fn fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (nd == 0) {
    fn(0, 0, 1, 0, 0);
    return;
  }
  const int64_t inner = shape[nd - 1];
  int64_t outer = 1;
  for (int64_t d = 0; d < nd - 1; ++d) outer *= shape[d];
#pragma omp parallel for if (worth_parallel(outer * inner))
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, so = 0, doff = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      so += idx * s_st[d];
      doff += idx * d_st[d];
    }
    fn(so, doff, inner, s_st[nd - 1], d_st[nd - 1]);
  }
}

// n elements of `es` bytes from s (element stride sis) to d (stride dis), same dtype.
template <class E>
inline void copy_run(const unsigned char* s, int64_t sis, unsigned char* d, int64_t dis,
                     int64_t n) {
  const E* ps = reinterpret_cast<const E*>(s);
  E* pd = reinterpret_cast<E*>(d);
  for (int64_t i = 0; i < n; ++i) pd[i * dis] = ps[i * sis];
}

// The same dtype: a byte copy. Dims that are contiguous in both src and dst are merged (and
// size-1 dims dropped), so a slice of the last dims copies in long runs (memcpy), and the
// strided runs copy typed elements, not one convert_buffer call per element.
void copy_same_dtype(const Tensor& src, Tensor& dst, size_t es) {
  Shape shape, s_st, d_st;
  for (int64_t d = 0; d < src.dim(); ++d) {
    const int64_t n = src.size(d);
    if (n == 1) continue;
    const int64_t ss = src.strides()[d], ds = dst.strides()[d];
    if (!shape.empty() && s_st.back() == ss * n && d_st.back() == ds * n) {
      shape.back() *= n;
      s_st.back() = ss;
      d_st.back() = ds;
      continue;
    }
    shape.push_back(n);
    s_st.push_back(ss);
    d_st.push_back(ds);
  }
  const auto* s = static_cast<const unsigned char*>(src.data_ptr());
  auto* d = static_cast<unsigned char*>(dst.data_ptr());
  for_each_run(shape, s_st, d_st,
               [&](int64_t so, int64_t doff, int64_t n, int64_t sis, int64_t dis) {
                 const unsigned char* ps = s + so * es;
                 unsigned char* pd = d + doff * es;
                 if (sis == 1 && dis == 1) {
                   std::memcpy(pd, ps, static_cast<size_t>(n) * es);
                   return;
                 }
                 switch (es) {
                   case 8: return copy_run<uint64_t>(ps, sis, pd, dis, n);
                   case 4: return copy_run<uint32_t>(ps, sis, pd, dis, n);
                   case 2: return copy_run<uint16_t>(ps, sis, pd, dis, n);
                   default: return copy_run<uint8_t>(ps, sis, pd, dis, n);
                 }
               });
}

void copy_strided_cpu(const Tensor& src, Tensor& dst) {
  if (src.numel() == 0) return;
  const DType st = src.dtype(), dt = dst.dtype();
  const size_t ses = dtype_size(st), des = dtype_size(dt);
  const auto* s = static_cast<const unsigned char*>(src.data_ptr());
  auto* d = static_cast<unsigned char*>(dst.data_ptr());
  if (src.is_contiguous() && dst.is_contiguous()) {
    convert_buffer(s, st, d, dt, static_cast<size_t>(src.numel()));
    return;
  }
  if (st == dt && (ses == 1 || ses == 2 || ses == 4 || ses == 8)) {
    copy_same_dtype(src, dst, ses);
    return;
  }
  for_each_run(src.shape(), src.strides(), dst.strides(),
               [&](int64_t so, int64_t doff, int64_t n, int64_t sis, int64_t dis) {
                 if (sis == 1 && dis == 1) {
                   convert_buffer(s + so * ses, st, d + doff * des, dt, n);
                   return;
                 }
                 for (int64_t i = 0; i < n; ++i)
                   convert_buffer(s + (so + i * sis) * ses, st, d + (doff + i * dis) * des, dt, 1);
               });
}

void add_scaled_cpu(Tensor& y, const Tensor& x, double alpha) {
  R1_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "add_scaled: {} += {}", y.str(),
           x.str());
  dispatch_float(y.dtype(), "add_scaled", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    scalar_t* py = y.data<scalar_t>();
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t a = static_cast<scalar_t>(alpha);
    const int64_t n = y.numel();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  });
}

void affine_cpu(const Tensor& x, double s, double b, Tensor& out) {
  dispatch_float(x.dtype(), "affine", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    const scalar_t ss = static_cast<scalar_t>(s), bb = static_cast<scalar_t>(b);
    const int64_t n = x.numel();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) po[i] = ss * px[i] + bb;
  });
}

}  // namespace

R1_REGISTER_KERNEL(fill, CPU, fill_cpu);
R1_REGISTER_KERNEL(copy_strided, CPU, copy_strided_cpu);
R1_REGISTER_KERNEL(add_scaled, CPU, add_scaled_cpu);
R1_REGISTER_KERNEL(affine, CPU, affine_cpu);

}  // namespace r1::cpu
