// CUDA: the kernels of token_logprobs (contracts in engine/kernels_logprob.h);
// kernels/cpu/logprob.cc is the reference (tests/test_token_logprobs.cc). logits f32 or bf16
// (uint16_t bits), fp32 math with expf (the op's logp feeds a policy ratio, so the few-ulp
// error of __expf is not worth the saving here); stats, lse, dlogp, logp, entropy f32.
//
// Per-row kernels in the layout of kernels/cuda/softmax_xent.cu: one group of tpr threads per
// row of the chunk, tpr a power of two (32..512) chosen from C alone, rows of short C packed
// 256 / tpr to a block; rows read in 16-byte chunks (4 f32, 8 bf16), thread `lane` owning
// chunks lane, lane + tpr, ... The update keeps a running (max, sum exp(l - m),
// sum exp(l - m) (l - m)) per thread in chunk order, then merges the group's states in a
// fixed tree (group_reduce), so a row's bits depend on C only (batch invariance, DESIGN.md).
//
// Ceiling: HBM bandwidth, and it hardly matters: per chunk the update reads T C logits and
// the backward reads and writes them once, next to the gemm's 2 T C D flops (D = 7168 for
// DeepSeek-V3) that produce them. Not yet measured.
#include <cmath>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_logprob.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// A row's (max, sum exp(l - m), sum exp(l - m) (l - m)) over the logits merged so far.
struct RowState {
  float m, s, e;
};

// exp(m - M) s and exp(m - M) (e + (m - M) s) with explicit _rn operations (no FMA
// contraction), so merge(a, b) and merge(b, a) agree bit for bit and both lanes of a
// butterfly step hold the same state. An empty side (m = -inf) contributes 0.
__device__ inline void rescaled(RowState a, float M, float& s, float& e) {
  if (a.m == -INFINITY) {
    s = e = 0.0f;
    return;
  }
  const float d = __fsub_rn(a.m, M), f = expf(d);
  s = __fmul_rn(a.s, f);
  e = __fmul_rn(f, __fadd_rn(a.e, __fmul_rn(d, a.s)));
}

__device__ inline RowState merge(RowState a, RowState b) {
  const float M = fmaxf(a.m, b.m);
  if (M == -INFINITY) return {M, 0.0f, 0.0f};
  float sa, ea, sb, eb;
  rescaled(a, M, sa, ea);
  rescaled(b, M, sb, eb);
  return {M, __fadd_rn(sa, sb), __fadd_rn(ea, eb)};
}

// The state of up to kV logits (the first cnt of f).
template <int kV>
__device__ inline RowState chunk_state(const float (&f)[kV], int cnt) {
  RowState c{-INFINITY, 0.0f, 0.0f};
#pragma unroll
  for (int k = 0; k < kV; ++k)
    if (k < cnt) c.m = fmaxf(c.m, f[k]);
#pragma unroll
  for (int k = 0; k < kV; ++k)
    if (k < cnt) {
      const float d = f[k] - c.m, p = expf(d);
      c.s += p;
      c.e += p * d;
    }
  return c;
}

// group_reduce (launch.cuh) over RowState: its lane exchange and its (commutative) merge.
__device__ inline RowState shfl_xor(RowState v, int k) {
  return {__shfl_xor_sync(kFull, v.m, k), __shfl_xor_sync(kFull, v.s, k),
          __shfl_xor_sync(kFull, v.e, k)};
}
struct Merge {
  __device__ RowState operator()(RowState a, RowState b) const { return merge(a, b); }
};

// Launch shape for a per-row kernel over rows of C elements of T.
struct RowLaunch {
  int tpr;        // threads per row
  unsigned grid;  // blocks
  int block;      // threads per block (tpr * rows per block)
};

template <class T>
RowLaunch row_launch(int64_t N, int64_t C) {
  const int tpr = row_threads((C + kVec<T> - 1) / kVec<T>);
  const int rows = tpr >= kThreads ? 1 : kThreads / tpr;
  return {tpr, static_cast<unsigned>((N + rows - 1) / rows), tpr * rows};
}

// This thread's row (maybe past N: such threads only join the reduction) and lane in it.
__device__ inline int64_t group_row(int tpr) {
  return int64_t{blockIdx.x} * (blockDim.x / tpr) + threadIdx.x / tpr;
}

// logits (N, C), tokens (N), stats (N, 4) f32: merges the chunk into each row's state and
// picks up the target's logit when it falls in [offset, offset + C).
template <class T, class I>
__global__ void chunk_update_kernel(const T* logits, const I* tokens, int64_t offset,
                                    float* stats, int64_t N, int64_t C, int tpr) {
  constexpr int kV = kVec<T>;
  __shared__ RowState smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  const bool live = n < N;
  const T* xr = logits + (live ? n : 0) * C;
  RowState acc{-INFINITY, 0.0f, 0.0f};
  for (int64_t i0 = int64_t{lane} * kV; live && i0 < C; i0 += int64_t{tpr} * kV) {
    float f[kV];
    const int cnt = load_chunk(xr, i0, C, f);
    acc = merge(acc, chunk_state(f, cnt));
  }
  const RowState r = group_reduce(acc, Merge{}, smem, tpr);
  if (!live || lane != 0) return;
  float* st = stats + n * 4;
  const RowState m = merge(RowState{st[0], st[1], st[3]}, r);
  st[0] = m.m;
  st[1] = m.s;
  st[3] = m.e;
  const int64_t j = static_cast<int64_t>(tokens[n]) - offset;
  if (j >= 0 && j < C) st[2] = to_f32(xr[j]);
}

