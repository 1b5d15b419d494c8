// Scalar dtype conversions, usable on host and device.
//  - f32 -> bf16 / f16: round to nearest, ties to even; NaN stays NaN (quiet); f16 overflow
//    goes to inf as IEEE 754 says.
//  - f32 -> e4m3 / e5m2 (OCP 8-bit floating point spec v1.0): round to nearest even with
//    saturation: finite values beyond the largest normal and +-inf become +-max (448 for
//    e4m3, 57344 for e5m2); NaN becomes NaN (e4m3 has no inf: S.1111.111 is its NaN).
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

// Converts n elements between any two dtypes on the host. Floating -> integer truncates
// toward zero; integer/bool -> floating is exact where the target can represent it.
void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, size_t n);

}  // namespace r1

#include "engine/convert_inl.h"
