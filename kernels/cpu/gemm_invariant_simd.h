// The vector policies of the batch-invariant CPU product (kernels/cpu/gemm_invariant.cc):
// the only ISA-specific code. Each policy says, for f32 or f64, how to load, store,
// broadcast, multiply-add and transpose with one vector ISA; the kernels are written once
// over them. Every function carries its ISA's target attribute (the build has no -march) and
// takes vectors by reference, so that code built for the baseline target may name them; the
// kernels' per-ISA entry points (`flatten`) inline them. Included by gemm_invariant.cc and simd_softmax.h (paged attention, the sampler).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace r1::cpu::simd {

#define R1_TARGET_AVX __attribute__((target("avx")))
#define R1_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define R1_TARGET_AVX512 __attribute__((target("avx512f")))

template <class T>
constexpr bool kF32 = std::is_same_v<T, float>;

// The intrinsic vector type of T in kBytes (a specialization, not std::conditional: template
// arguments drop __m128's may_alias attribute).
template <class T, int kBytes>
struct VecOf;
template <> struct VecOf<float, 16> { using type = __m128; };
template <> struct VecOf<double, 16> { using type = __m128d; };
template <> struct VecOf<float, 32> { using type = __m256; };
template <> struct VecOf<double, 32> { using type = __m256d; };
template <> struct VecOf<float, 64> { using type = __m512; };
template <> struct VecOf<double, 64> { using type = __m512d; };

// In-register transposes for packing a transposed b: dst[c * ldd + r] = src[r * lds + c]
// for an 8 x 8 (f32) or 4 x 4 (f64) block with AVX, 4 x 4 or 2 x 2 with SSE2: one vector
// store per row of the block instead of one scalar store per element.
R1_TARGET_AVX inline void transpose_block_avx(const float* src, int64_t lds, float* dst,
                                              int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

R1_TARGET_AVX inline void transpose_block_avx(const double* src, int64_t lds, double* dst,
                                              int64_t ldd) {
  __m256d r[4], t[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(src + i * lds);
  t[0] = _mm256_unpacklo_pd(r[0], r[1]);
  t[1] = _mm256_unpackhi_pd(r[0], r[1]);
  t[2] = _mm256_unpacklo_pd(r[2], r[3]);
  t[3] = _mm256_unpackhi_pd(r[2], r[3]);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t[0], t[2], 0x20));
  _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t[1], t[3], 0x20));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t[0], t[2], 0x31));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t[1], t[3], 0x31));
}

inline void transpose_block_sse2(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + lds);
  __m128 r2 = _mm_loadu_ps(src + 2 * lds), r3 = _mm_loadu_ps(src + 3 * lds);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(dst, r0);
  _mm_storeu_ps(dst + ldd, r1);
  _mm_storeu_ps(dst + 2 * ldd, r2);
  _mm_storeu_ps(dst + 3 * ldd, r3);
}

inline void transpose_block_sse2(const double* src, int64_t lds, double* dst, int64_t ldd) {
  const __m128d r0 = _mm_loadu_pd(src), r1 = _mm_loadu_pd(src + lds);
  _mm_storeu_pd(dst, _mm_unpacklo_pd(r0, r1));
  _mm_storeu_pd(dst + ldd, _mm_unpackhi_pd(r0, r1));
}

// x86-64 baseline: 128-bit, no FMA, so a term is a multiply then an add (two roundings).
// GCC contracts a multiply feeding an add into an FMA where the target has one (C++ defaults
// to -ffp-contract=fast): the FMA policies below say fma explicitly, and this one is only
// compiled for the baseline target, which has none. (Built with -march=haswell or newer, it
// would contract, everywhere alike, and give the FMA policies' bits.)
template <class T_>
struct Sse2 {
  using T = T_;
  using V = typename VecOf<T, 16>::type;
  static constexpr int kLanes = 16 / sizeof(T);
  static void zero(V& v) {
    if constexpr (kF32<T>) v = _mm_setzero_ps(); else v = _mm_setzero_pd();
  }
  static void load(V& v, const T* p) {
    if constexpr (kF32<T>) v = _mm_loadu_ps(p); else v = _mm_loadu_pd(p);
  }
  static void store(T* p, const V& v) {
    if constexpr (kF32<T>) _mm_storeu_ps(p, v); else _mm_storeu_pd(p, v);
  }
  static void bcast(V& v, T x) {
    if constexpr (kF32<T>) v = _mm_set1_ps(x); else v = _mm_set1_pd(x);
  }
  static void madd(V& acc, const V& x, const V& y) {  // acc + x * y, rounded twice
    if constexpr (kF32<T>) acc = _mm_add_ps(acc, _mm_mul_ps(x, y));
    else acc = _mm_add_pd(acc, _mm_mul_pd(x, y));
  }
  static void mul(V& v, const V& s) {
    if constexpr (kF32<T>) v = _mm_mul_ps(v, s); else v = _mm_mul_pd(v, s);
  }
  // The first n < kLanes lanes (no masked moves before AVX: through a buffer).
  static void load_part(V& v, const T* p, int n) {
    alignas(16) T buf[kLanes] = {};
    std::memcpy(buf, p, sizeof(T) * n);
    load(v, buf);
  }
  static void store_part(T* p, const V& v, int n) {
    alignas(16) T buf[kLanes];
    store(buf, v);
    std::memcpy(p, buf, sizeof(T) * n);
  }
  static constexpr int kTransposeBlock = kLanes;
  static void transpose_block(const T* src, int64_t lds, T* dst, int64_t ldd) {
    transpose_block_sse2(src, lds, dst, ldd);
  }
};

