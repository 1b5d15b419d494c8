// CPU indexing kernels (contracts in engine/kernels.h): gather / scatter_add along the middle
// dim of (outer, D, inner), index_select / index_add of whole (inner) rows.
//
// Every index is checked before any write, serially (kernels cannot throw inside an OpenMP
// region). The accumulating kernels give each thread a disjoint slice of dx (an outer entry
// and a block of inner columns) and walk the index in order inside it, so repeated indices
// never race and the sum order does not depend on the thread count.
#include <algorithm>
#include <cstring>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// Inner columns per task in the accumulating kernels: a block of a row stays in cache while
// the index walks the D rows.
constexpr int64_t kInnerBlock = 256;

// Calls fn(IndexT) with the index dtype's C++ type.
template <class Fn>
void dispatch_index(const Tensor& index, const char* op, Fn&& fn) {
  check_index_dtype(index, op);
  if (index.dtype() == DType::I32) fn(TypeTag<int32_t>{});
  else fn(TypeTag<int64_t>{});
}

// Every index in [0, bound), or an error naming the op, the index, its position and the bound.
template <class I>
void check_indices(const I* idx, int64_t n, int64_t bound, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    R1_CHECK(idx[i] >= 0 && idx[i] < bound, "{}: index {} at position {} out of range [0, {})",
             op, static_cast<int64_t>(idx[i]), i, bound);
}

void check_3d(const Tensor& t, const char* op, const char* what) {
  R1_CHECK(t.dim() == 3 && t.is_contiguous(), "{}: {} must be contiguous (outer, D, inner), "
           "got {}", op, what, shape_str(t.shape()));
}

// Gather and index_select only move elements: they work on any dtype by element size.
template <class Fn>
void dispatch_bytes(DType dtype, Fn&& fn) {
  switch (dtype_size(dtype)) {
    case 1: return fn(TypeTag<uint8_t>{});
    case 2: return fn(TypeTag<uint16_t>{});
    case 4: return fn(TypeTag<uint32_t>{});
    default: return fn(TypeTag<uint64_t>{});
  }
}

// out[o, i, n] = x[o, index[o, i, n], n].  x (O, Dx, I), index (O, Di, I), out (O, Di, I).
void gather_cpu(const Tensor& x, const Tensor& index, Tensor& out) {
  check_3d(x, "gather", "x");
  check_3d(index, "gather", "index");
  R1_CHECK(out.shape() == index.shape() && x.size(0) == index.size(0) &&
               x.size(2) == index.size(2) && out.dtype() == x.dtype() && out.is_contiguous(),
           "gather: x {} index {} out {}", shape_str(x.shape()), shape_str(index.shape()),
           shape_str(out.shape()));
  const int64_t outer = x.size(0), dx = x.size(1), di = index.size(1), inner = x.size(2);
  dispatch_index(index, "gather", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data_ptr());
    check_indices(idx, index.numel(), dx, "gather");
    dispatch_bytes(x.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* px = static_cast<const T*>(x.data_ptr());
      T* po = static_cast<T*>(out.data_ptr());
#pragma omp parallel for collapse(2) if (worth_parallel(out.numel()))
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < di; ++i) {
          const int64_t row = (o * di + i) * inner;
          for (int64_t n = 0; n < inner; ++n)
            po[row + n] = px[(o * dx + idx[row + n]) * inner + n];
        }
    });
  });
}

