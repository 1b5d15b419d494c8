// CUDA: moe_masked_slots and moe_scatter_rows, the masked MoE layout of the decode step under
// CUDA graphs (contracts in engine/kernels_moe.h; kernels/cpu/moe.cc is the reference,
// tests/test_moe_route.cc). Nothing here reads device data on the host: the indices are the
// router's, on the device, and the launch shapes come from tensor shapes alone.
//
// Slots: one block per expert walks the P pairs in order, kSlotThreads at a time; a pair that
// chose the block's expert takes the next slot (a ballot and a prefix over the block's warps),
// so an expert's slots follow pair order (its tokens in token order), the same on every run.
// Each pair is written by the one block of its expert. Scatter: one thread per 4-byte word
// (or byte, when a row is not a whole number of aligned words) of each pair's row.
#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_moe.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kSlotThreads = 256;
constexpr int kSlotWarps = kSlotThreads / 32;

__global__ void __launch_bounds__(kSlotThreads)
    moe_masked_slots_kernel(const int64_t* idx, int64_t P, int64_t cap, int64_t* dest,
                            int64_t* counts) {
  __shared__ int warp_hits[kSlotWarps];
  const int64_t e = blockIdx.x;
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  int64_t base = 0;  // slots taken by earlier steps; the same in every thread
  for (int64_t p0 = 0; p0 < P; p0 += kSlotThreads) {  // uniform trip count
    const int64_t p = p0 + threadIdx.x;
    const bool hit = p < P && idx[p] == e;
    const unsigned ball = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_hits[warp] = __popc(ball);
    __syncthreads();
    int before = __popc(ball & ((1u << lane) - 1u)), step = 0;
    for (int w = 0; w < kSlotWarps; ++w) {
      const int h = warp_hits[w];
      if (w < warp) before += h;
      step += h;
    }
    if (hit) dest[p] = e * cap + base + before;
    base += step;
    __syncthreads();  // warp_hits is rewritten by the next step
  }
  if (threadIdx.x == 0) counts[e] = base;
}

template <class W>
__global__ void moe_scatter_rows_kernel(const W* src, const int64_t* dest, W* dst, int64_t P,
                                        int64_t K, int64_t words) {
  for (int64_t i = global_thread(); i < P * words; i += grid_threads()) {
    const int64_t p = i / words, c = i - p * words;
    dst[dest[p] * words + c] = src[(p / K) * words + c];
  }
}

void moe_masked_slots_cuda(const Tensor& indices, int64_t cap, Tensor& dest, Tensor& counts) {
  check_moe_masked_slots(indices, cap, dest, counts);
  const int64_t P = indices.numel(), E = counts.numel();
  const int dev = indices.device().index;
  DeviceGuard g(dev);
  R1_CHECK(E <= 0x7fffffff, "moe_masked_slots: {} experts exceed the grid", E);
  moe_masked_slots_kernel<<<static_cast<unsigned>(E), kSlotThreads, 0, current_stream(dev)>>>(
      indices.data<int64_t>(), P, cap, dest.data<int64_t>(), counts.data<int64_t>());
  R1_CUDA_CHECK_LAUNCH();
}

void moe_scatter_rows_cuda(const Tensor& src, const Tensor& dest, Tensor& dst) {
  check_moe_scatter_rows(src, dest, dst);
  const int64_t N = src.size(0), P = dest.numel();
  const int64_t row_bytes = src.size(1) * static_cast<int64_t>(dtype_size(src.dtype()));
  if (P == 0 || row_bytes == 0) return;
  const int dev = src.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const bool words = row_bytes % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(src.data_ptr()) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(dst.data_ptr()) % 4 == 0;
  const int64_t units = words ? row_bytes / 4 : row_bytes;
  const int grid = grid_for(P * units, dev);
  if (words)
    moe_scatter_rows_kernel<uint32_t><<<grid, kThreads, 0, s>>>(
        static_cast<const uint32_t*>(src.data_ptr()), dest.data<int64_t>(),
        static_cast<uint32_t*>(dst.data_ptr()), P, P / N, units);
  else
    moe_scatter_rows_kernel<uint8_t><<<grid, kThreads, 0, s>>>(
        static_cast<const uint8_t*>(src.data_ptr()), dest.data<int64_t>(),
        static_cast<uint8_t*>(dst.data_ptr()), P, P / N, units);
  R1_CUDA_CHECK_LAUNCH();
}

}  // namespace

R1_REGISTER_KERNEL(moe_masked_slots, CUDA, moe_masked_slots_cuda);
R1_REGISTER_KERNEL(moe_scatter_rows, CUDA, moe_scatter_rows_cuda);

}  // namespace r1::cuda
