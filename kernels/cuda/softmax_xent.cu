// CUDA: softmax and log-softmax over the last dim (forward from x, backward from the output),
// and cross-entropy from logits (forward: loss and lse per row; backward: dlogits from the
// saved lse). Contracts in engine/kernels.h; the CPU versions (kernels/cpu/softmax.cc,
// kernels/cpu/cross_entropy.cc) are the reference (tests/test_cuda_model_ops.cc).
// x, y, logits f32 or bf16 (uint16_t bits), fp32 math; loss, lse, dloss f32 (stat_dtype).
//
// One group of tpr threads per row, tpr a power of two (32..512) chosen from V alone; rows
// of short V pack 256 / tpr to a block. Rows are read in 16-byte chunks (4 f32, 8 bf16);
// thread `lane` owns chunks lane, lane + tpr, ... The max and the sum of exponentials are
// formed online in one pass (per chunk: the chunk max, one rescale of the running sum, then
// the chunk's exponentials), so cross-entropy reads the logits once forward and once
// backward and allocates nothing of size (N, V). Reduction order depends on V only (batch
// invariance, DESIGN.md): per-thread in chunk order, then a fixed tree.
//
// Ceiling: HBM bandwidth (H200 ~4.8 TB/s); cross-entropy forward reads N V elements, backward
// reads and writes them. softmax_forward reads the row twice (the second read from L2 while
// the row is resident). Measured: bench/results (nvidia-h200-*).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

// ---- row reductions --------------------------------------------------------------------

// A running (max, sum of exp(x - max)) pair. merge is commutative bit for bit (explicit
// _rn operations: an FMA contraction would round s_a e_a + s_b e_b differently from
// s_b e_b + s_a e_a), so both lanes of a butterfly step agree.
struct MaxSum {
  float m, s;
};

__device__ inline MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, a.s + b.s};  // 0, or NaN from a NaN in a masked step
  return {m, __fadd_rn(__fmul_rn(a.s, __expf(a.m - m)), __fmul_rn(b.s, __expf(b.m - m)))};
}

__device__ inline MaxSum shfl_xor(MaxSum v, int k) {
  return {__shfl_xor_sync(0xffffffffu, v.m, k), __shfl_xor_sync(0xffffffffu, v.s, k)};
}

struct Merge {
  __device__ MaxSum operator()(MaxSum a, MaxSum b) const { return merge(a, b); }
};

// A row is walked in steps of RowChunks (launch.cuh): kRowChunks<T> loads in flight per
// thread before any math. Measured on an H200 (bench_cuda_kernels, N = 4096 bf16 rows): one
// chunk per step left the cross-entropy forward at 0.43 of the copy bandwidth at V = 129280
// and softmax at 0.32 at V = 32768, latency-bound on the exp chain.

// max that returns NaN if either input is NaN (max.NaN.f32, sm_80+; fmaxf would skip it):
// the row reductions' max, so that a NaN in a step reaches the sum even when everything else
// in the step is -inf (the early return below would drop it otherwise). The same instruction
// and result as fmaxf for all other inputs.
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// acc := acc merged with the step's elements: one max over the step, one rescale of acc.
// A step of only -inf while acc is empty (m = -inf) leaves acc as it is, the sum 0: exp(-inf -
// (-inf)) would be NaN, which the unpredicated path computed before 2026-12-01 (a row whose
// first step of a thread was all -inf, masked logits, came out NaN). A NaN anywhere makes m
// NaN (fmax_nan), so it is never mistaken for such a step.
template <class T, int C>
__device__ inline void accumulate_step(MaxSum& acc, const RowChunks<T, C>& st) {
  constexpr int kV = kVec<T>;
  bool full = true;  // every chunk whole: the loops below need no per-element predicate
#pragma unroll
  for (int u = 0; u < C; ++u) full = full && st.cnt[u] == kV;
  float cm = -INFINITY;
  if (full) {
#pragma unroll
    for (int u = 0; u < C; ++u)
#pragma unroll
      for (int k = 0; k < kV; ++k) cm = fmax_nan(cm, st.at(u, k));
    const float m = fmax_nan(acc.m, cm);
    if (m == -INFINITY) return;
    float cs = 0;
#pragma unroll
    for (int u = 0; u < C; ++u)
#pragma unroll
      for (int k = 0; k < kV; ++k) cs += __expf(st.at(u, k) - m);  // the same order as below
    acc.s = acc.s * __expf(acc.m - m) + cs;
    acc.m = m;
    return;
  }
#pragma unroll
  for (int u = 0; u < C; ++u)
#pragma unroll
    for (int k = 0; k < kV; ++k)
      if (k < st.cnt[u]) cm = fmax_nan(cm, st.at(u, k));
  const float m = fmax_nan(acc.m, cm);
  if (m == -INFINITY) return;  // nothing but -inf so far: the sum stays 0
  float cs = 0;
#pragma unroll
  for (int u = 0; u < C; ++u)
#pragma unroll
    for (int k = 0; k < kV; ++k)
      if (k < st.cnt[u]) cs += __expf(st.at(u, k) - m);
  acc.s = acc.s * __expf(acc.m - m) + cs;  // exp(-inf) = 0 on the first step
  acc.m = m;
}

