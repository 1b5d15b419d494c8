// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator. The same (key, counter) gives the same bits on every device and
// thread, so a sample keyed by (seed, sequence, position) never depends on its neighbours.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define R1_RNG_HD __host__ __device__
#else
#define R1_RNG_HD
#endif

namespace r1 {

struct Philox4x32 {
  uint32_t v[4];
};

R1_RNG_HD inline Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// Four 32-bit words for (seed, stream, index): stream names a sequence (a tensor, a sample),
// index a position in it.
R1_RNG_HD inline Philox4x32 philox_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  Philox4x32 c{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in [0, 1) with 24 random bits (exact in f32).
R1_RNG_HD inline float uniform01(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}
// Uniform in [0, 1) with 53 random bits.
R1_RNG_HD inline double uniform01_f64(uint32_t lo, uint32_t hi) {
  const uint64_t b = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(b & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Two standard normals from two uniform words (Box-Muller), in double.
R1_RNG_HD inline void box_muller(uint32_t a, uint32_t b, uint32_t c, uint32_t d, double* z0,
                                 double* z1) {
  const double u1 = 1.0 - uniform01_f64(a, b);  // (0, 1]: log is finite
  const double u2 = uniform01_f64(c, d);
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double t = 6.283185307179586476925 * u2;
  *z0 = r * std::cos(t);
  *z1 = r * std::sin(t);
}

}  // namespace r1
