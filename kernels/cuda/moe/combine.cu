// CUDA: moe_combine, the MoE layer's weighted sum of its experts' output rows (contract in
// engine/kernels_moe.h; kernels/cpu/moe.cc is the reference, tests/test_moe_route.cc).
// f32 or bf16 (uint16_t bits) data, fp32 math, at most kMoeMaxExpertsCuda expert outputs
// (their base pointers travel by value in the launch parameters).
//
// Forward: a thread per output element y[t, d] (grid-stride), its K pairs in k order, each
// product rounded and then added (__fmul_rn / __fadd_rn: no FMA contraction), as the CPU does:
// in f32 the bits equal the CPU's. Backward: dys rows element-wise (each row written by its
// one pair); dw: a warp per pair, lane l sums d = l, l + 32, ... in order and the warp adds the
// 32 partials in a fixed butterfly, so a pair's dw depends on D alone (not the CPU's order:
// equal within rounding). Memory bound; not yet measured.
#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_moe.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kMaxParts = static_cast<int>(kMoeMaxExpertsCuda);

template <class T>
struct Parts {
  T* p[kMaxParts];
};

template <class T>
__global__ void moe_combine_forward_kernel(Parts<const T> ys, const T* w, const int64_t* part,
                                           const int64_t* row, T* y, int64_t N, int64_t K,
                                           int64_t D) {
  for (int64_t i = global_thread(); i < N * D; i += grid_threads()) {
    const int64_t t = i / D, d = i - t * D;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t p = t * K + k;
      const int64_t r = row ? row[p] : t;
      const float prod = __fmul_rn(to_f32(w[p]), to_f32(ys.p[part[p]][r * D + d]));
      acc = k == 0 ? prod : __fadd_rn(acc, prod);
    }
    y[i] = from_f32<T>(acc);
  }
}

template <class T>
__global__ void moe_combine_backward_rows_kernel(Parts<T> dys, const T* w, const int64_t* part,
                                                 const int64_t* row, const T* dy, int64_t P,
                                                 int64_t K, int64_t D) {
  for (int64_t i = global_thread(); i < P * D; i += grid_threads()) {
    const int64_t p = i / D, d = i - p * D;
    dys.p[part[p]][row[p] * D + d] = from_f32<T>(__fmul_rn(to_f32(w[p]), to_f32(dy[(p / K) * D + d])));
  }
}

template <class T>
__global__ void moe_combine_backward_w_kernel(Parts<const T> ys, const int64_t* part,
                                              const int64_t* row, const T* dy, T* dw, int64_t P,
                                              int64_t K, int64_t D) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t warps = grid_threads() / 32;
  for (int64_t p = global_thread() / 32; p < P; p += warps) {
    const T* src = ys.p[part[p]] + row[p] * D;
    const T* g = dy + (p / K) * D;
    float s = 0.0f;
    for (int64_t d = lane; d < D; d += 32) s = __fadd_rn(s, __fmul_rn(to_f32(g[d]), to_f32(src[d])));
#pragma unroll
    for (int k = 16; k > 0; k /= 2) s += __shfl_xor_sync(0xffffffffu, s, k);
    if (lane == 0) dw[p] = from_f32<T>(s);
  }
}

void check_combine(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                   const Tensor& row, int64_t N, int64_t D, const char* op) {
  // row undefined (forward only): pair p reads row p / K, its own token's.
  R1_CHECK(!ys.empty() && static_cast<int64_t>(ys.size()) <= kMoeMaxExpertsCuda && w.dim() == 1 &&
               w.is_contiguous() && part.dtype() == DType::I64 && part.is_contiguous() &&
               part.numel() == w.numel() &&
               (!row.defined() || (row.dtype() == DType::I64 && row.is_contiguous() &&
                                   row.numel() == w.numel())) &&
               N > 0 && w.numel() % N == 0,
           "{}: {} expert outputs (at most {}), w {}, part {}, row {} for {} tokens", op,
           ys.size(), kMoeMaxExpertsCuda, w.str(), part.str(), row.str(), N);
  for (const Tensor& y : ys)
    R1_CHECK(y.dim() == 2 && y.size(1) == D && y.is_contiguous() && y.dtype() == w.dtype() &&
                 y.device() == w.device(),
             "{}: expert output {} must be a contiguous (n, {}) {} on {}", op, y.str(), D,
             dtype_name(w.dtype()), w.device().str());
}