// The row's (max, sum exp(x - max)) in one pass, on all tpr threads of the group. The order
// of the sums depends on V (and tpr, a function of V) only: batch invariant.
template <class T, int C = kRowChunks<T>>
__device__ MaxSum row_max_sumexp(const T* xr, int64_t V, bool live, int lane, int tpr,
                                 MaxSum* smem) {
  constexpr int kV = kVec<T>;
  MaxSum acc{-INFINITY, 0.0f};
  const int64_t stride = int64_t{tpr} * kV * C;
  for (int64_t base = int64_t{lane} * kV; live && base < V; base += stride) {
    RowChunks<T, C> st;
    load_row_chunks(xr, base, V, tpr, st);
    accumulate_step(acc, st);
  }
  return group_reduce(acc, Merge{}, smem, tpr);
}

// Launch shape for a per-row kernel over rows of V elements of T.
struct RowLaunch {
  int tpr;        // threads per row
  unsigned grid;  // blocks
  int block;      // threads per block (tpr * rows per block)
};

template <class T>
RowLaunch row_launch(int64_t N, int64_t V, int chunks_per_thread = kRowChunks<T>,
                     int max_tpr = kMaxRowThreads) {
  const int tpr = row_threads_capped((V + kVec<T> - 1) / kVec<T>, chunks_per_thread, max_tpr);
  const int rows = tpr >= kThreads ? 1 : kThreads / tpr;
  return {tpr, static_cast<unsigned>((N + rows - 1) / rows), tpr * rows};
}

// This thread's row (maybe past N: such threads only join the syncs) and lane in it.
__device__ inline int64_t group_row(int tpr) {
  return int64_t{blockIdx.x} * (blockDim.x / tpr) + threadIdx.x / tpr;
}

// ---- softmax -----------------------------------------------------------------------------

// x (N, V) -> y (N, V): softmax, or log-softmax when kLog. Pass 1 online max/sum-exp, pass 2
// writes y = exp(x - m) / s or x - (m + log s). When the row fits in one step per thread
// (V <= tpr * kV * kRowChunks<T>: V up to 65536 bf16 / 16384 f32) pass 2 uses the step still
// in registers instead of reading the row again; the sums are the same either way.
template <class T, bool kLog>
__global__ void __launch_bounds__(kMaxRowThreads)
    softmax_forward_kernel(const T* x, T* y, int64_t N, int64_t V, int tpr) {
  constexpr int kV = kVec<T>;
  __shared__ MaxSum smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  const bool live = n < N;
  const T* xr = x + (live ? n : 0) * V;
  const int64_t stride = int64_t{tpr} * kV * RowChunks<T>::kC;
  if (V <= stride) {  // uniform over the block: V and tpr are
    RowChunks<T> st;
    MaxSum acc{-INFINITY, 0.0f};
    if (live) {
      load_row_chunks(xr, int64_t{lane} * kV, V, tpr, st);
      accumulate_step(acc, st);
    }
    const MaxSum ms = group_reduce(acc, Merge{}, smem, tpr);
    if (!live) return;
    const float lse = ms.m + logf(ms.s), inv = 1.0f / ms.s;
    T* yr = y + n * V;
#pragma unroll
    for (int u = 0; u < RowChunks<T>::kC; ++u) {
      if (st.cnt[u] == 0) continue;
      float out[kV];
#pragma unroll
      for (int k = 0; k < kV; ++k)
        out[k] = kLog ? st.at(u, k) - lse : __expf(st.at(u, k) - ms.m) * inv;
      store_chunk(yr, int64_t{lane} * kV + int64_t{u} * tpr * kV, V, out);
    }
    return;
  }
  const MaxSum ms = row_max_sumexp(xr, V, live, lane, tpr, smem);
  if (!live) return;
  const float lse = ms.m + logf(ms.s), inv = 1.0f / ms.s;
  T* yr = y + n * V;
  for (int64_t i0 = int64_t{lane} * kV; i0 < V; i0 += int64_t{tpr} * kV) {
    float f[kV];
    load_chunk(xr, i0, V, f);
#pragma unroll
    for (int k = 0; k < kV; ++k) f[k] = kLog ? f[k] - lse : __expf(f[k] - ms.m) * inv;
    store_chunk(yr, i0, V, f);
  }
}

