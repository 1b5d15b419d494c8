// CPU gemm (contract in engine/kernels.h): batched, row-major, with transposes, alpha/beta and
// a broadcast (batch-1) operand, on OpenBLAS (cblas_sgemm / cblas_dgemm).
//
// Layout of the file: gemm_cpu checks the contract and plans the batch into 2-D products
// (one folded product where the layout allows, else one per batch entry); every 2-D product
// goes through matrix_product(), which runs OpenBLAS or, under r1::batch_invariant()
// (engine/determinism.h), the product whose K order does not depend on M
// (kernels/cpu/gemm_invariant.cc; OpenBLAS's does, DESIGN.md "Batch invariance"). The
// planning stays shared: folding the batch into M is safe for the invariant product because
// nothing in it depends on M.
#include <cblas.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "engine/determinism.h"
#include "engine/kernels.h"
#include "engine/log.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/gemm_invariant.h"

extern "C" char* openblas_get_corename(void);  // OpenBLAS's run-time kernel choice

namespace r1::cpu {
namespace {

// OpenBLAS picks its kernels from the CPUID model; a CPU it does not know (a KVM guest with a
// masked model, a newer generation than 0.3.21) falls back to its SSE3 "Prescott" kernels.
// Measured on a 2-core Xeon guest with AVX-512 and AMX: the tiny dense model's training step
// took 153 ms on Prescott, 100 ms with OPENBLAS_CORETYPE=Haswell, 77 ms with SkylakeX. The
// core type is read when the library loads, so the fix is the environment (scripts/cpu-env.sh
// sets it); here it is only detected and said, once.
void warn_if_generic_blas_kernels() {
  static const bool checked = [] {
    const std::string core = openblas_get_corename();
    const bool generic = core == "Prescott" || core == "Core2" || core == "Penryn" ||
                         core == "Dunnington" || core == "Nehalem" || core == "Atom";
    if (generic && __builtin_cpu_supports("avx2") && std::getenv("OPENBLAS_CORETYPE") == nullptr)
      log_once("openblas-generic-core",
               fmt::format("OpenBLAS runs its '{}' kernels on a CPU with AVX2{}: its CPU "
                           "model is not recognized. Set OPENBLAS_CORETYPE={} (scripts/"
                           "cpu-env.sh does) for GEMMs 1.5-2x faster.", core,
                           __builtin_cpu_supports("avx512f") ? " and AVX-512" : "",
                           __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell"));
    return true;
  }();
  (void)checked;
}

void blas_product(const ProductShape& s, float alpha, const float* a, const float* b, float beta,
                  float* c) {
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(s.m),
              static_cast<blasint>(s.n), static_cast<blasint>(s.k), alpha, a,
              static_cast<blasint>(s.lda), b, static_cast<blasint>(s.ldb), beta, c,
              static_cast<blasint>(s.ldc));
}

void blas_product(const ProductShape& s, double alpha, const double* a, const double* b,
                  double beta, double* c) {
  cblas_dgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(s.m),
              static_cast<blasint>(s.n), static_cast<blasint>(s.k), alpha, a,
              static_cast<blasint>(s.lda), b, static_cast<blasint>(s.ldb), beta, c,
              static_cast<blasint>(s.ldc));
}

// The single place a 2-D product is computed (see the file comment).
template <class T>
void matrix_product(const ProductShape& s, T alpha, const T* a, const T* b, T beta, T* c) {
  if (s.m == 0 || s.n == 0) return;
  // No product term (an empty sum, or alpha == 0, where BLAS reads neither a nor b):
  // c = beta * c, and beta == 0 must not read c, which may be garbage.
  if (s.k == 0 || alpha == T(0)) {
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        T& x = c[i * s.ldc + j];
        x = beta == T(0) ? T(0) : beta * x;
      }
    return;
  }
  if (batch_invariant())
    invariant_product(s, alpha, a, b, beta, c);
  else
    blas_product(s, alpha, a, b, beta, c);
}

// The contract's check (engine/kernels.h), then BLAS's integer range.
GemmDims check_gemm(const Tensor& a, const Tensor& b, const Tensor& c, bool ta, bool tb) {
  const GemmDims d = check_gemm_operands(a, b, c, ta, tb);
  constexpr int64_t kMaxBlas = std::numeric_limits<blasint>::max();
  R1_CHECK(d.batch * d.m <= kMaxBlas && d.n <= kMaxBlas && d.k <= kMaxBlas,
           "gemm: sizes (B {}, M {}, N {}, K {}) exceed the BLAS integer range", d.batch, d.m,
           d.n, d.k);
  return d;
}

void gemm_cpu(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
              double alpha, double beta) {
  warn_if_generic_blas_kernels();
  const GemmDims d = check_gemm(a, b, c, trans_a, trans_b);
  dispatch_float(c.dtype(), "gemm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    T* pc = c.data<T>();
    ProductShape s{trans_a, trans_b, d.m, d.n, d.k, a.size(2), b.size(2), d.n};
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    // b shared by every batch entry and a's rows stacked in memory: the batch folds into M,
    // one (B*M, K) @ (K, N) product (BLAS blocks it far better than B small ones). A
    // transposed a stores its M along columns, so its batches do not stack into rows; a
    // broadcast a would fold into N, but c's (B, M, N) layout does not put batches side by
    // side in a row. Those cases loop (measured: 8-11 GFLOP/s against 90-220 folded at
    // B 16, M 4, K = N = 1024 on 2 shared cores; at M 64 both reach 60-80).
    if (d.batch > 1 && d.batch_b == 1 && d.batch_a == d.batch && !trans_a) {
      s.m = d.batch * d.m;
      matrix_product<T>(s, al, pa, pb, be, pc);
      return;
    }
    const int64_t sa = d.batch_a == 1 ? 0 : a.size(1) * a.size(2);
    const int64_t sb = d.batch_b == 1 ? 0 : b.size(1) * b.size(2);
    for (int64_t i = 0; i < d.batch; ++i)
      matrix_product<T>(s, al, pa + i * sa, pb + i * sb, be, pc + i * d.m * d.n);
  });
}

}  // namespace

R1_REGISTER_KERNEL(gemm, CPU, gemm_cpu);

}  // namespace r1::cpu
