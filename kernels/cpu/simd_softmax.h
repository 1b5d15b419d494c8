// The vector policies of the CPU's softmax-shaped kernels (paged attention, the sampler):
// kernels/cpu/gemm_invariant_simd.h's load/store/broadcast/multiply-add policies plus the
// element-wise max, sub, add, div, exp and a bad-value test, and the f32 exp they use
// (fast_expf, also kernels/cpu/attention.cc's). Every function carries its ISA's target
// attribute (the build has no -march); a kernel is written once over a policy and compiled
// per ISA by a wrapper with the target attribute and `flatten`, as gemm_invariant.cc does, and
// runs the ISA that the batch-invariant product chose for the process (softmax_isa()).
//
// Bits: the avx2 and avx512 policies do the same operations lane for lane (fused
// multiply-adds, the same exp), so they give the same bits; sse2 rounds a multiply-add twice
// and uses the unfused exp. Within one process every row runs the same ISA.
#pragma once
#include <immintrin.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm_invariant.h"
#include "kernels/cpu/gemm_invariant_simd.h"

namespace r1::cpu {

// ---- exp for f32 -------------------------------------------------------------------------
// Branch-free: x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite two-part ln2), e^r by the Cephes
// polynomial, times 2^n built in the exponent bits. Max relative error vs exp in double, over
// every float in [-87.33, 88]: 8.2e-8 (0.99 ulp of the exact value). x < -87.33 (ln of the
// smallest normal; -inf included) gives 0 (no denormals), x > 88 gives exp(88); NaN propagates.
namespace fast_exp {
constexpr float kLo = -87.33654475f, kHi = 88.0f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound - kRound rounds to an integer
}  // namespace fast_exp

inline float fast_expf(float x) {
  using namespace fast_exp;
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float n = (xc * kLog2e + kRound) - kRound;  // round to nearest
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float y = kP0;
  y = y * r + kP1;
  y = y * r + kP2;
  y = y * r + kP3;
  y = y * r + kP4;
  y = y * r + kP5;
  y = y * (r * r) + r + 1.0f;
  const float s = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  const float e = y * s;
  return x < kLo ? 0.0f : e;
}

// fast_expf on 4 lanes, the same operations in the same order (so bit-identical to it in a
// build without FMA contraction, i.e. the x86-64 baseline).
inline __m128 fast_expf4(__m128 x) {
  using namespace fast_exp;
  const __m128 lo = _mm_set1_ps(kLo);
  __m128 xc = _mm_max_ps(lo, x);  // lo > x ? lo : x (NaN x kept)
  xc = _mm_min_ps(_mm_set1_ps(kHi), xc);
  const __m128 magic = _mm_set1_ps(kRound);
  const __m128 n = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(xc, _mm_set1_ps(kLog2e)), magic), magic);
  __m128 r = _mm_sub_ps(xc, _mm_mul_ps(n, _mm_set1_ps(kLn2Hi)));
  r = _mm_sub_ps(r, _mm_mul_ps(n, _mm_set1_ps(kLn2Lo)));
  __m128 y = _mm_set1_ps(kP0);
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(kP1));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(kP2));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(kP3));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(kP4));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(kP5));
  y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(y, _mm_mul_ps(r, r)), r), _mm_set1_ps(1.0f));
  const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
  const __m128 res = _mm_mul_ps(y, _mm_castsi128_ps(e));
  return _mm_andnot_ps(_mm_cmplt_ps(x, lo), res);  // x < lo: 0
}

