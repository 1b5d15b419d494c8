// Probes of the Hopper building blocks (see hopper_probe.h). Each kernel is one block doing one
// thing with the same helpers the FP8 wgmma GEMM uses, so a wrong assumption shows up here as
// a wrong byte or element rather than as a wrong GEMM.
#include "kernels/cuda/common/hopper_probe.h"

#include <cuda.h>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "kernels/cuda/common/hopper.cuh"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/tma.h"
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"

namespace r1::cuda {
namespace {

using namespace hopper;

constexpr int kProbeThreads = 128;  // one warpgroup

// Shared memory rounded up to 1024 bytes (the 128-byte swizzle's atom): the launch asks for
// 1024 bytes of slack.
__device__ inline uint8_t* align1024(uint8_t* p) {
  return p + ((1024 - (smem_u32(p) & 1023)) & 1023);
}

// One TMA copy of the box at (col0, row0) into aligned shared memory, then the raw bytes out.
__global__ void __launch_bounds__(kProbeThreads)
    tma_box_probe_kernel(const __grid_constant__ CUtensorMap map, uint8_t* out, int row0,
                         int col0, int box_rows) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __shared__ uint64_t bar;
  uint8_t* smem = align1024(smem_raw);
  const int chunks = box_rows * 8;  // 16-byte chunks
  // A pattern first, so that the zeros the copy must write past the matrix's edges cannot be
  // zeros shared memory happened to hold; ordered before the copy (async proxy) by the fence.
  for (int i = static_cast<int>(threadIdx.x); i < chunks; i += kProbeThreads)
    reinterpret_cast<uint4*>(smem)[i] = make_uint4(0xa5a5a5a5u, 0xa5a5a5a5u, 0xa5a5a5a5u, 0xa5a5a5a5u);
  fence_proxy_async_smem();
  if (threadIdx.x == 0) {
    mbar_init(&bar, 1);
    fence_barrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(&bar, static_cast<uint32_t>(box_rows) * 128u);
    tma_load_2d(smem, &map, &bar, col0, row0);
  }
  mbar_wait(&bar, 0);
  for (int i = static_cast<int>(threadIdx.x); i < chunks; i += kProbeThreads)
    reinterpret_cast<uint4*>(out)[i] = reinterpret_cast<const uint4*>(smem)[i];
#else
  (void)map, (void)out, (void)row0, (void)col0, (void)box_rows;
  __trap();
#endif
}

// d (64, kN) = a (64, 128) b (kN, 128)^T over one k-block, as one consumer warpgroup of the
// GEMM computes it (gemm_fp8_wgmma.cu): four k32 steps, the first overwriting.
template <int kN>
__global__ void __launch_bounds__(kProbeThreads)
    wgmma_probe_kernel(const __grid_constant__ CUtensorMap ta,
                       const __grid_constant__ CUtensorMap tb, const uint8_t* a,
                       const uint8_t* b, float* d, int via_tma) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __shared__ uint64_t bar;
  uint8_t* sa = align1024(smem_raw);
  uint8_t* sb = sa + 64 * 128;
  if (via_tma) {
    if (threadIdx.x == 0) {
      mbar_init(&bar, 1);
      fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      mbar_arrive_expect_tx(&bar, (64u + kN) * 128u);
      tma_load_2d(sa, &ta, &bar, 0, 0);
      tma_load_2d(sb, &tb, &bar, 0, 0);
    }
    mbar_wait(&bar, 0);
  } else {
    // Row r's 16-byte chunk c at byte 128 r + 16 (c ^ (r % 8)) of its tile (hopper.cuh's
    // layout); then the generic-proxy stores are made visible to wgmma's (async proxy) reads.
    for (int i = static_cast<int>(threadIdx.x); i < (64 + kN) * 8; i += kProbeThreads) {
      const int row = i / 8, c = i % 8;
      const bool in_a = row < 64;
      const int r = in_a ? row : row - 64;
      const uint8_t* src = (in_a ? a : b) + r * 128 + c * 16;
      uint8_t* dst = (in_a ? sa : sb) + r * 128 + 16 * (c ^ (r % 8));
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    }
    fence_proxy_async_smem();
    __syncthreads();
  }
  float part[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) part[i] = 0.0f;
  const uint64_t da = smem_desc_sw128(sa), db = smem_desc_sw128(sb);
  fence_operands(part);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    WgmmaE4M3<kN>::mma(part, desc_advance(da, 32 * kk), desc_advance(db, 32 * kk), kk);
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(part);
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
    const int col = 8 * j + 2 * t, lo = 16 * warp + g, hi = lo + 8;
    d[lo * kN + col] = part[4 * j + 0];
    d[lo * kN + col + 1] = part[4 * j + 1];
    d[hi * kN + col] = part[4 * j + 2];
    d[hi * kN + col + 1] = part[4 * j + 3];
  }