// y, dy (N, V) -> dx (N, V): softmax dx = y (dy - sum(dy y)); log-softmax
// dx = dy - exp(y) sum(dy).
template <class T, bool kLog>
__global__ void __launch_bounds__(kMaxRowThreads)
    softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t N, int64_t V, int tpr) {
  constexpr int kV = kVec<T>;
  __shared__ float smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  const bool live = n < N;
  const T* yr = y + (live ? n : 0) * V;
  const T* gr = dy + (live ? n : 0) * V;
  float s = 0;
  if (V <= int64_t{tpr} * kV * RowChunks<T>::kC) {  // the row fits in registers: read y, dy once
    RowChunks<T> ys, gs;
    if (live) {
      load_row_chunks(yr, int64_t{lane} * kV, V, tpr, ys);
      load_row_chunks(gr, int64_t{lane} * kV, V, tpr, gs);
#pragma unroll
      for (int u = 0; u < RowChunks<T>::kC; ++u)
#pragma unroll
        for (int k = 0; k < kV; ++k)
          if (k < ys.cnt[u]) s += kLog ? gs.at(u, k) : gs.at(u, k) * ys.at(u, k);
    }
    s = group_reduce(s, Add{}, smem, tpr);
    if (!live) return;
#pragma unroll
    for (int u = 0; u < RowChunks<T>::kC; ++u) {
      if (ys.cnt[u] == 0) continue;
      float out[kV];
#pragma unroll
      for (int k = 0; k < kV; ++k)
        out[k] = kLog ? gs.at(u, k) - __expf(ys.at(u, k)) * s : ys.at(u, k) * (gs.at(u, k) - s);
      store_chunk(dx + n * V, int64_t{lane} * kV + int64_t{u} * tpr * kV, V, out);
    }
    return;
  }
  for (int64_t i0 = int64_t{lane} * kV; live && i0 < V; i0 += int64_t{tpr} * kV) {
    float yf[kV], gf[kV];
    const int cnt = load_chunk(yr, i0, V, yf);
    load_chunk(gr, i0, V, gf);
#pragma unroll
    for (int k = 0; k < kV; ++k)
      if (k < cnt) s += kLog ? gf[k] : gf[k] * yf[k];
  }
  s = group_reduce(s, Add{}, smem, tpr);
  if (!live) return;
  T* dr = dx + n * V;
  for (int64_t i0 = int64_t{lane} * kV; i0 < V; i0 += int64_t{tpr} * kV) {
    float yf[kV], gf[kV];
    load_chunk(yr, i0, V, yf);
    load_chunk(gr, i0, V, gf);
#pragma unroll
    for (int k = 0; k < kV; ++k) gf[k] = kLog ? gf[k] - __expf(yf[k]) * s : yf[k] * (gf[k] - s);
    store_chunk(dr, i0, V, gf);
  }
}