// stats (N, 4) -> logp, entropy, lse (N), all f32.
__global__ void finalize_kernel(const float* stats, float* logp, float* entropy, float* lse,
                                int64_t N) {
  for (int64_t n = global_thread(); n < N; n += grid_threads()) {
    const float* st = stats + n * 4;
    const float log_s = logf(st[1]), z = st[0] + log_s;
    lse[n] = z;
    logp[n] = st[2] - z;
    entropy[n] = log_s - st[3] / st[1];
  }
}

// dlogits (N, C) = dlogp[n] inv_t (onehot(tokens[n] - offset) - exp(l - lse[n])). A thread
// reads each of its 16-byte chunks before writing it back, so dlogits may alias logits.
template <class T, class I>
__global__ void chunk_backward_kernel(const T* logits, const I* tokens, int64_t offset,
                                      const float* lse, const float* dlogp, float inv_t,
                                      T* dlogits, int64_t N, int64_t C, int tpr) {
  constexpr int kV = kVec<T>;
  const int lane = threadIdx.x % tpr;
  const int64_t n = group_row(tpr);
  if (n >= N) return;
  const int64_t j = static_cast<int64_t>(tokens[n]) - offset;
  const float z = lse[n], g = dlogp[n] * inv_t;
  const T* xr = logits + n * C;
  T* dr = dlogits + n * C;
  for (int64_t i0 = int64_t{lane} * kV; i0 < C; i0 += int64_t{tpr} * kV) {
    float f[kV];
    load_chunk(xr, i0, C, f);
#pragma unroll
    for (int k = 0; k < kV; ++k) f[k] = g * ((i0 + k == j ? 1.0f : 0.0f) - expf(f[k] - z));
    store_chunk(dr, i0, C, f);
  }
}

bool cuda_float(DType t) { return t == DType::F32 || t == DType::BF16; }

// Calls fn(int32_t{}) or fn(int64_t{}) after the tokens' dtype (checked before).
template <class Fn>
void dispatch_index(DType t, Fn&& fn) {
  if (t == DType::I32) fn(int32_t{});
  else fn(int64_t{});
}

void logprob_chunk_update_cuda(const Tensor& logits, const Tensor& tokens, int64_t offset,
                               Tensor& stats) {
  check_logprob_chunk_update(logits, tokens, stats, cuda_float(logits.dtype()));
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0 || C == 0) return;
  const int dev = logits.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(logits.dtype(), "logprob_chunk_update", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(tokens.dtype(), [&](auto itag) {
      using I = decltype(itag);
      const RowLaunch l = row_launch<T>(N, C);
      chunk_update_kernel<T, I><<<l.grid, l.block, 0, s>>>(
          static_cast<const T*>(logits.data_ptr()), static_cast<const I*>(tokens.data_ptr()),
          offset, stats.data<float>(), N, C, l.tpr);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

void logprob_finalize_cuda(const Tensor& stats, Tensor& logp, Tensor& entropy, Tensor& lse) {
  check_logprob_finalize(stats, logp, entropy, lse, stats.dtype() == DType::F32);
  const int64_t N = stats.size(0);
  if (N == 0) return;
  const int dev = stats.device().index;
  DeviceGuard g(dev);
  finalize_kernel<<<grid_for(N, dev), kThreads, 0, current_stream(dev)>>>(
      stats.data<float>(), logp.data<float>(), entropy.data<float>(), lse.data<float>(), N);
  R1_CUDA_CHECK_LAUNCH();
}

void logprob_chunk_backward_cuda(const Tensor& logits, const Tensor& tokens, int64_t offset,
                                 const Tensor& lse, const Tensor& dlogp, double inv_temperature,
                                 Tensor& dlogits) {
  check_logprob_chunk_backward(logits, tokens, lse, dlogp, dlogits, cuda_float(logits.dtype()));
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0 || C == 0) return;
  const int dev = logits.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(logits.dtype(), "logprob_chunk_backward", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(tokens.dtype(), [&](auto itag) {
      using I = decltype(itag);
      const RowLaunch l = row_launch<T>(N, C);
      chunk_backward_kernel<T, I><<<l.grid, l.block, 0, s>>>(
          static_cast<const T*>(logits.data_ptr()), static_cast<const I*>(tokens.data_ptr()),
          offset, lse.data<float>(), dlogp.data<float>(), static_cast<float>(inv_temperature),
          static_cast<T*>(dlogits.data_ptr()), N, C, l.tpr);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

R1_REGISTER_KERNEL(logprob_chunk_update, CUDA, logprob_chunk_update_cuda);
R1_REGISTER_KERNEL(logprob_finalize, CUDA, logprob_finalize_cuda);
R1_REGISTER_KERNEL(logprob_chunk_backward, CUDA, logprob_chunk_backward_cuda);

}  // namespace r1::cuda
