// One element of any dtype converted to any other, on the host and on a device: the
// per-dtype codecs and convert_one<S, D>, shared by the CPU's convert_buffer
// (engine/convert.cc) and CUDA's copy_strided (kernels/cuda/basic.cu), so that the two give
// the same bits for every value, edge cases included (wide integers, NaN payloads,
// out-of-range narrowing). The rules:
//  - same dtype: the bits, unchanged;
//  - integer -> integer: through int64, narrowing wraps (C++ conversion); bool is 0/1;
//  - integer -> floating: one rounding (RNE) to the destination; f64 -> narrow floating too
//    (round to odd at f32, then RNE: a single rounding, see below);
//  - floating -> integer: truncation toward zero, saturated to the range, NaN -> 0;
//  - f32 and narrower -> anything: exact through f32.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/convert.h"
#include "engine/dtype.h"

namespace r1::convert_codecs {

// Floating codecs: `Storage`, decode to f32 (exact: every storage format embeds in f32), and
// encode from f32. F64 is handled apart since it does not embed in f32.
struct F32C {
  using Storage = float;
  R1_HD static float decode(float x) { return x; }
  R1_HD static float encode(float x) { return x; }
};
struct BF16C {
  using Storage = uint16_t;
  R1_HD static float decode(uint16_t x) { return bf16_to_f32(x); }
  R1_HD static uint16_t encode(float x) { return f32_to_bf16(x); }
};
struct F16C {
  using Storage = uint16_t;
  R1_HD static float decode(uint16_t x) { return f16_to_f32(x); }
  R1_HD static uint16_t encode(float x) { return f32_to_f16(x); }
};
struct E4M3C {
  using Storage = uint8_t;
  R1_HD static float decode(uint8_t x) { return e4m3_to_f32(x); }
  R1_HD static uint8_t encode(float x) { return f32_to_e4m3(x); }
};
struct E5M2C {
  using Storage = uint8_t;
  R1_HD static float decode(uint8_t x) { return e5m2_to_f32(x); }
  R1_HD static uint8_t encode(float x) { return f32_to_e5m2(x); }
};
struct F64C {
  using Storage = double;
};
// Integer codecs: to and from int64, exactly; narrowing wraps as C++ conversion does.
template <class T>
struct IntC {
  using Storage = T;
  R1_HD static int64_t to_i64(T x) { return static_cast<int64_t>(x); }
  R1_HD static T from_i64(int64_t v) { return static_cast<T>(v); }
};
struct BoolC {
  using Storage = uint8_t;
  R1_HD static int64_t to_i64(uint8_t x) { return x != 0 ? 1 : 0; }
  R1_HD static uint8_t from_i64(int64_t v) { return v != 0 ? 1 : 0; }
};

template <class C> constexpr bool kIsF64 = std::is_same_v<C, F64C>;
template <class C> constexpr bool kIsBool = std::is_same_v<C, BoolC>;
template <class C> constexpr bool kIsInt = requires { &C::to_i64; };

// The codec of a dtype: Codec<DType::BF16> = BF16C, ...
template <DType T> struct CodecOf;
template <> struct CodecOf<DType::F32> { using type = F32C; };
template <> struct CodecOf<DType::F64> { using type = F64C; };
template <> struct CodecOf<DType::BF16> { using type = BF16C; };
template <> struct CodecOf<DType::F16> { using type = F16C; };
template <> struct CodecOf<DType::E4M3> { using type = E4M3C; };
template <> struct CodecOf<DType::E5M2> { using type = E5M2C; };
template <> struct CodecOf<DType::I32> { using type = IntC<int32_t>; };
template <> struct CodecOf<DType::I64> { using type = IntC<int64_t>; };
template <> struct CodecOf<DType::U8> { using type = IntC<uint8_t>; };
template <> struct CodecOf<DType::Bool> { using type = BoolC; };
template <DType T> using Codec = typename CodecOf<T>::type;

// ---- single-rounding helpers --------------------------------------------------------------
// Rounding to odd at a precision two or more bits wider than the final format, then rounding
// to nearest even, equals a single RNE rounding (Boldo & Melquiond, "Emulation of FMA and
// correctly rounded sums: proved algorithms using rounding to odd", 2008). f32 has 24 bits;
// bf16/f16/e4m3/e5m2 have at most 11, so f64 -> f32 (odd) -> narrow (RNE) rounds once.
R1_HD inline float f64_to_f32_round_odd(double d) {
  const float f = static_cast<float>(d);  // RNE
  // d - d is 0 exactly when d is finite (inf - inf and NaN are NaN): isfinite on both sides.
  if (!(d - d == 0.0) || static_cast<double>(f) == d) return f;
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 1u) == 0) {
    // RNE chose the even neighbour; round-to-odd takes the odd one on the same side of d.
    // Stepping the bit pattern moves the magnitude by one ulp (inf - 1 ulp = FLT_MAX).
    const double af = f < 0 ? -static_cast<double>(f) : static_cast<double>(f);
    const double ad = d < 0 ? -d : d;
    u = af > ad ? u - 1u : u + 1u;
  }
  float r;
  memcpy(&r, &u, 4);
  return r;
}

