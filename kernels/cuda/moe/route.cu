// CUDA: the MoE router kernels (contracts in engine/kernels_moe.h); kernels/cpu/moe.cc is the
// reference (tests/test_moe_route.cc). logits f32 or bf16 (uint16_t bits), fp32 math, bias,
// weights, denom and the balance-loss statistics f32, E <= kMoeMaxExpertsCuda.
//
// One warp per token row (grid-stride over rows, 8 warps a block): lane l owns experts
// l, l + 32, ... (8 slots, coalesced loads), keeps s and b = s + bias in registers, and
//   - groups: writes b to shared memory; lane g forms group g's top1 + top2 in expert order
//     (the CPU's loop, so the same bits) and its rank among the groups; dropped groups'
//     b := -inf;
//   - top-k: K rounds of a warp argmax over (b, e) (b descending, ties lower e: a total
//     order, so the butterfly gives every lane the same winner), the winner's slot leaves.
// With the f64-rounded sigmoid of the contract, b and the group scores have the CPU's bits,
// so the experts are the CPU's. Load: a per-block shared histogram, then one integer atomic
// per expert and block (integer sums: deterministic).
//
// Ceiling: a read of the (N, E) logits (4096 x 256 bf16 = 2 MiB, ~1 us at 4.8 TB/s); at
// these sizes the kernel is latency-bound (one wave of warps, K dependent shuffle rounds).
// Not yet measured.
#include <cmath>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_moe.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kWarps = 8;  // warps (token rows in flight) per block
constexpr int kMaxE = static_cast<int>(kMoeMaxExpertsCuda);
constexpr int kSlots = kMaxE / 32;  // experts per lane
constexpr unsigned kFull = 0xffffffffu;

// The contract's sigmoid: f64, rounded once to f32 (as kernels/cpu/moe.cc).
__device__ inline float sigmoid_score(float x) {
  return static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(x))));
}

__device__ inline bool ranks_before(float a, int ia, float b, int ib) {
  return a > b || (a == b && ia < ib);
}

// Shared-memory slot of expert e: one pad word per 32 keeps the group scans (lane g reads
// group g's run of experts) off a single bank.
__device__ inline int padded(int e) { return e + (e >> 5); }

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int k = 16; k > 0; k /= 2) v += __shfl_xor_sync(kFull, v, k);
  return v;
}

