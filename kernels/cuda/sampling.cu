// CUDA: token sampling for the decode step (temperature, top-k, top-p). Contract in
// engine/kernels.h (sample_tokens); kernels/cpu/sampling.cc is the reference (it sorts the
// row). logits f32 or bf16 (uint16_t bits), fp32 math; tokens i64, logprobs f32.
//
// One block per row, its size (32..512 threads) a function of V alone, so nothing a row
// computes depends on N or its neighbours. The row is never sorted. Instead:
//  1. max and first argmax (one pass), then s = sum exp((x - max) / T) in fp32 in a fixed
//     order (per thread in index order, then a fixed tree): the logprob's normalizer.
//  2. Each token gets a unique 64-bit rank key: the order-preserving bits of its logit above
//     the inverted index, key = okey(x) << b | (2^b - 1 - i), b = bits of V - 1. Key order
//     descending is exactly the CPU's rank order (x descending, index ascending), and a
//     kept set, a prefix of the rank order, is {key >= boundary}.
//  3. top-k and top-p each find their boundary by a radix select over the key, 8 bits per
//     pass from the top (ceil((32 + b) / 8) passes at most, 7 for V = 129280): a 256-bin
//     histogram of the weights of the tokens still matching the chosen prefix, then the
//     largest digit whose bins at and above it still reach the target. The weight is 1 for
//     top-k (target k) and the token's mass for top-p (target ceil(top_p * mass of the top-k
//     set)). When the chosen bin holds a single token, one more pass fetches its key.
//  4. The draw: the first kept index (index order) whose cumulative mass exceeds u * M, by a
//     block-wide scan over tiles of the row, stopping at the tile that crosses.
// Masses are exp((x - max) / T) in fp32 (expf, IEEE division), then held in 64-bit fixed
// point with kMassBits fraction bits: integer sums are exact and associative, so histogram
// atomics and scans give the same bits in any order (float atomics would not, and a
// near-boundary token would change between runs).
//
// Ceiling: HBM bandwidth. Without top-k/top-p a row is read 4 times (max, sum, mass, draw);
// each radix pass is one more read (mostly from L2, V = 129280 bf16 is 253 KiB). Not yet
// measured; candidates for speed: compacting the surviving candidates into shared memory
// after the first pass, warp-aggregated histogram atomics, several chunks in flight.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "engine/rng.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

using u64 = unsigned long long;

// Fraction bits of a fixed-point mass (at most; fewer when 2^b V would overflow 64 bits): a
// mass is at most 1 (the max token's), so a sum over V <= 2^23 tokens stays below 2^63; one
// token's rounding is at most 2^-41 of the max token's mass.
constexpr int kMassBits = 40;
constexpr int kDigitBits = 8;
constexpr int kBins = 1 << kDigitBits;
constexpr unsigned kFull = 0xffffffffu;

struct ArgMax {
  float v;
  int64_t i;
};

// A fixed-point mass sum, wrapped so that group_reduce shuffles it as 64 bits.
struct Fixed {
  u64 v;
};

struct SampleSmem {
  uint32_t count[kBins];  // tokens per digit (radix select)
  u64 mass[kBins];        // their fixed-point mass (top-p)
  ArgMax am[32];          // per-warp partials of the block reductions
  float f[32];
  Fixed fx[32];
  u64 u[32];              // per-warp totals of the scan
  u64 key;                // the selected boundary key (single-candidate exit)
  u64 above;              // the weight above the chosen digit
  int digit;
  uint32_t digit_count;
  int64_t token;
  float token_x;
};

// ---- block-wide helpers (blockDim.x a multiple of 32, every thread calls) ----------------
// Reductions use group_reduce (common/launch.cuh) with the whole block as the group; it finds
// the shfl_xor overloads below by argument lookup.

__device__ inline Fixed shfl_xor(Fixed a, int k) { return {__shfl_xor_sync(kFull, a.v, k)}; }
__device__ inline ArgMax shfl_xor(ArgMax a, int k) {
  return {__shfl_xor_sync(kFull, a.v, k),
          static_cast<int64_t>(__shfl_xor_sync(kFull, static_cast<long long>(a.i), k))};
}