// int64 -> f64 rounded to odd: keep the top 53 significant bits, OR the dropped ones into the
// last kept bit (the sticky bit), then scale back exactly (times 2^shift, shift <= 11).
R1_HD inline double i64_to_f64_round_odd(int64_t v) {
  const bool neg = v < 0;
  uint64_t m = neg ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  int shift = 0;
  while ((m >> shift) >> 53) ++shift;
  if (shift > 0) {
    const bool sticky = (m & ((uint64_t{1} << shift) - 1)) != 0;
    m = (m >> shift) | (sticky ? 1u : 0u);
  }
  const double r = static_cast<double>(m) * static_cast<double>(uint64_t{1} << shift);
  return neg ? -r : r;
}

// Truncates toward zero and saturates to T's range; NaN -> 0.
template <class T>
R1_HD T float_to_int(double v) {
  if (v != v) return 0;
  constexpr double kLo = static_cast<double>(std::numeric_limits<T>::min());  // 0 or -2^(b-1)
  // 2^(bits of magnitude), exactly: max/2 + 1 is a power of two that fits T.
  constexpr double kHiExcl = 2.0 * static_cast<double>(std::numeric_limits<T>::max() / 2 + 1);
  if (v >= kHiExcl) return std::numeric_limits<T>::max();
  if (v <= kLo - 1.0) return std::numeric_limits<T>::min();
  return static_cast<T>(v);  // in range after truncation: defined
}

// ---- one element, any pair ----------------------------------------------------------------
template <class S, class D>
R1_HD typename D::Storage convert_one(typename S::Storage x) {
  if constexpr (std::is_same_v<S, D>) {  // the bits (NaN payloads, wide integers)
    return x;
  } else if constexpr (kIsInt<S> && kIsInt<D>) {
    return D::from_i64(S::to_i64(x));
  } else if constexpr (kIsInt<S>) {  // integer -> floating
    const int64_t v = S::to_i64(x);
    if constexpr (kIsF64<D>) return static_cast<double>(v);
    else if constexpr (std::is_same_v<D, F32C>) return static_cast<float>(v);
    else return D::encode(f64_to_f32_round_odd(i64_to_f64_round_odd(v)));
  } else if constexpr (kIsF64<S>) {  // f64 -> anything
    if constexpr (kIsBool<D>) return x != 0.0 ? 1 : 0;
    else if constexpr (kIsInt<D>) return float_to_int<typename D::Storage>(x);
    else if constexpr (std::is_same_v<D, F32C>) return static_cast<float>(x);
    else return D::encode(f64_to_f32_round_odd(x));
  } else {  // f32 or narrower -> anything: exact through f32
    const float f = S::decode(x);
    if constexpr (kIsF64<D>) return static_cast<double>(f);
    else if constexpr (kIsBool<D>) return f != 0.0f ? 1 : 0;
    else if constexpr (kIsInt<D>) return float_to_int<typename D::Storage>(f);
    else return D::encode(f);
  }
}

}  // namespace r1::convert_codecs
