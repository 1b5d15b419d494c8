// Inline bodies of engine/convert.h (host and device). Rounding is done on the bits (and the
// one float multiply is exact), so results do not depend on the FPU's rounding mode or on
// flush-to-zero in device code.
// Verified exhaustively by tests/test_dtype.cc.
#pragma once
#include <cstring>

namespace r1 {
namespace convert_detail {

R1_HD inline uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

R1_HD inline float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

inline constexpr uint32_t kF32Inf = 0x7f800000u;
inline constexpr uint32_t kF32QuietBit = 0x00400000u;

// Shifts m right by `shift` (1..31) rounding to nearest, ties to even.
R1_HD inline uint32_t shift_right_rne(uint32_t m, int shift) {
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

// Rounds a finite, non-negative f32 (given as bits `a`) to a binary format with kMant
// mantissa bits and exponent bias kBias, returning the magnitude code (exponent << kMant |
// mantissa), normals and subnormals alike. The caller handles overflow: a carry out of the
// largest exponent lands on the next code, which the caller has already ruled out or wants
// (IEEE inf).
template <int kMant, int kBias>
R1_HD inline uint32_t round_f32_magnitude(uint32_t a) {
  constexpr int kDrop = 23 - kMant;  // f32 mantissa bits that do not fit
  constexpr uint32_t kRebias = static_cast<uint32_t>(127 - kBias) << 23;
  if (a >= kRebias + (1u << 23)) {  // a normal of the target format
    // Rebias the exponent in place; a mantissa carry correctly bumps the exponent.
    const uint32_t t = a - kRebias;
    return (t + ((1u << (kDrop - 1)) - 1u) + ((t >> kDrop) & 1u)) >> kDrop;
  }
  // Subnormal of the target: unit 2^(1 - kBias - kMant). With value = m * 2^(e - 150),
  // the code is m * 2^(e - 150 - (1 - kBias - kMant)) = m >> shift.
  const int e = static_cast<int>(a >> 23);
  const int shift = 151 - kBias - kMant - e;
  if (shift > 24) return 0;  // below half the smallest subnormal (m < 2^24)
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;  // e >= 1 here since shift <= 24
  return shift_right_rne(m, shift);
}

// Narrow binary format with kExp exponent bits, kMant mantissa bits, bias 2^(kExp-1) - 1,
// decoded exactly to f32 (every such format with kExp <= 8 embeds in f32). kNoInf selects
// how the top exponent decodes: true for e4m3 (only S.1111.111 is NaN, the rest are
// normals), false for IEEE-like formats (inf when the mantissa is 0, else NaN).
template <int kExp, int kMant, bool kNoInf>
R1_HD inline float decode_narrow(uint32_t code) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kExpMask = (1u << kExp) - 1u;
  constexpr uint32_t kMantMask = (1u << kMant) - 1u;
  const uint32_t sign = (code >> (kExp + kMant)) << 31;
  const uint32_t e = (code >> kMant) & kExpMask;
  const uint32_t m = code & kMantMask;
  if (e == kExpMask) {
    if (kNoInf) {
      if (m == kMantMask) return bits_f32(sign | kF32Inf | kF32QuietBit);
    } else {
      // inf, or a NaN made quiet with its payload kept.
      return bits_f32(sign | kF32Inf | (m == 0 ? 0u : kF32QuietBit | (m << (23 - kMant))));
    }
  }
  if (e == 0) {
    // m * 2^(1 - kBias - kMant): both factors and the product are exact f32 normals (or
    // zero), so neither the rounding mode nor flush-to-zero can change it; branch-free, so
    // the host loops vectorize.
    const float unit = bits_f32(static_cast<uint32_t>(127 + 1 - kBias - kMant) << 23);
    return bits_f32(sign | f32_bits(static_cast<float>(m) * unit));
  }
  return bits_f32(sign | ((e - kBias + 127) << 23) | (m << (23 - kMant)));
}

}  // namespace convert_detail

// bf16 is the top half of f32: widening is a shift, narrowing rounds the low half away.
R1_HD inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = convert_detail::f32_bits(f);
  if ((u & 0x7fffffffu) > convert_detail::kF32Inf)  // NaN: quiet it, keep sign and payload top
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  // RNE; the carry out of the largest finite value gives inf, as IEEE says.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

R1_HD inline float bf16_to_f32(uint16_t h) {
  return convert_detail::bits_f32(static_cast<uint32_t>(h) << 16);
}

R1_HD inline uint16_t f32_to_f16(float f) {
  using namespace convert_detail;
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > kF32Inf) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  // 65520 = 65504 + half an ulp: the tie rounds to the even neighbour, which is inf.
  constexpr uint32_t kF16OverflowBits = 0x477ff000u;  // 65520.0f
  if (a >= kF16OverflowBits) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | round_f32_magnitude<10, 15>(a));
}

R1_HD inline float f16_to_f32(uint16_t h) { return convert_detail::decode_narrow<5, 10, false>(h); }

// OCP OFP8 e4m3 with saturation: no inf; S.1111.110 = 448 is the largest finite value.
R1_HD inline uint8_t f32_to_e4m3(float f) {
  using namespace convert_detail;
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > kF32Inf) return static_cast<uint8_t>(sign | 0x7fu);
  constexpr uint32_t kE4M3MaxBits = 0x43e00000u;  // 448.0f
  if (a >= kE4M3MaxBits) return static_cast<uint8_t>(sign | 0x7eu);  // satfinite, inf too
  // Below 448 the rounded code is at most 0x7e (448), never the NaN code.
  return static_cast<uint8_t>(sign | round_f32_magnitude<3, 7>(a));
}

R1_HD inline float e4m3_to_f32(uint8_t b) { return convert_detail::decode_narrow<4, 3, true>(b); }

// OCP OFP8 e5m2 with saturation: S.11110.11 = 57344 is the largest finite value.
R1_HD inline uint8_t f32_to_e5m2(float f) {
  using namespace convert_detail;
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > kF32Inf) return static_cast<uint8_t>(sign | 0x7fu);
  constexpr uint32_t kE5M2MaxBits = 0x47600000u;  // 57344.0f
  if (a >= kE5M2MaxBits) return static_cast<uint8_t>(sign | 0x7bu);  // satfinite, inf too
  return static_cast<uint8_t>(sign | round_f32_magnitude<2, 15>(a));
}

R1_HD inline float e5m2_to_f32(uint8_t b) { return convert_detail::decode_narrow<5, 2, false>(b); }

}  // namespace r1