// The token's sequence: the largest b with offsets[b] <= t (offsets (B + 1) ascending).
__device__ inline int64_t sequence_of(const int64_t* offsets, int64_t B, int64_t t) {
  int64_t lo = 0, hi = B - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

struct RouteArgs {
  int64_t N;
  int E, K, n_group, topk_group;
  bool norm;
  float scale;
};

// Masks b of the experts in dropped groups to -inf (n_group > 1). sb: this warp's padded
// row of b, sg: its group scores, keep: its group flags.
__device__ __forceinline__ void mask_dropped_groups(float (&b)[kSlots], const RouteArgs& a, int lane, float* sb,
                                    float* sg, unsigned char* keep) {
  const int G = a.E / a.n_group;
#pragma unroll
  for (int j = 0; j < kSlots; ++j)
    if (lane + 32 * j < a.E) sb[padded(lane + 32 * j)] = b[j];
  __syncwarp();
  for (int g = lane; g < a.n_group; g += 32) {  // top1 + top2, in expert order as the CPU
    float m1 = -INFINITY, m2 = -INFINITY;
    for (int e = g * G; e < g * G + G; ++e) {
      const float v = sb[padded(e)];
      if (v > m1) m2 = m1, m1 = v;
      else if (v > m2) m2 = v;
    }
    sg[g] = __fadd_rn(m1, m2);
  }
  __syncwarp();
  for (int g = lane; g < a.n_group; g += 32) {
    int rank = 0;
    for (int h = 0; h < a.n_group; ++h) rank += ranks_before(sg[h], h, sg[g], g);
    keep[g] = rank < a.topk_group;
  }
  __syncwarp();
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int e = lane + 32 * j;
    if (e < a.E && !keep[e / G]) b[j] = -INFINITY;  // -inf as DeepSeek (HF fills 0.0)
  }
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32)
    moe_route_forward_kernel(const T* logits, const float* bias, RouteArgs a, int64_t* indices,
                             float* weights, float* denom, unsigned long long* load) {
  __shared__ float sh_b[kWarps][kMaxE + kMaxE / 32];
  __shared__ float sh_group[kWarps][kMaxE / 2];
  __shared__ unsigned char sh_keep[kWarps][kMaxE / 2];
  __shared__ float sh_chosen[kWarps][kMaxE];  // s of the chosen experts, in order
  __shared__ int sh_load[kMaxE];
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  for (int e = threadIdx.x; e < kMaxE; e += blockDim.x) sh_load[e] = 0;
  __syncthreads();
  float bias_r[kSlots];
#pragma unroll
  for (int j = 0; j < kSlots; ++j) bias_r[j] = lane + 32 * j < a.E ? bias[lane + 32 * j] : 0.0f;

  for (int64_t n = int64_t{blockIdx.x} * kWarps + w; n < a.N; n += int64_t{gridDim.x} * kWarps) {
    const T* x = logits + n * a.E;
    float s[kSlots], b[kSlots];
    unsigned live = 0;  // slots still to choose from
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int e = lane + 32 * j;
      s[j] = e < a.E ? sigmoid_score(to_f32(x[e])) : 0.0f;
      b[j] = __fadd_rn(s[j], bias_r[j]);
      if (e < a.E) live |= 1u << j;
    }
    if (a.n_group > 1) mask_dropped_groups(b, a, lane, sh_b[w], sh_group[w], sh_keep[w]);

    float S = 0.0f;
    for (int k = 0; k < a.K; ++k) {
      float bv = -INFINITY;
      int be = INT32_MAX;  // no candidate: loses to every live slot, -inf ones included
#pragma unroll
      for (int j = 0; j < kSlots; ++j)
        if ((live >> j & 1u) && ranks_before(b[j], lane + 32 * j, bv, be))
          bv = b[j], be = lane + 32 * j;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
        const float ov = __shfl_xor_sync(kFull, bv, off);
        const int oe = __shfl_xor_sync(kFull, be, off);
        if (ranks_before(ov, oe, bv, be)) bv = ov, be = oe;
      }
      const int owner = be % 32, jw = be / 32;
      float sw = 0.0f;
#pragma unroll
      for (int j = 0; j < kSlots; ++j)
        if (j == jw) sw = s[j];
      sw = __shfl_sync(kFull, sw, owner);
      if (lane == owner) live &= ~(1u << jw);
      S = __fadd_rn(S, sw);  // selection order, as the CPU
      if (lane == 0) {
        indices[n * a.K + k] = be;
        sh_chosen[w][k] = sw;
        atomicAdd(&sh_load[be], 1);
      }
    }
    __syncwarp();
    for (int k = lane; k < a.K; k += 32) {
      float v = sh_chosen[w][k];
      if (a.norm) v = __fdiv_rn(v, S);
      weights[n * a.K + k] = __fmul_rn(v, a.scale);
    }
    if (lane == 0) denom[n] = S;
    __syncwarp();  // the next row overwrites this warp's shared rows
  }
  __syncthreads();
  for (int e = threadIdx.x; e < a.E; e += blockDim.x)
    if (sh_load[e] != 0) atomicAdd(load + e, static_cast<unsigned long long>(sh_load[e]));
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32)
    moe_route_backward_kernel(const T* logits, const int64_t* indices, const float* denom,
                              const float* dweights, RouteArgs a, T* dlogits) {
  const int lane = threadIdx.x % 32;
  for (int64_t n = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; n < a.N;
       n += int64_t{gridDim.x} * kWarps) {
    const T* x = logits + n * a.E;
    const int64_t* idx = indices + n * a.K;
    const float* g = dweights + n * a.K;
    T* dx = dlogits + n * a.E;
    for (int e = lane; e < a.E; e += 32) dx[e] = from_f32<T>(0.0f);
    float dot = 0.0f;  // sum_k g_k s_k
    for (int k = lane; k < a.K; k += 32) dot += g[k] * sigmoid_score(to_f32(x[idx[k]]));
    dot = warp_sum(dot);
    const float S = denom[n];
    __syncwarp();  // the zeros land before the chosen experts' gradients
    for (int k = lane; k < a.K; k += 32) {
      const float sk = sigmoid_score(to_f32(x[idx[k]]));
      const float ds = a.norm ? a.scale * (g[k] - dot / S) / S : a.scale * g[k];
      dx[idx[k]] = from_f32<T>(ds * sk * (1.0f - sk));
    }
  }
}