struct AddFixed {
  __device__ Fixed operator()(Fixed a, Fixed b) const { return {a.v + b.v}; }
};
// The larger value; of equal values the smaller index: the first index of the maximum.
struct Better {
  __device__ ArgMax operator()(ArgMax a, ArgMax b) const {
    return a.v > b.v || (a.v == b.v && a.i < b.i) ? a : b;
  }
};

// Exclusive prefix sum of v over the block in thread order; *total = the sum of all.
__device__ u64 block_exclusive_scan(u64 v, u64* scratch, u64* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  u64 incl = v;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const u64 o = __shfl_up_sync(kFull, incl, off);
    if (lane >= off) incl += o;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  u64 before = 0, all = 0;
  for (int w = 0; w < warps; ++w) {
    if (w < warp) before += scratch[w];
    all += scratch[w];
  }
  *total = all;
  return before + incl - v;
}

// ---- one row --------------------------------------------------------------------------

// Order-preserving bits of a float: a < b as floats <=> key(a) < key(b) (no NaN here). -0 is
// made +0 first: the CPU's comparisons see them equal, so they must tie here too.
__device__ inline uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u << 1) == 0) u = 0;  // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline u64 shr(u64 k, int s) { return s >= 64 ? 0 : k >> s; }

template <class T>
struct Row {
  const T* x;
  int64_t V;
  int idx_bits;      // b: bits of V - 1 (at least 1)
  float mass_scale;  // 2^(fraction bits of a mass)
  float m;           // max logit
  float temp;        // temperature (1 for greedy)

  __device__ u64 key(int64_t i, float f) const {
    const u64 imask = (u64{1} << idx_bits) - 1;
    return (u64{order_key(f)} << idx_bits) | (imask - static_cast<u64>(i));
  }
  // exp((f - m) / T) in fixed point; 0 for a -inf logit.
  __device__ u64 mass(float f) const {
    return __float2ull_rn(expf((f - m) / temp) * mass_scale);
  }
  // fn(i, f) for this thread's elements, in increasing index: chunks tid, tid + blockDim, ...
  template <class Fn>
  __device__ void for_each(Fn&& fn) const {
    constexpr int kV = kVec<T>;
    for (int64_t i0 = int64_t{threadIdx.x} * kV; i0 < V; i0 += int64_t{blockDim.x} * kV) {
      float f[kV];
      const int cnt = load_chunk(x, i0, V, f);
#pragma unroll
      for (int k = 0; k < kV; ++k)
        if (k < cnt) fn(i0 + k, f[k]);
    }
  }
};

// Sum of the masses of the tokens with key >= floor, on every thread.
template <class T>
__device__ u64 kept_mass(const Row<T>& r, u64 floor, SampleSmem& sm) {
  u64 s = 0;
  r.for_each([&](int64_t i, float f) {
    if (r.key(i, f) >= floor) s += r.mass(f);
  });
  return group_reduce(Fixed{s}, AddFixed{}, sm.fx, static_cast<int>(blockDim.x)).v;
}

// Warp 0: the largest digit d with above + sum_{d' >= d} w[d'] >= target, where w = the
// histogram's counts or masses; writes it, the weight above it and its bin's count to sm.
// One exists while the invariant holds (the whole range reaches the target).
template <bool kMass>
__device__ void choose_digit(u64 above, u64 target, SampleSmem& sm) {
  constexpr int kPerLane = kBins / 32;
  const int lane = threadIdx.x;
  u64 w[kPerLane], lane_sum = 0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int b = lane * kPerLane + j;
    w[j] = kMass ? sm.mass[b] : u64{sm.count[b]};
    lane_sum += w[j];
  }
  u64 suffix = lane_sum;  // sum over lanes >= lane
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const u64 o = __shfl_down_sync(kFull, suffix, off);
    if (lane + off < 32) suffix += o;
  }
  u64 acc = above + suffix - lane_sum;
  int found = -1;
  u64 found_above = 0;
