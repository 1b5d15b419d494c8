// Inline bodies of engine/convert.h (host and device).
#pragma once
#include <cstring>

namespace r1 {

// PLACEHOLDER: replaced by the dtype-conversion work; these bodies are not yet verified.
R1_HD inline uint32_t r1_f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
R1_HD inline float r1_bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
R1_HD inline uint16_t f32_to_bf16(float f) {
  uint32_t u = r1_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
R1_HD inline float bf16_to_f32(uint16_t h) { return r1_bits_f32(static_cast<uint32_t>(h) << 16); }
R1_HD inline uint16_t f32_to_f16(float) { return 0; }
R1_HD inline float f16_to_f32(uint16_t) { return 0; }
R1_HD inline uint8_t f32_to_e4m3(float) { return 0; }
R1_HD inline float e4m3_to_f32(uint8_t) { return 0; }
R1_HD inline uint8_t f32_to_e5m2(float) { return 0; }
R1_HD inline float e5m2_to_f32(uint8_t) { return 0; }

}  // namespace r1
