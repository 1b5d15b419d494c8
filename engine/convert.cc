// convert_buffer: one tight loop per (source, destination) dtype pair, instantiated from
// per-dtype codecs, so f32 <-> bf16/f16/e4m3/e5m2 and f32 <-> f64 compile to straight loops
// over the scalar conversions of engine/convert_inl.h.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/convert.h"
#include "engine/error.h"

namespace r1 {
namespace {

// Below this many elements a parallel region costs more than the conversion.
constexpr size_t kParallelMinElements = size_t{1} << 15;

// ---- per-dtype codecs -------------------------------------------------------------------
// Floating codecs: `Storage`, decode to f32 (exact: every storage format embeds in f32), and
// encode from f32. F64 is handled apart since it does not embed in f32.
struct F32C {
  using Storage = float;
  static float decode(float x) { return x; }
  static float encode(float x) { return x; }
};
struct BF16C {
  using Storage = uint16_t;
  static float decode(uint16_t x) { return bf16_to_f32(x); }
  static uint16_t encode(float x) { return f32_to_bf16(x); }
};
struct F16C {
  using Storage = uint16_t;
  static float decode(uint16_t x) { return f16_to_f32(x); }
  static uint16_t encode(float x) { return f32_to_f16(x); }
};
struct E4M3C {
  using Storage = uint8_t;
  static float decode(uint8_t x) { return e4m3_to_f32(x); }
  static uint8_t encode(float x) { return f32_to_e4m3(x); }
};
struct E5M2C {
  using Storage = uint8_t;
  static float decode(uint8_t x) { return e5m2_to_f32(x); }
  static uint8_t encode(float x) { return f32_to_e5m2(x); }
};
struct F64C {
  using Storage = double;
};
// Integer codecs: to and from int64, exactly; narrowing wraps as C++ conversion does.
template <class T>
struct IntC {
  using Storage = T;
  static int64_t to_i64(T x) { return static_cast<int64_t>(x); }
  static T from_i64(int64_t v) { return static_cast<T>(v); }
};
struct BoolC {
  using Storage = uint8_t;
  static int64_t to_i64(uint8_t x) { return x != 0 ? 1 : 0; }
  static uint8_t from_i64(int64_t v) { return v != 0 ? 1 : 0; }
};

template <class C> constexpr bool kIsF64 = std::is_same_v<C, F64C>;
template <class C> constexpr bool kIsBool = std::is_same_v<C, BoolC>;
template <class C> constexpr bool kIsInt = requires { &C::to_i64; };

// ---- single-rounding helpers --------------------------------------------------------------
// Rounding to odd at a precision two or more bits wider than the final format, then rounding
// to nearest even, equals a single RNE rounding (Boldo & Melquiond, "Emulation of FMA and
// correctly rounded sums: proved algorithms using rounding to odd", 2008). f32 has 24 bits;
// bf16/f16/e4m3/e5m2 have at most 11, so f64 -> f32 (odd) -> narrow (RNE) rounds once.
float f64_to_f32_round_odd(double d) {
  const float f = static_cast<float>(d);  // RNE
  if (!std::isfinite(d) || static_cast<double>(f) == d) return f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 1u) == 0) {
    // RNE chose the even neighbour; round-to-odd takes the odd one on the same side of d.
    // Stepping the bit pattern moves the magnitude by one ulp (inf - 1 ulp = FLT_MAX).
    u = std::fabs(static_cast<double>(f)) > std::fabs(d) ? u - 1u : u + 1u;
  }
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// int64 -> f64 rounded to odd: keep the top 53 significant bits, OR the dropped ones into the
// last kept bit (the sticky bit), then scale back exactly.
double i64_to_f64_round_odd(int64_t v) {
  const bool neg = v < 0;
  uint64_t m = neg ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  int shift = 0;
  while ((m >> shift) >> 53) ++shift;
  if (shift > 0) {
    const bool sticky = (m & ((uint64_t{1} << shift) - 1)) != 0;
    m = (m >> shift) | (sticky ? 1u : 0u);
  }
  const double r = std::ldexp(static_cast<double>(m), shift);
  return neg ? -r : r;
}

// Truncates toward zero and saturates to T's range; NaN -> 0.
template <class T>
T float_to_int(double v) {
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
typename D::Storage convert_one(typename S::Storage x) {
  if constexpr (kIsInt<S> && kIsInt<D>) {
    return D::from_i64(S::to_i64(x));
  } else if constexpr (kIsInt<S>) {  // integer -> floating
    const int64_t v = S::to_i64(x);
    if constexpr (kIsF64<D>) return static_cast<double>(v);
    else if constexpr (std::is_same_v<D, F32C>) return static_cast<float>(v);
    else return D::encode(f64_to_f32_round_odd(i64_to_f64_round_odd(v)));
  } else if constexpr (kIsF64<S>) {  // f64 -> anything
    if constexpr (kIsF64<D>) return x;
    else if constexpr (kIsBool<D>) return x != 0.0 ? 1 : 0;
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

template <class S, class D>
void convert_loop(const void* src, void* dst, size_t n) {
  const auto* s = static_cast<const typename S::Storage*>(src);
  auto* d = static_cast<typename D::Storage*>(dst);
  const int64_t count = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) d[i] = convert_one<S, D>(s[i]);
}

// Calls f.template operator()<Codec>() for the codec of t.
template <class F>
void with_codec(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<F32C>();
    case DType::F64: return f.template operator()<F64C>();
    case DType::BF16: return f.template operator()<BF16C>();
    case DType::F16: return f.template operator()<F16C>();
    case DType::E4M3: return f.template operator()<E4M3C>();
    case DType::E5M2: return f.template operator()<E5M2C>();
    case DType::I32: return f.template operator()<IntC<int32_t>>();
    case DType::I64: return f.template operator()<IntC<int64_t>>();
    case DType::U8: return f.template operator()<IntC<uint8_t>>();
    case DType::Bool: return f.template operator()<BoolC>();
  }
  R1_CHECK(false, "convert_buffer: unknown dtype {}", static_cast<int>(t));
}

}  // namespace

void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, size_t n) {
  if (n == 0) return;
  if (src_t == dst_t) {
    std::memcpy(dst, src, n * dtype_size(src_t));
    return;
  }
  with_codec(src_t, [&]<class S>() {
    with_codec(dst_t, [&]<class D>() { convert_loop<S, D>(src, dst, n); });
  });
}

}  // namespace r1