#else
  (void)ta, (void)tb, (void)a, (void)b, (void)d, (void)via_tma;
  __trap();
#endif
}

// A cluster of 2 (launched with the cluster attribute): the multicast halves and the remote
// arrivals of the "c2" GEMM configurations, alone.
__global__ void __launch_bounds__(kProbeThreads)
    multicast_probe_kernel(const __grid_constant__ CUtensorMap map, uint8_t* out, int rows) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __shared__ uint64_t full, both;
  uint8_t* smem = align1024(smem_raw);
  const uint32_t rank = cluster_ctarank();
  const int chunks = rows * 8;
  for (int i = static_cast<int>(threadIdx.x); i < chunks; i += kProbeThreads)
    reinterpret_cast<uint4*>(smem)[i] = make_uint4(0xa5a5a5a5u, 0xa5a5a5a5u, 0xa5a5a5a5u, 0xa5a5a5a5u);
  fence_proxy_async_smem();
  if (threadIdx.x == 0) {
    mbar_init(&full, 1);
    mbar_init(&both, 2);  // this CTA's arrival and the peer's
    fence_barrier_init();
  }
  __syncthreads();
  cluster_sync();  // both CTAs' barriers initialized before either multicasts or arrives
  if (threadIdx.x == 0) {
    const int half = rows / 2;
    mbar_arrive_expect_tx(&full, static_cast<uint32_t>(rows) * 128u);
    tma_load_2d_multicast(smem + rank * half * 128, &map, &full, 0, static_cast<int>(rank) * half,
                          0x3);
    mbar_arrive(&both);
    mbar_arrive_cluster(&both, rank ^ 1u);
  }
  mbar_wait(&full, 0);
  mbar_wait<true>(&both, 0);
  uint8_t* o = out + static_cast<size_t>(rank) * rows * 128;
  for (int i = static_cast<int>(threadIdx.x); i < chunks; i += kProbeThreads)
    reinterpret_cast<uint4*>(o)[i] = reinterpret_cast<const uint4*>(smem)[i];
  cluster_sync();  // neither leaves while the other may still write into it
#else
  (void)map, (void)out, (void)rows;
  __trap();
#endif
}

void check_probe_device(const Tensor& t, const char* what) {
  R1_CHECK(t.device().is_cuda() && t.is_contiguous(), "{}: a contiguous CUDA tensor, got {}",
           what, t.str());
  R1_CHECK(fp8_wgmma_supported(t.device().index), "{}: needs an sm_90 GPU (TMA, wgmma)", what);
}

}  // namespace

Tensor hopper_probe_tma_box(const Tensor& src, int64_t row_bytes, int64_t row0, int64_t col0,
                            int box_rows) {
  check_probe_device(src, "hopper_probe_tma_box");
  R1_CHECK(src.dim() == 2 && dtype_size(src.dtype()) == 1 && row_bytes <= src.size(1) &&
               box_rows >= 1 && box_rows <= 256 && row0 >= 0 && col0 >= 0,
           "hopper_probe_tma_box: src {}, row_bytes {}, box rows {}", src.str(), row_bytes,
           box_rows);
  const int dev = src.device().index;
  DeviceGuard guard(dev);
  const CUtensorMap map =
      make_tma_map_u8(src.data_ptr(), static_cast<uint64_t>(src.size(0)),
                      static_cast<uint64_t>(row_bytes), static_cast<uint64_t>(src.size(1)),
                      static_cast<uint32_t>(box_rows), 128);
  Tensor out = Tensor::empty({box_rows, 128}, DType::U8, src.device());
  // Poisoned (0xff) first: a byte the kernel does not write cannot hold a stale right answer.
  R1_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0xff, out.nbytes(), current_stream(dev)));
  const int smem = box_rows * 128 + 1024;
  opt_in_dynamic_smem(reinterpret_cast<const void*>(tma_box_probe_kernel), smem);
  tma_box_probe_kernel<<<1, kProbeThreads, smem, current_stream(dev)>>>(
      map, out.data<uint8_t>(), static_cast<int>(row0), static_cast<int>(col0), box_rows);
  R1_CUDA_CHECK_LAUNCH();
  return out;
}