unsigned blocks_for(int64_t work) {
  return static_cast<unsigned>(std::min<int64_t>((work + kThreads - 1) / kThreads, 65535));
}

void moe_combine_forward_cuda(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                              const Tensor& row, Tensor& y) {
  const int64_t N = y.size(0), D = y.size(1), P = w.numel();
  check_combine(ys, w, part, row, N, D, "moe_combine");
  R1_CHECK(y.is_contiguous() && y.dtype() == w.dtype(), "moe_combine: y {}", y.str());
  if (N * D == 0) return;
  const int dev = w.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(w.dtype(), "moe_combine", [&](auto tag) {
    using T = decltype(tag);
    Parts<const T> parts{};
    for (size_t j = 0; j < ys.size(); ++j) parts.p[j] = static_cast<const T*>(ys[j].data_ptr());
    moe_combine_forward_kernel<T><<<blocks_for(N * D), kThreads, 0, s>>>(
        parts, static_cast<const T*>(w.data_ptr()), static_cast<const int64_t*>(part.data_ptr()),
        row.defined() ? static_cast<const int64_t*>(row.data_ptr()) : nullptr,
        static_cast<T*>(y.data_ptr()), N, P / N, D);
    R1_CUDA_CHECK_LAUNCH();
  });
}

void moe_combine_backward_cuda(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                               const Tensor& row, const Tensor& dy, std::vector<Tensor>& dys,
                               Tensor& dw) {
  const int64_t N = dy.size(0), D = dy.size(1), P = w.numel();
  check_combine(ys, w, part, row, N, D, "moe_combine backward");
  R1_CHECK(row.defined(), "moe_combine backward: needs the rows of the pairs");
  R1_CHECK(dy.is_contiguous() && dy.dtype() == w.dtype() && dys.size() == ys.size(),
           "moe_combine backward: dy {} and {} grads for {} experts", dy.str(), dys.size(),
           ys.size());
  for (size_t j = 0; j < ys.size(); ++j)
    R1_CHECK(dys[j].shape() == ys[j].shape() && dys[j].is_contiguous() &&
                 dys[j].dtype() == w.dtype(),
             "moe_combine backward: grad {} for expert output {}", dys[j].str(), ys[j].str());
  R1_CHECK(!dw.defined() || (dw.numel() == P && dw.is_contiguous() && dw.dtype() == w.dtype()),
           "moe_combine backward: dw {} for {} pairs", dw.str(), P);
  if (P * D == 0) return;
  const int dev = w.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(w.dtype(), "moe_combine backward", [&](auto tag) {
    using T = decltype(tag);
    Parts<T> grads{};
    Parts<const T> parts{};
    for (size_t j = 0; j < ys.size(); ++j) {
      grads.p[j] = static_cast<T*>(dys[j].data_ptr());
      parts.p[j] = static_cast<const T*>(ys[j].data_ptr());
    }
    const auto* pp = static_cast<const int64_t*>(part.data_ptr());
    const auto* pr = static_cast<const int64_t*>(row.data_ptr());
    const auto* g = static_cast<const T*>(dy.data_ptr());
    moe_combine_backward_rows_kernel<T><<<blocks_for(P * D), kThreads, 0, s>>>(
        grads, static_cast<const T*>(w.data_ptr()), pp, pr, g, P, P / N, D);
    R1_CUDA_CHECK_LAUNCH();
    if (dw.defined()) {
      moe_combine_backward_w_kernel<T><<<blocks_for(P * 32), kThreads, 0, s>>>(
          parts, pp, pr, g, static_cast<T*>(dw.data_ptr()), P, P / N, D);
      R1_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(moe_combine_forward, CUDA, moe_combine_forward_cuda);
R1_REGISTER_KERNEL(moe_combine_backward, CUDA, moe_combine_backward_cuda);

}  // namespace r1::cuda