#pragma unroll
  for (int j = kPerLane - 1; j >= 0; --j) {
    if (found < 0 && acc + w[j] >= target) found = j, found_above = acc;
    acc += w[j];
  }
  const unsigned hit = __ballot_sync(kFull, found >= 0);
  // No hit would break the invariant; stay in range regardless.
  const int top = hit ? 31 - __clz(static_cast<int>(hit)) : 0;
  if (lane == top) {
    const int d = hit ? top * kPerLane + found : 0;
    sm.digit = d;
    sm.above = hit ? found_above : above;
    sm.digit_count = sm.count[d];
  }
}

// The kept set's boundary: the largest key b with W(b) >= target, W(b) = the weight of the
// tokens with key >= b and key >= floor; weight 1 (kMass false: top-k) or the mass (top-p).
// Needs 1 <= target <= W(floor). The result is the key of the token where the cumulative
// weight in rank order first reaches the target (a token of positive weight).
template <class T, bool kMass>
__device__ u64 select_boundary(const Row<T>& r, u64 floor, u64 target, SampleSmem& sm) {
  const int passes = (32 + r.idx_bits + kDigitBits - 1) / kDigitBits;
  u64 prefix = 0, above = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = kDigitBits * (passes - 1 - pass);
    for (int b = threadIdx.x; b < kBins; b += blockDim.x) sm.count[b] = 0, sm.mass[b] = 0;
    __syncthreads();
    r.for_each([&](int64_t i, float f) {
      const u64 k = r.key(i, f);
      if (k < floor || shr(k, shift + kDigitBits) != prefix) return;
      const int d = static_cast<int>((k >> shift) & (kBins - 1));
      atomicAdd(&sm.count[d], 1u);
      if constexpr (kMass) atomicAdd(&sm.mass[d], r.mass(f));
    });
    __syncthreads();
    if (threadIdx.x < 32) choose_digit<kMass>(above, target, sm);
    __syncthreads();
    prefix = (prefix << kDigitBits) | static_cast<u64>(sm.digit);
    above = sm.above;
    if (sm.digit_count == 1 && pass + 1 < passes) {  // one candidate left: fetch its key
      r.for_each([&](int64_t i, float f) {
        const u64 k = r.key(i, f);
        if (k >= floor && shr(k, shift) == prefix) sm.key = k;
      });
      __syncthreads();
      return sm.key;
    }
  }
  return prefix;
}

// The first index i (index order) with sum_{j <= i, key_j >= floor} mass_j > t, t < the
// total kept mass; writes it and its logit to sm.token, sm.token_x.
template <class T>
__device__ void inverse_cdf(const Row<T>& r, u64 floor, u64 t, SampleSmem& sm) {
  constexpr int kV = kVec<T>;
  u64 carry = 0;
  for (int64_t base = 0; base < r.V; base += int64_t{blockDim.x} * kV) {
    const int64_t i0 = base + int64_t{threadIdx.x} * kV;
    float f[kV];
    const int cnt = i0 < r.V ? load_chunk(r.x, i0, r.V, f) : 0;
    u64 w[kV], local = 0;
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      w[k] = k < cnt && r.key(i0 + k, f[k]) >= floor ? r.mass(f[k]) : 0;
      local += w[k];
    }
    u64 tile;
    u64 c = carry + block_exclusive_scan(local, sm.u, &tile);
    if (c <= t && t < c + local) {  // exactly one thread's span holds the crossing
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        c += w[k];
        if (c > t) {
          sm.token = i0 + k;
          sm.token_x = f[k];
          break;
        }
      }
    }
    carry += tile;
    if (carry > t) break;  // uniform: every thread has the same carry
  }
  __syncthreads();
}