// The same exp with fused multiply-adds (one rounding per step: at least as accurate) on 4,
// 8 and 16 lanes; the three give the same bits lane for lane.
R1_TARGET_AVX2 inline __m128 fast_expf4_fma(__m128 x) {
  using namespace fast_exp;
  const __m128 lo = _mm_set1_ps(kLo);
  __m128 xc = _mm_max_ps(lo, x);
  xc = _mm_min_ps(_mm_set1_ps(kHi), xc);
  const __m128 n = _mm_round_ps(_mm_mul_ps(xc, _mm_set1_ps(kLog2e)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m128 r = _mm_fnmadd_ps(n, _mm_set1_ps(kLn2Hi), xc);
  r = _mm_fnmadd_ps(n, _mm_set1_ps(kLn2Lo), r);
  __m128 y = _mm_set1_ps(kP0);
  y = _mm_fmadd_ps(y, r, _mm_set1_ps(kP1));
  y = _mm_fmadd_ps(y, r, _mm_set1_ps(kP2));
  y = _mm_fmadd_ps(y, r, _mm_set1_ps(kP3));
  y = _mm_fmadd_ps(y, r, _mm_set1_ps(kP4));
  y = _mm_fmadd_ps(y, r, _mm_set1_ps(kP5));
  y = _mm_add_ps(_mm_fmadd_ps(y, _mm_mul_ps(r, r), r), _mm_set1_ps(1.0f));
  const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
  const __m128 res = _mm_mul_ps(y, _mm_castsi128_ps(e));
  return _mm_andnot_ps(_mm_cmp_ps(x, lo, _CMP_LT_OQ), res);
}

R1_TARGET_AVX2 inline __m256 fast_expf8(__m256 x) {
  using namespace fast_exp;
  const __m256 lo = _mm256_set1_ps(kLo);
  __m256 xc = _mm256_max_ps(lo, x);
  xc = _mm256_min_ps(_mm256_set1_ps(kHi), xc);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 y = _mm256_set1_ps(kP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP5));
  y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 res = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), res);
}

R1_TARGET_AVX512 inline __m512 fast_expf16(__m512 x) {
  // The maskz forms with every lane on: the plain ones pass an undefined vector that GCC 12
  // warns about (-Wmaybe-uninitialized) once inlined.
  using namespace fast_exp;
  constexpr __mmask16 all = 0xFFFF;
  const __m512 lo = _mm512_set1_ps(kLo);
  __m512 xc = _mm512_maskz_max_ps(all, lo, x);
  xc = _mm512_maskz_min_ps(all, _mm512_set1_ps(kHi), xc);
  const __m512 n = _mm512_maskz_roundscale_ps(all, _mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP5));
  y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_maskz_slli_epi32(
      all, _mm512_add_epi32(_mm512_maskz_cvttps_epi32(all, n), _mm512_set1_epi32(127)), 23);
  const __m512 res = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), res);  // x < lo: 0
}

// ---- the policies --------------------------------------------------------------------------
namespace simd {

// exp of every lane of an f64 vector: std::exp, lane by lane through memory.
template <class V, int kLanes>
inline void exp_lanes_f64(V& v) {
  alignas(64) double t[kLanes];
  std::memcpy(t, &v, sizeof(t));
  for (double& x : t) x = std::exp(x);
  std::memcpy(&v, t, sizeof(t));
}

template <class T_>
struct Sse2Softmax : Sse2<T_> {
  using T = T_;
  using V = typename Sse2<T>::V;
  static void max(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm_max_ps(a, b); else a = _mm_max_pd(a, b);
  }
  static void sub(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm_sub_ps(a, b); else a = _mm_sub_pd(a, b);
  }
  static void add(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm_add_ps(a, b); else a = _mm_add_pd(a, b);
  }
  static void div(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm_div_ps(a, b); else a = _mm_div_pd(a, b);
  }
  static void exp(V& v) {
    if constexpr (kF32<T>) v = fast_expf4(v); else exp_lanes_f64<V, 2>(v);
  }
  // Whether a lane is NaN or +inf.
  static bool any_nan_or_posinf(const V& x) {
    if constexpr (kF32<T>)
      return _mm_movemask_ps(_mm_or_ps(_mm_cmpunord_ps(x, x),
                                       _mm_cmpeq_ps(x, _mm_set1_ps(INFINITY)))) != 0;
    else
      return _mm_movemask_pd(_mm_or_pd(_mm_cmpunord_pd(x, x),
                                       _mm_cmpeq_pd(x, _mm_set1_pd(INFINITY)))) != 0;
  }
};

template <class T_>
struct Avx2Softmax : Avx2<T_> {
  using T = T_;
  using V = typename Avx2<T>::V;
  R1_TARGET_AVX2 static void max(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm256_max_ps(a, b); else a = _mm256_max_pd(a, b);
  }
  R1_TARGET_AVX2 static void sub(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm256_sub_ps(a, b); else a = _mm256_sub_pd(a, b);
  }
  R1_TARGET_AVX2 static void add(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm256_add_ps(a, b); else a = _mm256_add_pd(a, b);
  }
  R1_TARGET_AVX2 static void div(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm256_div_ps(a, b); else a = _mm256_div_pd(a, b);
  }
  R1_TARGET_AVX2 static void exp(V& v) {
    if constexpr (kF32<T>) v = fast_expf8(v); else exp_lanes_f64<V, 4>(v);
  }
  R1_TARGET_AVX2 static bool any_nan_or_posinf(const V& x) {
    if constexpr (kF32<T>)
      return _mm256_movemask_ps(_mm256_or_ps(
                 _mm256_cmp_ps(x, x, _CMP_UNORD_Q),
                 _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ))) != 0;
    else
      return _mm256_movemask_pd(_mm256_or_pd(
                 _mm256_cmp_pd(x, x, _CMP_UNORD_Q),
                 _mm256_cmp_pd(x, _mm256_set1_pd(INFINITY), _CMP_EQ_OQ))) != 0;
  }
};

