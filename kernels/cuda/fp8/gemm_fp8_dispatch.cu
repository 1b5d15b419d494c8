// The registered CUDA FP8 GEMMs (gemm_fp8_blockscaled and the grouped forms, engine/kernels.h):
// which kernel runs. R1_FP8_GEMM = auto (default) | simple | mma | wgmma.
//   auto: the fastest kernel validated on a GPU that accepts the operands. The wgmma kernel
//         joins auto once its tests have passed on an H100/H200 (kWgmmaValidated), the
//         grouped forms of the mma.sync kernel once theirs have (kMmaGroupedValidated); until
//         then auto is the mma.sync kernel for dense products (validated on an H200) and the
//         simple kernel for grouped ones.
//   simple | mma | wgmma: that kernel wherever it accepts the operands, else the simple one;
//         logged once.
// The choice is per call and host-side only (shapes, alignment, the device), so it is
// graph-safe.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "engine/log.h"
#include "kernels/cuda/fp8/gemm_fp8_mma.h"
#include "kernels/cuda/fp8/gemm_fp8_simple.h"
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"

namespace r1::cuda {
namespace {

// Flip once Fp8Cuda.Wgmma* pass on a Hopper GPU (scripts/gpu-check.sh).
constexpr bool kWgmmaValidated = false;
// Flip once Fp8Cuda.WgmmaGemmMatchesReference's 1D1D cases pass (with kWgmmaValidated): auto
// then runs wgrad's 1D1D products on the wgmma kernel too.
constexpr bool kWgmma1D1DValidated = false;
// Flip once Fp8Cuda.MmaGroupedGemmsMatchReference passes: auto then runs grouped products on
// the mma.sync kernel's tile (tensor cores) instead of the simple one's (CUDA cores).
constexpr bool kMmaGroupedValidated = false;

enum class Fp8Kernel { kAuto, kSimple, kMma, kWgmma };

Fp8Kernel requested() {
  static const Fp8Kernel k = [] {
    const char* e = std::getenv("R1_FP8_GEMM");
    const std::string v = e ? e : "auto";
    if (v == "simple") return Fp8Kernel::kSimple;
    if (v == "mma") return Fp8Kernel::kMma;
    if (v == "wgmma") return Fp8Kernel::kWgmma;
    if (v != "auto" && !v.empty())
      log_warn("R1_FP8_GEMM={}: not auto|simple|mma|wgmma; using auto", v);
    return Fp8Kernel::kAuto;
  }();
  return k;
}

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// Whether the tensor-core kernels take these operands: K a positive multiple of 16 (16-byte
// rows), 16-byte aligned e4m3 bases.
bool tensor_core_ok(const Tensor& a_q, const Tensor& b_q, int64_t k) {
  return k > 0 && k % 16 == 0 && aligned16(a_q) && aligned16(b_q);
}

bool use_wgmma(const Tensor& a_q, const Tensor& b_q, int64_t k, int64_t groups) {
  const Fp8Kernel r = requested();
  const bool want = r == Fp8Kernel::kWgmma || (r == Fp8Kernel::kAuto && kWgmmaValidated);
  if (!want) return false;
  const bool ok = fp8_wgmma_supported(a_q.device().index) && tensor_core_ok(a_q, b_q, k) &&
                  groups <= kFp8WgmmaMaxGroups;
  if (!ok && r == Fp8Kernel::kWgmma)
    log_once("fp8-wgmma-fallback", "R1_FP8_GEMM=wgmma: some operands do not fit the wgmma "
             "kernel (needs sm_90, K a multiple of 16, aligned rows, <= 256 groups); those "
             "calls run the simple kernel");
  return ok;
}

// 1D1D products (b with row scales: wgrad) take the wgmma kernel when asked for it, or under
// auto once its 1D1D form is validated too (kWgmma1D1DValidated); else mma.sync.
void gemm_dense(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                const Tensor& b_scales, Tensor& d) {
  const int64_t k = a_q.dim() == 2 ? a_q.size(1) : 0;
  const bool wgmma_takes = !fp8_b_row_scales(b_q, b_scales) || kWgmma1D1DValidated ||
                           requested() == Fp8Kernel::kWgmma;
  if (wgmma_takes && use_wgmma(a_q, b_q, k, 1))
    return gemm_fp8_blockscaled_wgmma(a_q, a_scales, b_q, b_scales, d);
  const Fp8Kernel r = requested();
  if ((r == Fp8Kernel::kAuto || r == Fp8Kernel::kMma || r == Fp8Kernel::kWgmma) &&
      tensor_core_ok(a_q, b_q, k))
    return gemm_fp8_blockscaled_mma(a_q, a_scales, b_q, b_scales, d);
  gemm_fp8_blockscaled_simple(a_q, a_scales, b_q, b_scales, d);
}

// Grouped products on the mma.sync tile: asked for, or auto once validated.
bool use_grouped_mma(const Tensor& a_q, const Tensor& b_q, int64_t k) {
  const Fp8Kernel r = requested();
  return (r == Fp8Kernel::kMma || (r == Fp8Kernel::kAuto && kMmaGroupedValidated)) &&
         tensor_core_ok(a_q, b_q, k);
}

void gemm_contiguous(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                     const Tensor& b_scales, const Tensor& offsets, Tensor& d) {
  const int64_t k = b_q.dim() == 3 ? b_q.size(2) : 0, g = b_q.dim() == 3 ? b_q.size(0) : 0;
  if (use_wgmma(a_q, b_q, k, g))
    return gemm_fp8_grouped_contiguous_wgmma(a_q, a_scales, b_q, b_scales, offsets, d);
  if (use_grouped_mma(a_q, b_q, k))
    return gemm_fp8_grouped_contiguous_mma(a_q, a_scales, b_q, b_scales, offsets, d);
  gemm_fp8_grouped_contiguous_simple(a_q, a_scales, b_q, b_scales, offsets, d);
}

void gemm_masked(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                 const Tensor& b_scales, const Tensor& counts, Tensor& d) {
  const int64_t k = b_q.dim() == 3 ? b_q.size(2) : 0, g = b_q.dim() == 3 ? b_q.size(0) : 0;
  if (use_wgmma(a_q, b_q, k, g))
    return gemm_fp8_grouped_masked_wgmma(a_q, a_scales, b_q, b_scales, counts, d);
  if (use_grouped_mma(a_q, b_q, k))
    return gemm_fp8_grouped_masked_mma(a_q, a_scales, b_q, b_scales, counts, d);
  gemm_fp8_grouped_masked_simple(a_q, a_scales, b_q, b_scales, counts, d);
}

// A grouped launch is preferred over dense launches per group when auto (or the request)
// gives grouped products a tensor-core kernel; the simple kernel's CUDA cores lose to the
// dense mma.sync kernel per group at any size worth a launch.
bool grouped_preferred() {
  const Fp8Kernel r = requested();
  if (r == Fp8Kernel::kSimple) return true;  // asked for: the simple kernel either way
  return r == Fp8Kernel::kMma || r == Fp8Kernel::kWgmma || kMmaGroupedValidated ||
         kWgmmaValidated;
}

}  // namespace

R1_REGISTER_KERNEL(gemm_fp8_grouped_preferred, CUDA, grouped_preferred);
// The k-grouped GEMM has one CUDA form, the mma.sync tile (its callers take it only where
// gemm_fp8_grouped_preferred says so; Fp8Cuda.MmaKGroupedGemmMatchesReference tests it).
R1_REGISTER_KERNEL(gemm_fp8_kgrouped, CUDA, gemm_fp8_kgrouped_mma);
R1_REGISTER_KERNEL(gemm_fp8_blockscaled, CUDA, gemm_dense);
R1_REGISTER_KERNEL(gemm_fp8_grouped_contiguous, CUDA, gemm_contiguous);
R1_REGISTER_KERNEL(gemm_fp8_grouped_masked, CUDA, gemm_masked);

}  // namespace r1::cuda