// x (N, V) -> y (N, V).
void softmax_forward_cuda(const Tensor& x, bool log, Tensor& y) {
  R1_CHECK(x.dim() == 2 && y.shape() == x.shape() && y.dtype() == x.dtype(),
           "softmax_forward: x {}, y {}", x.str(), y.str());
  const int64_t N = x.size(0), V = x.size(1);
  if (N == 0 || V == 0) return;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(x.dtype(), "softmax_forward", [&](auto tag) {
    using T = decltype(tag);
    const RowLaunch l = row_launch<T>(N, V);
    const T* px = static_cast<const T*>(x.data_ptr());
    T* py = static_cast<T*>(y.data_ptr());
    if (log) softmax_forward_kernel<T, true><<<l.grid, l.block, 0, s>>>(px, py, N, V, l.tpr);
    else softmax_forward_kernel<T, false><<<l.grid, l.block, 0, s>>>(px, py, N, V, l.tpr);
    R1_CUDA_CHECK_LAUNCH();
  });
}

// y, dy (N, V) -> dx (N, V).
void softmax_backward_cuda(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  R1_CHECK(y.dim() == 2 && dy.shape() == y.shape() && dx.shape() == y.shape() &&
               dy.dtype() == y.dtype() && dx.dtype() == y.dtype(),
           "softmax_backward: y {}, dy {}, dx {}", y.str(), dy.str(), dx.str());
  const int64_t N = y.size(0), V = y.size(1);
  if (N == 0 || V == 0) return;
  const int dev = y.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    const RowLaunch l = row_launch<T>(N, V);
    const T* py = static_cast<const T*>(y.data_ptr());
    const T* pg = static_cast<const T*>(dy.data_ptr());
    T* pd = static_cast<T*>(dx.data_ptr());
    if (log) softmax_backward_kernel<T, true><<<l.grid, l.block, 0, s>>>(py, pg, pd, N, V, l.tpr);
    else softmax_backward_kernel<T, false><<<l.grid, l.block, 0, s>>>(py, pg, pd, N, V, l.tpr);
    R1_CUDA_CHECK_LAUNCH();
  });
}

// ---- cross-entropy -----------------------------------------------------------------------

// logits (N, V), targets (N) int -> loss (N), lse (N) f32. One pass over the row; the
// target's logit is one extra scalar load by the row's first thread.
template <class T, class I, int C, int MinBlocks>
__global__ void __launch_bounds__(kMaxRowThreads, MinBlocks)
    cross_entropy_forward_kernel(const T* logits, const I* targets, int64_t ignore_index,
                                 float* loss, float* lse, int64_t N, int64_t V, int tpr) {
  __shared__ MaxSum smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  const bool live = n < N;
  const T* xr = logits + (live ? n : 0) * V;
  const MaxSum ms = row_max_sumexp<T, C>(xr, V, live, lane, tpr, smem);
  if (!live || lane != 0) return;
  const float z = ms.m + logf(ms.s);
  const int64_t t = static_cast<int64_t>(targets[n]);
  lse[n] = z;
  // Targets were checked on the host; the guard only keeps a bad one from reading outside.
  loss[n] = t == ignore_index ? 0.0f : (t >= 0 && t < V ? z - to_f32(xr[t]) : NAN);
}

// dlogits (N, V) = dloss[n] (exp(logit - lse[n]) - onehot(target)), 0 on ignored rows, NaN
// on a row whose target is outside [0, V) (the forward rejected those on the host). No
// reduction: the row's threads just stream it.
template <class T, class I>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_backward_kernel(const T* logits, const I* targets, const float* lse,
                                  const float* dloss, int64_t ignore_index, T* dlogits,
                                  int64_t N, int64_t V, int tpr) {
  constexpr int kV = kVec<T>;
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  if (n >= N) return;
  const int64_t t = static_cast<int64_t>(targets[n]);
  const T* xr = logits + n * V;
  T* dr = dlogits + n * V;
  const bool ignored = t == ignore_index, bad = !ignored && (t < 0 || t >= V);
  const float z = lse[n], g = dloss[n];
  for (int64_t i0 = int64_t{lane} * kV; i0 < V; i0 += int64_t{tpr} * kV) {
    float f[kV];
    if (ignored) {
#pragma unroll
      for (int k = 0; k < kV; ++k) f[k] = 0.0f;
    } else {
      load_chunk(xr, i0, V, f);
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        f[k] = g * __expf(f[k] - z);
        if (i0 + k == t) f[k] -= g;
        if (bad) f[k] = NAN;
      }
    }
    store_chunk(dr, i0, V, f);
  }
}