// f32 on 128 bits with the FMA target's operations (fused multiply-add, fast_expf4_fma):
// the same bits as Avx2Softmax and Avx512Softmax lane for lane, in 4 lanes, for kernels whose
// lanes are few (paged attention's heads of one kv head: 4 in the tiny preset).
struct Fma128Softmax : Sse2Softmax<float> {
  R1_TARGET_AVX2 static void madd(V& acc, const V& x, const V& y) { acc = _mm_fmadd_ps(x, y, acc); }
  R1_TARGET_AVX2 static void exp(V& v) { v = fast_expf4_fma(v); }
  R1_TARGET_AVX2 static __m128i lane_mask(int n) {
    return _mm_cmpgt_epi32(_mm_set1_epi32(n), _mm_setr_epi32(0, 1, 2, 3));
  }
  R1_TARGET_AVX2 static void load_part(V& v, const float* p, int n) {
    v = _mm_maskload_ps(p, lane_mask(n));
  }
  R1_TARGET_AVX2 static void store_part(float* p, const V& v, int n) {
    _mm_maskstore_ps(p, lane_mask(n), v);
  }
};

template <class T_>
struct Avx512Softmax : Avx512<T_> {
  using T = T_;
  using V = typename Avx512<T>::V;
  R1_TARGET_AVX512 static void max(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm512_maskz_max_ps(0xFFFF, a, b);  // see fast_expf16
    else a = _mm512_maskz_max_pd(0xFF, a, b);
  }
  R1_TARGET_AVX512 static void sub(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm512_sub_ps(a, b); else a = _mm512_sub_pd(a, b);
  }
  R1_TARGET_AVX512 static void add(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm512_add_ps(a, b); else a = _mm512_add_pd(a, b);
  }
  R1_TARGET_AVX512 static void div(V& a, const V& b) {
    if constexpr (kF32<T>) a = _mm512_div_ps(a, b); else a = _mm512_div_pd(a, b);
  }
  R1_TARGET_AVX512 static void exp(V& v) {
    if constexpr (kF32<T>) v = fast_expf16(v); else exp_lanes_f64<V, 8>(v);
  }
  R1_TARGET_AVX512 static bool any_nan_or_posinf(const V& x) {
    if constexpr (kF32<T>)
      return (_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) |
              _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ)) != 0;
    else
      return (_mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q) |
              _mm512_cmp_pd_mask(x, _mm512_set1_pd(INFINITY), _CMP_EQ_OQ)) != 0;
  }
};

}  // namespace simd

// The n <= P::kLanes elements at p into v (the other lanes unspecified), and n lanes of v to p:
// the whole-vector load or store when n is a full vector, the policy's partial one otherwise.
// Vectors by reference, as the policies take them (code built for the baseline target may
// then name AVX types).
template <class P, class T>
inline void load_n(typename P::V& v, const T* p, int n) {
  if (n == P::kLanes) P::load(v, p);
  else P::load_part(v, p, n);
}
template <class P, class T>
inline void store_n(T* p, const typename P::V& v, int n) {
  if (n == P::kLanes) P::store(p, v);
  else P::store_part(p, v, n);
}

// The ISA of the batch-invariant CPU kernels, chosen once per process (invariant_product_isa:
// the widest the CPU has, or R1_INVARIANT_GEMM_ISA).
enum class SoftmaxIsa { kSse2, kAvx2, kAvx512 };
inline SoftmaxIsa softmax_isa() {
  static const SoftmaxIsa isa = [] {
    const char* name = invariant_product_isa();
    return std::strcmp(name, "avx512") == 0 ? SoftmaxIsa::kAvx512
           : std::strcmp(name, "avx2") == 0 ? SoftmaxIsa::kAvx2
                                            : SoftmaxIsa::kSse2;
  }();
  return isa;
}

}  // namespace r1::cpu