// 256-bit with FMA: one rounding per term.
template <class T_>
struct Avx2 {
  using T = T_;
  using V = typename VecOf<T, 32>::type;
  static constexpr int kLanes = 32 / sizeof(T);
  R1_TARGET_AVX2 static void zero(V& v) {
    if constexpr (kF32<T>) v = _mm256_setzero_ps(); else v = _mm256_setzero_pd();
  }
  R1_TARGET_AVX2 static void load(V& v, const T* p) {
    if constexpr (kF32<T>) v = _mm256_loadu_ps(p); else v = _mm256_loadu_pd(p);
  }
  R1_TARGET_AVX2 static void store(T* p, const V& v) {
    if constexpr (kF32<T>) _mm256_storeu_ps(p, v); else _mm256_storeu_pd(p, v);
  }
  R1_TARGET_AVX2 static void bcast(V& v, T x) {
    if constexpr (kF32<T>) v = _mm256_set1_ps(x); else v = _mm256_set1_pd(x);
  }
  R1_TARGET_AVX2 static void madd(V& acc, const V& x, const V& y) {  // fma(x, y, acc)
    if constexpr (kF32<T>) acc = _mm256_fmadd_ps(x, y, acc);
    else acc = _mm256_fmadd_pd(x, y, acc);
  }
  R1_TARGET_AVX2 static void mul(V& v, const V& s) {
    if constexpr (kF32<T>) v = _mm256_mul_ps(v, s); else v = _mm256_mul_pd(v, s);
  }
  // The first n < kLanes lanes (masked moves; the other lanes load as 0, are not stored).
  R1_TARGET_AVX2 static __m256i lane_mask(int n) {
    if constexpr (kF32<T>)
      return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    else
      return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  R1_TARGET_AVX2 static void load_part(V& v, const T* p, int n) {
    if constexpr (kF32<T>) v = _mm256_maskload_ps(p, lane_mask(n));
    else v = _mm256_maskload_pd(p, lane_mask(n));
  }
  R1_TARGET_AVX2 static void store_part(T* p, const V& v, int n) {
    if constexpr (kF32<T>) _mm256_maskstore_ps(p, lane_mask(n), v);
    else _mm256_maskstore_pd(p, lane_mask(n), v);
  }
  static constexpr int kTransposeBlock = 32 / sizeof(T);  // 256-bit blocks
  R1_TARGET_AVX2 static void transpose_block(const T* src, int64_t lds, T* dst, int64_t ldd) {
    transpose_block_avx(src, lds, dst, ldd);
  }
};

// 512-bit with FMA: the same operations as Avx2 lane for lane, hence the same bits.
template <class T_>
struct Avx512 {
  using T = T_;
  using V = typename VecOf<T, 64>::type;
  static constexpr int kLanes = 64 / sizeof(T);
  R1_TARGET_AVX512 static void zero(V& v) {
    if constexpr (kF32<T>) v = _mm512_setzero_ps(); else v = _mm512_setzero_pd();
  }
  R1_TARGET_AVX512 static void load(V& v, const T* p) {
    if constexpr (kF32<T>) v = _mm512_loadu_ps(p); else v = _mm512_loadu_pd(p);
  }
  R1_TARGET_AVX512 static void store(T* p, const V& v) {
    if constexpr (kF32<T>) _mm512_storeu_ps(p, v); else _mm512_storeu_pd(p, v);
  }
  R1_TARGET_AVX512 static void bcast(V& v, T x) {
    if constexpr (kF32<T>) v = _mm512_set1_ps(x); else v = _mm512_set1_pd(x);
  }
  R1_TARGET_AVX512 static void madd(V& acc, const V& x, const V& y) {  // fma(x, y, acc)
    if constexpr (kF32<T>) acc = _mm512_fmadd_ps(x, y, acc);
    else acc = _mm512_fmadd_pd(x, y, acc);
  }
  R1_TARGET_AVX512 static void mul(V& v, const V& s) {
    if constexpr (kF32<T>) v = _mm512_mul_ps(v, s); else v = _mm512_mul_pd(v, s);
  }
  // The first n < kLanes lanes (masked moves; the other lanes load as 0, are not stored).
  R1_TARGET_AVX512 static void load_part(V& v, const T* p, int n) {
    if constexpr (kF32<T>) v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
    else v = _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
  }
  R1_TARGET_AVX512 static void store_part(T* p, const V& v, int n) {
    if constexpr (kF32<T>) _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
    else _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), v);
  }
  static constexpr int kTransposeBlock = 32 / sizeof(T);  // 256-bit blocks
  R1_TARGET_AVX512 static void transpose_block(const T* src, int64_t lds, T* dst, int64_t ldd) {
    transpose_block_avx(src, lds, dst, ldd);
  }
};

}  // namespace r1::cpu::simd