void check_index_dtype(const Tensor& t, const char* op) {
  R1_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64,
           "{}: targets must be i32 or i64, got {}", op, dtype_name(t.dtype()));
}

// Calls fn(int32_t{}) or fn(int64_t{}) after the targets' dtype.
template <class Fn>
void dispatch_index(DType t, Fn&& fn) {
  if (t == DType::I32) fn(int32_t{});
  else fn(int64_t{});
}

// logits (N, V), targets (N) int -> loss (N), lse (N) f32. The targets are read back and
// checked on the host (N ints; the op reads them back anyway for the mean's count).
void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& targets,
                                int64_t ignore_index, Tensor& loss, Tensor& lse) {
  const DType sd = stat_dtype(logits.dtype());
  R1_CHECK(logits.dim() == 2 && targets.numel() == logits.size(0) &&
               loss.numel() == logits.size(0) && lse.numel() == logits.size(0) &&
               loss.dtype() == sd && lse.dtype() == sd,
           "cross_entropy_forward: logits {}, targets {}, loss {}, lse {} (loss and lse must "
           "be {})", logits.str(), targets.str(), loss.str(), lse.str(), dtype_name(sd));
  check_index_dtype(targets, "cross_entropy_forward");
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  const std::vector<int64_t> tv = targets.to_int_vector();
  for (int64_t n = 0; n < N; ++n)
    R1_CHECK(tv[n] == ignore_index || (tv[n] >= 0 && tv[n] < V),
             "cross_entropy_forward: target {} at row {} outside [0, {}) and not ignore_index {}",
             tv[n], n, V, ignore_index);
  const int dev = logits.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(targets.dtype(), [&](auto itag) {
      using I = decltype(itag);
      constexpr RowKernel kKernel = RowKernel::CrossEntropyForward;
      dispatch_row_variant<T>(kKernel, [&]<int C, int MinBlocks>(int max_tpr) {
        const RowLaunch l = row_launch<T>(N, V, C, max_tpr);
        cross_entropy_forward_kernel<T, I, C, MinBlocks><<<l.grid, l.block, 0, s>>>(
            static_cast<const T*>(logits.data_ptr()), static_cast<const I*>(targets.data_ptr()),
            ignore_index, loss.data<float>(), lse.data<float>(), N, V, l.tpr);
        R1_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

// logits (N, V), targets (N), lse, dloss (N) f32 -> dlogits (N, V) of the logits' dtype.
void cross_entropy_backward_cuda(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                 const Tensor& dloss, int64_t ignore_index, Tensor& dlogits) {
  const DType sd = stat_dtype(logits.dtype());
  R1_CHECK(logits.dim() == 2 && targets.numel() == logits.size(0) &&
               lse.numel() == logits.size(0) && dloss.numel() == logits.size(0) &&
               dlogits.shape() == logits.shape() && lse.dtype() == sd && dloss.dtype() == sd &&
               dlogits.dtype() == logits.dtype(),
           "cross_entropy_backward: logits {}, targets {}, lse {}, dloss {}, dlogits {} (lse "
           "and dloss must be {})", logits.str(), targets.str(), lse.str(), dloss.str(),
           dlogits.str(), dtype_name(sd));
  check_index_dtype(targets, "cross_entropy_backward");
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0 || V == 0) return;
  const int dev = logits.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(targets.dtype(), [&](auto itag) {
      using I = decltype(itag);
      const RowLaunch l = row_launch<T>(N, V);
      cross_entropy_backward_kernel<T, I><<<l.grid, l.block, 0, s>>>(
          static_cast<const T*>(logits.data_ptr()), static_cast<const I*>(targets.data_ptr()),
          lse.data<float>(), dloss.data<float>(), ignore_index,
          static_cast<T*>(dlogits.data_ptr()), N, V, l.tpr);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

R1_REGISTER_KERNEL(softmax_forward, CUDA, softmax_forward_cuda);
R1_REGISTER_KERNEL(softmax_backward, CUDA, softmax_backward_cuda);
R1_REGISTER_KERNEL(cross_entropy_forward, CUDA, cross_entropy_forward_cuda);
R1_REGISTER_KERNEL(cross_entropy_backward, CUDA, cross_entropy_backward_cuda);

}  // namespace r1::cuda