// logits (N, V) -> tokens (N), logprobs (N): one block per row.
template <class T>
__global__ void __launch_bounds__(kMaxRowThreads)
    sample_tokens_kernel(const T* logits, const int64_t* seq, const int64_t* pos, int64_t V,
                         int idx_bits, float mass_scale, uint64_t seed, SamplingParams p,
                         int64_t* tokens, float* logprobs) {
  __shared__ SampleSmem sm;
  const int64_t n = blockIdx.x;
  Row<T> r{logits + n * V, V, idx_bits, mass_scale, 0.0f, 1.0f};

  ArgMax am{-INFINITY, INT64_MAX};
  bool bad = false;
  r.for_each([&](int64_t i, float f) {
    bad |= isnan(f) || f == INFINITY;
    if (f > am.v) am = {f, i};  // strict: a thread meets its indices in increasing order
  });
  const int tpr = static_cast<int>(blockDim.x);
  am = group_reduce(am, Better{}, sm.am, tpr);
  if (__syncthreads_or(bad) || am.v == -INFINITY) {  // the contract's bad row (uniform)
    if (threadIdx.x == 0) tokens[n] = 0, logprobs[n] = NAN;
    return;
  }
  const bool greedy = p.temperature == 0;
  r.m = am.v;
  r.temp = greedy ? 1.0f : p.temperature;
  float s = 0;
  r.for_each([&](int64_t, float f) { s += expf((f - r.m) / r.temp); });
  const float log_s = logf(group_reduce(s, Add{}, sm.f, tpr));
  if (greedy) {
    if (threadIdx.x == 0) tokens[n] = am.i, logprobs[n] = -log_s;  // x[argmax] - m = 0
    return;
  }

  u64 floor = 0;  // every key is >= 0: all kept
  if (p.top_k > 0 && p.top_k < V)
    floor = select_boundary<T, false>(r, 0, static_cast<u64>(p.top_k), sm);
  if (p.top_p < 1) {
    const u64 mk = kept_mass(r, floor, sm);
    const double want = ceil(static_cast<double>(p.top_p) * static_cast<double>(mk));
    const u64 target =
        want < 1 ? 1 : (want >= static_cast<double>(mk) ? mk : static_cast<u64>(want));
    floor = select_boundary<T, true>(r, floor, target, sm);
  }
  const u64 total = kept_mass(r, floor, sm);
  // t = floor(u * M), u = u24 / 2^24: C(i) > u M <=> C(i) > t for integer C(i). u24 M < 2^82
  // is formed in 128 bits. t < M since u < 1, so the walk always finds a token.
  const Philox4x32 bits = philox_bits(seed, static_cast<uint64_t>(seq[n]),
                                      static_cast<uint64_t>(pos[n]));
  const u64 u24 = bits.v[0] >> 8;
  const u64 t = (__umul64hi(u24, total) << (64 - 24)) | ((u24 * total) >> 24);
  if (threadIdx.x == 0) sm.token = 0, sm.token_x = r.m;
  inverse_cdf(r, floor, t, sm);
  if (threadIdx.x == 0) {
    tokens[n] = sm.token;
    logprobs[n] = (sm.token_x - r.m) / r.temp - log_s;
  }
}

// logits (N, V) f32/bf16, seq, pos (N) i64 -> tokens (N) i64, logprobs (N) f32.
void sample_tokens_cuda(const Tensor& logits, const Tensor& seq, const Tensor& pos,
                        uint64_t seed, const SamplingParams& p, Tensor& tokens,
                        Tensor& logprobs) {
  check_sample_tokens(logits, seq, pos, p, tokens, logprobs,
                      logits.dtype() == DType::F32 || logits.dtype() == DType::BF16);
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  int idx_bits = 1;
  while ((int64_t{1} << idx_bits) < V) ++idx_bits;  // 2^b >= V: indices 0..V-1 fit
  // Masses sum to at most V 2^bits <= 2^(idx_bits + bits): keep that below 2^63.
  const float mass_scale = std::ldexp(1.0f, std::min(kMassBits, 63 - idx_bits));
  const int dev = logits.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(logits.dtype(), "sample_tokens", [&](auto tag) {
    using T = decltype(tag);
    const int threads = row_threads((V + kVec<T> - 1) / kVec<T>);
    sample_tokens_kernel<T><<<static_cast<unsigned>(N), threads, 0, s>>>(
        static_cast<const T*>(logits.data_ptr()), seq.data<int64_t>(), pos.data<int64_t>(), V,
        idx_bits, mass_scale, seed, p, tokens.data<int64_t>(), logprobs.data<float>());
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

R1_REGISTER_KERNEL(sample_tokens, CUDA, sample_tokens_cuda);

}  // namespace r1::cuda
