// Batch-invariant bf16 GEMM on tensor cores (see gemm_bf16_mma.h).
//
// Schedule: one block of 16 warps per 128 x 128 tile of d; k-tiles of 64 bf16 (128 bytes a
// row) staged in shared memory; each warp owns 32 x 32 outputs (2 x 4 mma tiles of 16 x 8)
// and runs 4 mma.m16n8k16 steps per k-tile into fp32 accumulators. Tile shapes, shared-memory
// layout and fragment layouts: kernels/cuda/common/mma.cuh (shared with the FP8 GEMM).
// The K order of every output is fixed (k-tiles in order, 4 steps in order, the tensor
// core's own order inside a step): nothing depends on M or on the grid. Not yet run on a GPU.
#include "kernels/cuda/gemm_bf16_mma.h"

#include <cstdint>
#include <type_traits>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/error.h"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/mma.cuh"

namespace r1::cuda {
namespace {

using namespace mma;

// a (m, k), b (n, k) bf16 bits -> d (m, n): 4 mma steps per k-tile into fp32 accumulators.
template <class OutT, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_bf16_mma_kernel(const uint8_t* a, const uint8_t* b, OutT* d, int64_t m, int64_t n,
                         int64_t k) {
  extern __shared__ __align__(16) uint8_t smem[];
  const WarpPos p = warp_pos();
  const int64_t m0 = int64_t{blockIdx.y} * kTileM, n0 = int64_t{blockIdx.x} * kTileN;
  const int64_t row_bytes = k * 2, kts = (row_bytes + kTileKBytes - 1) / kTileKBytes;
  float acc[kFragsM][kFragsN][4] = {};
  mainloop<kStages>(a, m, b, n, row_bytes, m0, n0, kts, smem,
                    [&](const uint8_t* as, const uint8_t* bs, int64_t) {
#pragma unroll  // 32 accumulators leave room to hoist all 4 steps' fragment loads
    for (int kk = 0; kk < kTileKBytes; kk += kStepBytes) {
      Frags f;
      load_frags(as, bs, p.wm, p.wn, p.g, p.t, kk, f);
#pragma unroll
      for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) mma_bf16(acc[i][j], f.a[i], f.b[j]);
    }
  });
  store_tile(d, m, n, m0, n0, p, acc);
}

template <class OutT, int kStages>
void launch(dim3 grid, cudaStream_t s, const uint8_t* ap, const uint8_t* bp, OutT* dp,
            int64_t m, int64_t n, int64_t k) {
  constexpr int kSmem = kStages * kStageBytes;
  opt_in_dynamic_smem(reinterpret_cast<const void*>(gemm_bf16_mma_kernel<OutT, kStages>), kSmem);
  gemm_bf16_mma_kernel<OutT, kStages><<<grid, kBlockThreads, kSmem, s>>>(ap, bp, dp, m, n, k);
  R1_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemm_bf16_nt_invariant(const Tensor& a, const Tensor& b, Tensor& d, int stages) {
  R1_CHECK(a.dim() == 2 && b.dim() == 2 && d.dim() == 2 && a.size(1) == b.size(1) &&
               d.size(0) == a.size(0) && d.size(1) == b.size(0),
           "gemm_bf16_nt_invariant: a {} b {} d {}: expected (M, K), (N, K), (M, N)", a.str(),
           b.str(), d.str());
  R1_CHECK(a.dtype() == DType::BF16 && b.dtype() == DType::BF16 &&
               (d.dtype() == DType::BF16 || d.dtype() == DType::F32),
           "gemm_bf16_nt_invariant: a {} b {} must be bf16, d {} bf16 or f32", a.str(), b.str(),
           d.str());
  R1_CHECK(a.device().is_cuda() && b.device() == a.device() && d.device() == a.device() &&
               a.is_contiguous() && b.is_contiguous() && d.is_contiguous(),
           "gemm_bf16_nt_invariant: needs contiguous operands on one CUDA device");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  R1_CHECK(k % 8 == 0, "gemm_bf16_nt_invariant: K {} must be a multiple of 8 (16-byte rows)", k);
  R1_CHECK(reinterpret_cast<uintptr_t>(a.data_ptr()) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(b.data_ptr()) % 16 == 0,
           "gemm_bf16_nt_invariant: a and b must be 16-byte aligned");
  R1_CHECK(stages == 1 || stages == 2, "gemm_bf16_nt_invariant: stages {} (1 or 2)", stages);
  if (m == 0 || n == 0) return;
  const int64_t grid_x = (n + kTileN - 1) / kTileN, grid_y = (m + kTileM - 1) / kTileM;
  R1_CHECK(grid_y <= 65535, "gemm_bf16_nt_invariant: M {} exceeds the grid", m);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  const auto* ap = static_cast<const uint8_t*>(a.data_ptr());
  const auto* bp = static_cast<const uint8_t*>(b.data_ptr());
  auto run = [&](auto* dp) {
    using OutT = std::remove_pointer_t<decltype(dp)>;
    if (stages == 1) launch<OutT, 1>(grid, s, ap, bp, dp, m, n, k);
    else launch<OutT, 2>(grid, s, ap, bp, dp, m, n, k);
  };
  if (d.dtype() == DType::F32) run(d.data<float>());
  else run(d.data<uint16_t>());
}

}  // namespace r1::cuda