// Accumulates dx[o, index[o, i, n], n] += dout[o, i, n].  dout, index (O, Di, I), dx (O, Dx, I).
void scatter_add_cpu(const Tensor& dout, const Tensor& index, Tensor& dx) {
  check_3d(dout, "scatter_add", "dout");
  check_3d(index, "scatter_add", "index");
  check_3d(dx, "scatter_add", "dx");
  R1_CHECK(dout.shape() == index.shape() && dx.size(0) == dout.size(0) &&
               dx.size(2) == dout.size(2) && dx.dtype() == dout.dtype(),
           "scatter_add: dout {} index {} dx {}", shape_str(dout.shape()),
           shape_str(index.shape()), shape_str(dx.shape()));
  const int64_t outer = dx.size(0), d = dx.size(1), di = dout.size(1), inner = dx.size(2);
  const int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
  dispatch_index(index, "scatter_add", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data_ptr());
    check_indices(idx, index.numel(), d, "scatter_add");
    dispatch_float(dx.dtype(), "scatter_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* pg = dout.data<T>();
      T* px = dx.data<T>();
#pragma omp parallel for collapse(2) if (worth_parallel(dout.numel()))
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t n0 = blk * kInnerBlock, n1 = std::min(inner, n0 + kInnerBlock);
          for (int64_t i = 0; i < di; ++i) {
            const int64_t row = (o * di + i) * inner;
            for (int64_t n = n0; n < n1; ++n) px[(o * d + idx[row + n]) * inner + n] += pg[row + n];
          }
        }
    });
  });
}

// out[o, i, :] = x[o, index[i], :].  x (O, Dx, I), index (n), out (O, n, I).
void index_select_cpu(const Tensor& x, const Tensor& index, Tensor& out) {
  check_3d(x, "index_select", "x");
  check_3d(out, "index_select", "out");
  R1_CHECK(index.dim() == 1 && index.is_contiguous() && out.size(0) == x.size(0) &&
               out.size(1) == index.size(0) && out.size(2) == x.size(2) &&
               out.dtype() == x.dtype(),
           "index_select: x {} index {} out {}", shape_str(x.shape()), shape_str(index.shape()),
           shape_str(out.shape()));
  const int64_t outer = x.size(0), dx = x.size(1), n = index.size(0), inner = x.size(2);
  const size_t row_bytes = static_cast<size_t>(inner) * dtype_size(x.dtype());
  dispatch_index(index, "index_select", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data_ptr());
    check_indices(idx, n, dx, "index_select");
    const auto* px = static_cast<const unsigned char*>(x.data_ptr());
    auto* po = static_cast<unsigned char*>(out.data_ptr());
#pragma omp parallel for collapse(2) if (worth_parallel(out.numel()))
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(po + (o * n + i) * row_bytes, px + (o * dx + idx[i]) * row_bytes, row_bytes);
  });
}

// Accumulates dx[o, index[i], :] += dout[o, i, :].  dout (O, n, I), index (n), dx (O, Dx, I).
void index_add_cpu(const Tensor& dout, const Tensor& index, Tensor& dx) {
  check_3d(dout, "index_add", "dout");
  check_3d(dx, "index_add", "dx");
  R1_CHECK(index.dim() == 1 && index.is_contiguous() && dx.size(0) == dout.size(0) &&
               dout.size(1) == index.size(0) && dx.size(2) == dout.size(2) &&
               dx.dtype() == dout.dtype(),
           "index_add: dout {} index {} dx {}", shape_str(dout.shape()),
           shape_str(index.shape()), shape_str(dx.shape()));
  const int64_t outer = dx.size(0), d = dx.size(1), n = index.size(0), inner = dx.size(2);
  const int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
  dispatch_index(index, "index_add", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* idx = static_cast<const I*>(index.data_ptr());
    check_indices(idx, n, d, "index_add");
    dispatch_float(dx.dtype(), "index_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* pg = dout.data<T>();
      T* px = dx.data<T>();
#pragma omp parallel for collapse(2) if (worth_parallel(dout.numel()))
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t n0 = blk * kInnerBlock, n1 = std::min(inner, n0 + kInnerBlock);
          for (int64_t i = 0; i < n; ++i) {
            T* dst = px + (o * d + idx[i]) * inner;
            const T* src = pg + (o * n + i) * inner;
            for (int64_t c = n0; c < n1; ++c) dst[c] += src[c];
          }
        }
    });
  });
}

}  // namespace

R1_REGISTER_KERNEL(gather, CPU, gather_cpu);
R1_REGISTER_KERNEL(scatter_add, CPU, scatter_add_cpu);
R1_REGISTER_KERNEL(index_select, CPU, index_select_cpu);
R1_REGISTER_KERNEL(index_add, CPU, index_add_cpu);

}  // namespace r1::cpu
