// CUDA: the kernels of grpo_objective (contracts in engine/kernels_grpo.h);
// kernels/cpu/grpo.cc is the reference (tests/test_grpo_objective.cc). logp and the other
// per-token operands f32 (token_logprobs gives f32 logp for bf16 and f32 h, w: a bf16 logp
// never reaches this op), fp32 arithmetic with expf (the ratio's few-ulp error matters more
// than __expf's saving here), sums accumulated in f64.
//
// Deterministic by construction, no atomics:
//  - sequence_log_ratio_kernel: one block per sequence walks its token list (order) with a
//    block stride, then group_reduce merges the threads' f64 sums in a fixed tree;
//  - token_terms_kernel: block b owns tokens [b kTermsTile, (b + 1) kTermsTile), thread i
//    the ones i, i + kThreads, ...; its five f64 sums go through the same tree into one row
//    of `partials` (blocks, 5); sums_kernel, one block, reduces the rows in a fixed tree.
// The order depends on T (and the sequence lengths) only.
//
// Ceiling: HBM bandwidth over ~20 bytes per token (logp, old, ref, seq, mask in; dlogp out):
// about 20 us for a million tokens, next to the token_logprobs gemms that feed it (2 T V D
// flops). Not measured.
#include <cmath>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_grpo.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kTermsPerThread = 4;
constexpr int kTermsTile = kThreads * kTermsPerThread;  // tokens per token_terms block
constexpr int kSums = static_cast<int>(kGrpoSums);

// f64 values for group_reduce (launch.cuh), which finds these shfl_xor by argument lookup
// (a plain double would convert to its float overload).
struct F64 {
  double v;
};
__device__ inline F64 shfl_xor(F64 a, int k) { return {__shfl_xor_sync(kFull, a.v, k)}; }
struct AddF64 {
  __device__ F64 operator()(F64 a, F64 b) const { return {a.v + b.v}; }
};

struct Sums {
  double v[kSums];
};
__device__ inline Sums shfl_xor(Sums a, int k) {
#pragma unroll
  for (int i = 0; i < kSums; ++i) a.v[i] = __shfl_xor_sync(kFull, a.v[i], k);
  return a;
}
struct AddSums {
  __device__ Sums operator()(Sums a, const Sums& b) const {
#pragma unroll
    for (int i = 0; i < kSums; ++i) a.v[i] += b.v[i];
    return a;
  }
};

// One mask = 1 token (contract in engine/kernels_grpo.h), the mirror of the CPU's token_term.
struct TokenTerm {
  float l, kl, r, dlogp;
  bool low, high;
};

__device__ inline TokenTerm token_term(float lr, float A, float w, float d, float lo, float hi,
                                       float beta) {
  TokenTerm o{};
  o.r = expf(lr);
  const float rc = fminf(fmaxf(o.r, lo), hi);
  const float unclipped = o.r * A, clipped = rc * A;
  const float dpol = unclipped <= clipped ? -A * o.r : 0.0f;  // torch's subgradient
  float dkl = 0.0f;
  if (beta > 0.0f) {
    const float e = expf(d);
    o.kl = e - d - 1.0f;
    dkl = 1.0f - e;
  }
  o.l = -fminf(unclipped, clipped) + beta * o.kl;
  o.dlogp = w * (dpol + beta * dkl);
  o.low = o.r < lo && A < 0.0f;
  o.high = o.r > hi && A > 0.0f;
  return o;
}

// log_ratio[s] = mean over order[offsets[s] : offsets[s + 1]] of logp - old. Grid: S blocks.
__global__ void sequence_log_ratio_kernel(const float* logp, const float* old,
                                          const int64_t* order, const int64_t* offsets,
                                          float* log_ratio) {
  __shared__ F64 smem[kThreads / 32];
  const int64_t s = blockIdx.x, b = offsets[s], e = offsets[s + 1];
  F64 acc{0.0};
  for (int64_t k = b + threadIdx.x; k < e; k += kThreads) {
    const int64_t t = order[k];
    acc.v += static_cast<double>(logp[t] - old[t]);
  }
  const F64 r = group_reduce(acc, AddF64{}, smem, kThreads);
  if (threadIdx.x == 0) {
    const int64_t n = e - b > 1 ? e - b : 1;
    log_ratio[s] = static_cast<float>(r.v / static_cast<double>(n));
  }
}