// ---- balance loss ---------------------------------------------------------------------

// One block per sequence: f[b, i] = E / (K T_b) * count of i among the sequence's indices.
template <class I>
__global__ void moe_balance_counts_kernel(const I* indices, const int64_t* offsets, int E,
                                          int K, float* f) {
  __shared__ int count[kMaxE];
  for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  __syncthreads();
  const int64_t b = blockIdx.x, T = offsets[b + 1] - offsets[b];
  const I* idx = indices + offsets[b] * K;
  for (int64_t i = threadIdx.x; i < T * K; i += blockDim.x) {
    const int64_t e = static_cast<int64_t>(idx[i]);
    if (e >= 0 && e < E) atomicAdd(&count[e], 1);  // checked on the host; the guard only
  }                                                  // keeps a bad one from writing outside
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    f[b * E + e] = static_cast<float>(static_cast<double>(E) * count[e] /
                                      (static_cast<double>(K) * T));
}

// Per token (warp): S = sum s, u = sum f s / S, and the sequence's alpha / (B T_b).
struct BalanceRow {
  float S, u, coef;
  int64_t b;
};

template <class T>
__device__ BalanceRow balance_row(const T* x, const int64_t* offsets, int64_t B, int E,
                                  const float* f, double alpha, int64_t t, int lane) {
  BalanceRow r;
  r.b = sequence_of(offsets, B, t);
  const float* fb = f + r.b * E;
  float S = 0.0f, dot = 0.0f;
  for (int e = lane; e < E; e += 32) {
    const float s = sigmoid_score(to_f32(x[e]));
    S += s;
    dot += fb[e] * s;
  }
  r.S = warp_sum(S);
  r.u = warp_sum(dot) / r.S;
  r.coef = static_cast<float>(alpha / (static_cast<double>(B) * (offsets[r.b + 1] - offsets[r.b])));
  return r;
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32)
    moe_balance_terms_kernel(const T* logits, const int64_t* offsets, int64_t B, int64_t N,
                             int E, const float* f, double alpha, float* terms) {
  const int lane = threadIdx.x % 32;
  for (int64_t t = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; t < N;
       t += int64_t{gridDim.x} * kWarps) {
    const BalanceRow r = balance_row(logits + t * E, offsets, B, E, f, alpha, t, lane);
    if (lane == 0) terms[t] = r.coef * r.u;
  }
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32)
    moe_balance_backward_kernel(const T* logits, const int64_t* offsets, int64_t B, int64_t N,
                                int E, const float* f, const float* dloss, double alpha,
                                T* dlogits) {
  const int lane = threadIdx.x % 32;
  const float g = *dloss;
  for (int64_t t = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; t < N;
       t += int64_t{gridDim.x} * kWarps) {
    const T* x = logits + t * E;
    const BalanceRow r = balance_row(x, offsets, B, E, f, alpha, t, lane);
    const float coef = g * r.coef;
    for (int e = lane; e < E; e += 32) {
      const float s = sigmoid_score(to_f32(x[e]));
      dlogits[t * E + e] = from_f32<T>(coef * (f[r.b * E + e] - r.u) / r.S * s * (1.0f - s));
    }
  }
}

