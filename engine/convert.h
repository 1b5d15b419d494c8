// Scalar dtype conversions, usable on host and device.
//  - f32 -> bf16 / f16: round to nearest, ties to even; NaN stays NaN (quiet, sign kept); f16
//    overflow goes to inf as IEEE 754 says; subnormals are exact.
//  - f32 -> e4m3 / e5m2 (OCP 8-bit floating point spec v1.0): round to nearest even with
//    saturation ("satfinite", as cuBLASLt and DeepGEMM quantize): finite values beyond the
//    largest normal and +-inf become +-max (448 for e4m3, 57344 for e5m2); NaN becomes NaN
//    with its sign (S.1111.111 for e4m3, which has no inf; S.11111.11 for e5m2); -0 is kept.
//  - Decoding is exact. bf16 -> f32 is a plain shift (NaN payloads pass through unchanged);
//    the other decoders return NaNs quiet with sign and payload kept; e5m2 keeps its IEEE-like
//    inf and NaN encodings.
// OWNER: dtype conversions (see tests/test_dtype.cc for the exhaustive checks).
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

#if defined(__CUDACC__)
#define R1_HD __host__ __device__
#else
#define R1_HD
#endif

namespace r1 {

R1_HD uint16_t f32_to_bf16(float f);
R1_HD float bf16_to_f32(uint16_t h);
R1_HD uint16_t f32_to_f16(float f);
R1_HD float f16_to_f32(uint16_t h);
R1_HD uint8_t f32_to_e4m3(float f);
R1_HD float e4m3_to_f32(uint8_t b);
R1_HD uint8_t f32_to_e5m2(float f);
R1_HD float e5m2_to_f32(uint8_t b);

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

// Converts n contiguous elements between any two dtypes on the host (OpenMP over elements
// for large n). Every result is the correctly rounded value of the source element:
//  - floating -> floating: as the scalar functions above; f64 -> bf16/f16/fp8 rounds once
//    (through f32 rounded to odd, so there is no double rounding).
//  - integer -> integer: exact in int64 (never through double); narrowing wraps modulo 2^bits
//    as C++ integer conversion does; bool in either role is 0/1 (any nonzero byte reads 1).
//  - integer -> floating: rounded once to nearest even (int64 above 2^53 included).
//  - floating -> integer: truncates toward zero, saturates to the target's range, NaN -> 0;
//    floating -> bool is (x != 0), so NaN -> 1.
void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, size_t n);

}  // namespace r1

#include "engine/convert_inl.h"