// The per-token terms of block blockIdx.x's tile -> partials[blockIdx.x] (5 f64) and dlogp
// (when not null). ref is read only when beta > 0, seq_lr is null at the token level.
template <class I>
__global__ void token_terms_kernel(const float* logp, const float* old, const float* ref,
                                   const float* adv, const I* seq, const float* seq_lr,
                                   const uint8_t* mask, const float* seq_weight, float lo,
                                   float hi, float beta, double* partials, float* dlogp,
                                   int64_t T) {
  __shared__ Sums smem[kThreads / 32];
  Sums acc{};
  const int64_t base = int64_t{blockIdx.x} * kTermsTile + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kTermsPerThread; ++u) {
    const int64_t t = base + int64_t{u} * kThreads;
    if (t >= T) break;
    if (!mask[t]) {
      if (dlogp) dlogp[t] = 0.0f;
      continue;
    }
    const int64_t s = static_cast<int64_t>(seq[t]);
    const float lp = logp[t];
    const float lr = seq_lr ? seq_lr[s] : lp - old[t];
    const float d = beta > 0.0f ? ref[t] - lp : 0.0f;
    const float w = seq_weight[s];
    const TokenTerm o = token_term(lr, adv[s], w, d, lo, hi, beta);
    acc.v[0] += static_cast<double>(w) * static_cast<double>(o.l);
    acc.v[1] += o.kl;
    acc.v[2] += o.low ? 1.0 : 0.0;
    acc.v[3] += o.high ? 1.0 : 0.0;
    acc.v[4] += o.r;
    if (dlogp) dlogp[t] = o.dlogp;
  }
  const Sums r = group_reduce(acc, AddSums{}, smem, kThreads);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < kSums; ++i) partials[int64_t{blockIdx.x} * kSums + i] = r.v[i];
  }
}

// sums (5) = the column sums of partials (blocks, 5); one block. blocks = 0 gives zeros.
__global__ void sums_kernel(const double* partials, int64_t blocks, double* sums) {
  __shared__ Sums smem[kThreads / 32];
  Sums acc{};
  for (int64_t b = threadIdx.x; b < blocks; b += kThreads) {
#pragma unroll
    for (int i = 0; i < kSums; ++i) acc.v[i] += partials[b * kSums + i];
  }
  const Sums r = group_reduce(acc, AddSums{}, smem, kThreads);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < kSums; ++i) sums[i] = r.v[i];
  }
}

bool cuda_float(DType t) { return t == DType::F32; }

void grpo_sequence_log_ratio_cuda(const Tensor& logp, const Tensor& old_logp,
                                  const Tensor& order, const Tensor& offsets,
                                  Tensor& log_ratio) {
  check_grpo_sequence_log_ratio(logp, old_logp, order, offsets, log_ratio,
                                cuda_float(logp.dtype()));
  const int64_t S = log_ratio.numel();
  if (S == 0) return;
  const int dev = logp.device().index;
  DeviceGuard g(dev);
  sequence_log_ratio_kernel<<<static_cast<unsigned>(S), kThreads, 0, current_stream(dev)>>>(
      logp.data<float>(), old_logp.data<float>(), order.data<int64_t>(),
      offsets.data<int64_t>(), log_ratio.data<float>());
  R1_CUDA_CHECK_LAUNCH();
}

void grpo_token_terms_cuda(const GrpoTermsArgs& a, Tensor& sums, Tensor& dlogp) {
  check_grpo_token_terms(a, sums, dlogp, cuda_float(a.logp.dtype()));
  const int64_t T = a.logp.size(0);
  const int dev = a.logp.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const int64_t blocks = (T + kTermsTile - 1) / kTermsTile;
  // Freed when this returns: stream order keeps it from reuse before the kernels below are
  // done (engine/cuda/caching_allocator.h).
  Tensor partials = Tensor::empty({std::max<int64_t>(blocks, 1) * kSums}, DType::F64,
                                  a.logp.device());
  const float lo = static_cast<float>(1.0 - a.epsilon_low);
  const float hi = static_cast<float>(1.0 + a.epsilon_high);
  const float beta = static_cast<float>(a.beta);
  auto launch = [&](auto itag) {
    using I = decltype(itag);
    token_terms_kernel<I><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        a.logp.data<float>(), a.old_logp.data<float>(),
        a.beta > 0 ? a.ref_logp.data<float>() : nullptr, a.advantages.data<float>(),
        static_cast<const I*>(a.seq.data_ptr()),
        a.seq_log_ratio.defined() ? a.seq_log_ratio.data<float>() : nullptr,
        a.mask.data<uint8_t>(), a.seq_weight.data<float>(), lo, hi, beta,
        partials.data<double>(), dlogp.defined() ? dlogp.data<float>() : nullptr, T);
    R1_CUDA_CHECK_LAUNCH();
  };
  if (blocks > 0) {
    if (a.seq.dtype() == DType::I32) launch(int32_t{});
    else launch(int64_t{});
  }
  sums_kernel<<<1, kThreads, 0, s>>>(partials.data<double>(), blocks, sums.data<double>());
  R1_CUDA_CHECK_LAUNCH();
}

}  // namespace

R1_REGISTER_KERNEL(grpo_sequence_log_ratio, CUDA, grpo_sequence_log_ratio_cuda);
R1_REGISTER_KERNEL(grpo_token_terms, CUDA, grpo_token_terms_cuda);

}  // namespace r1::cuda