// One block: bias_i += gamma * sign(sum(load) - E * load_i), the sum exact in int64.
template <class I>
__global__ void moe_update_bias_kernel(float* bias, const I* load, int E, float gamma) {
  __shared__ long long part[kThreads];
  long long v = 0;
  for (int i = threadIdx.x; i < E; i += blockDim.x) v += static_cast<long long>(load[i]);
  part[threadIdx.x] = v;
  __syncthreads();
  long long total = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x); ++i) total += part[i];  // broadcast reads
  for (int i = threadIdx.x; i < E; i += blockDim.x) {
    const long long d = total - static_cast<long long>(E) * static_cast<long long>(load[i]);
    bias[i] += gamma * static_cast<float>((d > 0) - (d < 0));
  }
}

// ---- launchers ------------------------------------------------------------------------

bool cuda_float(DType t) { return t == DType::F32 || t == DType::BF16; }

void check_experts(const char* what, int64_t E) {
  R1_CHECK(E <= kMoeMaxExpertsCuda, "{}: CUDA takes E <= {} experts (one warp per token, {} "
           "per lane), got E = {}", what, kMoeMaxExpertsCuda, kSlots, E);
}

template <class Fn>
void dispatch_index(DType t, Fn&& fn) {
  if (t == DType::I32) fn(int32_t{});
  else fn(int64_t{});
}

// Blocks of kWarps rows for N rows, capped as grid_for caps (grid-stride beyond).
unsigned row_grid(int64_t N, int dev) { return static_cast<unsigned>(grid_for(N * 32, dev)); }

RouteArgs route_args(const Tensor& logits, const MoeRouteConfig& cfg) {
  return {logits.size(0), static_cast<int>(logits.size(1)), static_cast<int>(cfg.top_k),
          static_cast<int>(cfg.n_group), static_cast<int>(cfg.topk_group), cfg.norm_topk_prob,
          static_cast<float>(cfg.routed_scaling_factor)};
}