Tensor hopper_probe_wgmma(const Tensor& a, const Tensor& b, bool via_tma) {
  check_probe_device(a, "hopper_probe_wgmma");
  check_probe_device(b, "hopper_probe_wgmma");
  const int64_t n = b.dim() == 2 ? b.size(0) : 0;
  R1_CHECK(a.dim() == 2 && a.size(0) == 64 && a.size(1) == 128 && b.dim() == 2 &&
               (n == 64 || n == 128) && b.size(1) == 128 && dtype_size(a.dtype()) == 1 &&
               dtype_size(b.dtype()) == 1,
           "hopper_probe_wgmma: a (64, 128) and b (64 or 128, 128) of 1-byte elements, got "
           "a {}, b {}",
           a.str(), b.str());
  const int dev = a.device().index;
  DeviceGuard guard(dev);
  const CUtensorMap ta = make_tma_map_u8(a.data_ptr(), 64, 128, 128, 64, 128);
  const CUtensorMap tb = make_tma_map_u8(b.data_ptr(), static_cast<uint64_t>(n), 128, 128,
                                         static_cast<uint32_t>(n), 128);
  Tensor d = Tensor::empty({64, n}, DType::F32, a.device());
  // NaN (0xffffffff) first: an element the fragment map misses cannot hold a stale right
  // answer from an earlier call's buffer.
  R1_CUDA_CHECK(cudaMemsetAsync(d.data_ptr(), 0xff, d.nbytes(), current_stream(dev)));
  const int smem = static_cast<int>((64 + n) * 128) + 1024;
  const auto* pa = static_cast<const uint8_t*>(a.data_ptr());
  const auto* pb = static_cast<const uint8_t*>(b.data_ptr());
  auto launch = [&](auto kernel) {
    opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
    kernel<<<1, kProbeThreads, smem, current_stream(dev)>>>(ta, tb, pa, pb, d.data<float>(),
                                                            via_tma ? 1 : 0);
    R1_CUDA_CHECK_LAUNCH();
  };
  if (n == 64) launch(wgmma_probe_kernel<64>);
  else launch(wgmma_probe_kernel<128>);
  return d;
}

Tensor hopper_probe_multicast(const Tensor& src) {
  check_probe_device(src, "hopper_probe_multicast");
  const int64_t rows = src.dim() == 2 ? src.size(0) : 0;
  R1_CHECK(src.dim() == 2 && src.size(1) == 128 && dtype_size(src.dtype()) == 1 && rows >= 16 &&
               rows <= 256 && rows % 16 == 0,
           "hopper_probe_multicast: src (rows, 128) of 1-byte elements, rows 16..256 a "
           "multiple of 16, got {}", src.str());
  const int dev = src.device().index;
  DeviceGuard guard(dev);
  // Each CTA's TMA box is its half of the rows.
  const CUtensorMap map = make_tma_map_u8(src.data_ptr(), static_cast<uint64_t>(rows), 128, 128,
                                          static_cast<uint32_t>(rows / 2), 128);
  Tensor out = Tensor::empty({2, rows, 128}, DType::U8, src.device());
  R1_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0xff, out.nbytes(), current_stream(dev)));
  const int smem = static_cast<int>(rows) * 128 + 1024;
  opt_in_dynamic_smem(reinterpret_cast<const void*>(multicast_probe_kernel), smem);
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_launch_config(2, kProbeThreads, static_cast<size_t>(smem),
                                                       current_stream(dev), 2, attr);
  R1_CUDA_CHECK(cudaLaunchKernelEx(&cfg, multicast_probe_kernel, map, out.data<uint8_t>(),
                                   static_cast<int>(rows)));
  return out;
}

}  // namespace r1::cuda
