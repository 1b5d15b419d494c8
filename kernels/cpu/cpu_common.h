// Helpers shared by the CPU kernels (the reference backend): dtype dispatch and checks.
#pragma once
#include <omp.h>

#include "engine/error.h"
#include "engine/tensor.h"

namespace r1::cpu {

template <class T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<float>{}) or fn(TypeTag<double>{}) after dtype; other dtypes are an error.
// Use: dispatch_float(x.dtype(), "op", [&](auto tag) { using T = typename decltype(tag)::type; });
// (A function, not a macro: OpenMP pragmas inside macro arguments do not work.)
template <class Fn>
decltype(auto) dispatch_float(DType dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::F64: return fn(TypeTag<double>{});
    default: break;
  }
  throw Error(std::string(what) + ": CPU kernels compute in f32 or f64, got " +
              dtype_name(dtype));
}

// Reads index i of an integer tensor (i32 or i64), contiguous.
inline int64_t index_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::I32 ? static_cast<const int32_t*>(t.data_ptr())[i]
                                 : static_cast<const int64_t*>(t.data_ptr())[i];
}

inline void check_index_dtype(const Tensor& t, const char* what) {
  R1_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, "{}: index dtype must be i32 or "
           "i64, got {}", what, dtype_name(t.dtype()));
}

// Parallelize loops over rows only when there is enough work to amortize the fork.
inline bool worth_parallel(int64_t work) { return work >= (1 << 15); }

}  // namespace r1::cpu