void moe_route_forward_cuda(const Tensor& logits, const Tensor& bias, const MoeRouteConfig& cfg,
                            Tensor& indices, Tensor& weights, Tensor& denom, Tensor& load) {
  check_moe_route_forward(logits, bias, cfg, indices, weights, denom, load,
                          cuda_float(logits.dtype()));
  check_experts("moe_route_forward", logits.size(1));
  const RouteArgs a = route_args(logits, cfg);
  const int dev = logits.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t st = current_stream(dev);
  R1_CUDA_CHECK(cudaMemsetAsync(load.data_ptr(), 0, load.nbytes(), st));
  if (a.N == 0) return;
  dispatch_float(logits.dtype(), "moe_route_forward", [&](auto tag) {
    using T = decltype(tag);
    moe_route_forward_kernel<T><<<row_grid(a.N, dev), kWarps * 32, 0, st>>>(
        static_cast<const T*>(logits.data_ptr()), bias.data<float>(), a,
        indices.data<int64_t>(), weights.data<float>(), denom.data<float>(),
        reinterpret_cast<unsigned long long*>(load.data<int64_t>()));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void moe_route_backward_cuda(const Tensor& logits, const Tensor& indices, const Tensor& denom,
                             const Tensor& dweights, const MoeRouteConfig& cfg,
                             Tensor& dlogits) {
  check_moe_route_backward(logits, indices, denom, dweights, cfg, dlogits,
                           cuda_float(logits.dtype()));
  check_experts("moe_route_backward", logits.size(1));
  const RouteArgs a = route_args(logits, cfg);
  if (a.N == 0) return;
  const int dev = logits.device().index;
  DeviceGuard guard(dev);
  dispatch_float(logits.dtype(), "moe_route_backward", [&](auto tag) {
    using T = decltype(tag);
    moe_route_backward_kernel<T><<<row_grid(a.N, dev), kWarps * 32, 0, current_stream(dev)>>>(
        static_cast<const T*>(logits.data_ptr()), indices.data<int64_t>(), denom.data<float>(),
        dweights.data<float>(), a, static_cast<T*>(dlogits.data_ptr()));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void moe_balance_loss_forward_cuda(const Tensor& logits, const Tensor& indices,
                                   const Tensor& offsets, double alpha, Tensor& f,
                                   Tensor& terms) {
  const char* what = "moe_balance_loss_forward";
  check_moe_balance_loss(what, logits, offsets, f, cuda_float(logits.dtype()));
  const int64_t N = logits.size(0), E = logits.size(1), B = offsets.size(0) - 1;
  R1_CHECK(indices.dim() == 2 && indices.size(0) == N && indices.size(1) >= 1,
           "{}: indices {} must be (N = {}, K)", what, indices.str(), N);
  moe_detail::check_index(what, "indices", indices, indices.shape(), logits.device());
  moe_detail::check_tensor(what, "terms", terms, {N}, DType::F32, logits.device());
  check_experts(what, E);
  const int dev = logits.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t st = current_stream(dev);
  dispatch_index(indices.dtype(), [&](auto itag) {
    using I = decltype(itag);
    moe_balance_counts_kernel<I><<<static_cast<unsigned>(B), kThreads, 0, st>>>(
        static_cast<const I*>(indices.data_ptr()), offsets.data<int64_t>(),
        static_cast<int>(E), static_cast<int>(indices.size(1)), f.data<float>());
    R1_CUDA_CHECK_LAUNCH();
  });
  if (N == 0) return;
  dispatch_float(logits.dtype(), what, [&](auto tag) {
    using T = decltype(tag);
    moe_balance_terms_kernel<T><<<row_grid(N, dev), kWarps * 32, 0, st>>>(
        static_cast<const T*>(logits.data_ptr()), offsets.data<int64_t>(), B, N,
        static_cast<int>(E), f.data<float>(), alpha, terms.data<float>());
    R1_CUDA_CHECK_LAUNCH();
  });
}

void moe_balance_loss_backward_cuda(const Tensor& logits, const Tensor& offsets, const Tensor& f,
                                    const Tensor& dloss, double alpha, Tensor& dlogits) {
  const char* what = "moe_balance_loss_backward";
  check_moe_balance_loss(what, logits, offsets, f, cuda_float(logits.dtype()));
  moe_detail::check_tensor(what, "dloss", dloss, {}, DType::F32, logits.device());
  moe_detail::check_tensor(what, "dlogits", dlogits, logits.shape(), logits.dtype(),
                           logits.device());
  const int64_t N = logits.size(0), E = logits.size(1), B = offsets.size(0) - 1;
  check_experts(what, E);
  if (N == 0) return;
  const int dev = logits.device().index;
  DeviceGuard guard(dev);
  dispatch_float(logits.dtype(), what, [&](auto tag) {
    using T = decltype(tag);
    moe_balance_backward_kernel<T><<<row_grid(N, dev), kWarps * 32, 0, current_stream(dev)>>>(
        static_cast<const T*>(logits.data_ptr()), offsets.data<int64_t>(), B, N,
        static_cast<int>(E), f.data<float>(), dloss.data<float>(), alpha,
        static_cast<T*>(dlogits.data_ptr()));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void moe_update_bias_cuda(Tensor& bias, const Tensor& load, double gamma) {
  check_moe_update_bias(bias, load, bias.dtype() == DType::F32);
  const int64_t E = bias.size(0);
  if (E == 0) return;
  const int dev = bias.device().index;
  DeviceGuard guard(dev);
  dispatch_index(load.dtype(), [&](auto itag) {
    using I = decltype(itag);
    moe_update_bias_kernel<I><<<1, kThreads, 0, current_stream(dev)>>>(
        bias.data<float>(), static_cast<const I*>(load.data_ptr()), static_cast<int>(E),
        static_cast<float>(gamma));
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

R1_REGISTER_KERNEL(moe_route_forward, CUDA, moe_route_forward_cuda);
R1_REGISTER_KERNEL(moe_route_backward, CUDA, moe_route_backward_cuda);
R1_REGISTER_KERNEL(moe_balance_loss_forward, CUDA, moe_balance_loss_forward_cuda);
R1_REGISTER_KERNEL(moe_balance_loss_backward, CUDA, moe_balance_loss_backward_cuda);
R1_REGISTER_KERNEL(moe_update_bias, CUDA, moe_update_bias_cuda);

}  // namespace r1::cuda
