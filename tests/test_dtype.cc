// Dtype conversions (engine/convert.h), checked against references that share no code with it:
//  1. every 16-bit bf16/f16 and 8-bit e4m3/e5m2 pattern decoded against a decoder built from
//     the format's fields with std::ldexp;
//  2. the encoders against a reference that searches the sorted table of every finite value
//     (nearest, ties to the even code, then the overflow rule), on every value, every
//     midpoint, their f32 neighbours, specials and millions of random f32; f16 also against
//     GCC's _Float16;
//  3. convert_buffer for every dtype pair on random data against the scalar functions (and
//     the table reference in long double where the source does not fit in f32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/convert.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using LD = long double;  // holds every f64 and int64 exactly (x86-64: 64-bit significand)
static_assert(std::numeric_limits<LD>::digits >= 64, "the references need an exact int64");

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- formats from their fields ------------------------------------------------------------
struct Format {
  const char* name;
  int exp_bits, mant_bits, bias;
  bool ieee_specials;  // top exponent = inf/NaN; false: only S.1..1.1..1 is NaN (e4m3)
  bool saturating;     // the encoder sends overflow to +-max rather than +-inf
  float (*decode)(uint32_t);  // the functions under test
  uint32_t (*encode)(float);
  int bits() const { return 1 + exp_bits + mant_bits; }
  uint32_t sign_bit() const { return 1u << (bits() - 1); }
};

const Format kFormats[] = {
    {"bf16", 8, 7, 127, true, false, [](uint32_t p) { return bf16_to_f32(uint16_t(p)); },
     [](float x) -> uint32_t { return f32_to_bf16(x); }},
    {"f16", 5, 10, 15, true, false, [](uint32_t p) { return f16_to_f32(uint16_t(p)); },
     [](float x) -> uint32_t { return f32_to_f16(x); }},
    {"e4m3", 4, 3, 7, false, true, [](uint32_t p) { return e4m3_to_f32(uint8_t(p)); },
     [](float x) -> uint32_t { return f32_to_e4m3(x); }},
    {"e5m2", 5, 2, 15, true, true, [](uint32_t p) { return e5m2_to_f32(uint8_t(p)); },
     [](float x) -> uint32_t { return f32_to_e5m2(x); }},
};

// Independent decoder: sign, biased exponent and mantissa fields, value by std::ldexp.
double ref_decode(const Format& f, uint32_t p) {
  const uint32_t e_all = (1u << f.exp_bits) - 1, m_all = (1u << f.mant_bits) - 1;
  const uint32_t e = (p >> f.mant_bits) & e_all, m = p & m_all;
  double v;
  if (f.ieee_specials && e == e_all) {
    v = m == 0 ? std::numeric_limits<double>::infinity()
               : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.ieee_specials && e == e_all && m == m_all) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(double(m), 1 - f.bias - f.mant_bits);
  } else {
    v = std::ldexp(double(m | (1u << f.mant_bits)), int(e) - f.bias - f.mant_bits);
  }
  return (p & f.sign_bit()) ? -v : v;
}

// Reference encoder: nearest entry of the sorted table of finite magnitudes, ties to the even
// code; beyond the largest value, saturation or (IEEE) the virtual neighbour 2^(emax+1) = inf.
struct RefEncoder {
  static constexpr uint32_t kNaN = 0xffffffffu;  // "some NaN"
  const Format& f;
  std::vector<LD> values;  // increasing, values[0] = 0
  std::vector<uint32_t> codes;

  explicit RefEncoder(const Format& fmt) : f(fmt) {
    for (uint32_t p = 0; p < f.sign_bit(); ++p) {
      const double v = ref_decode(f, p);
      if (std::isfinite(v)) values.push_back(v), codes.push_back(p);
    }
    if (!f.saturating) {  // inf sits where the next binade would start
      const uint32_t e_all = (1u << f.exp_bits) - 1;
      values.push_back(std::ldexp(LD(1), int(e_all) - f.bias));
      codes.push_back(e_all << f.mant_bits);
    }
  }
  LD max_finite() const { return values[values.size() - (f.saturating ? 1 : 2)]; }

  uint32_t encode(LD x) const {
    if (std::isnan(x)) return kNaN;
    const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0;
    const LD a = std::fabs(x);
    if (a >= values.back()) return sign | codes.back();  // +-max (saturating) or +-inf
    const size_t i = std::upper_bound(values.begin(), values.end(), a) - values.begin() - 1;
    const LD mid = (values[i] + values[i + 1]) / 2;  // exact: both have few bits
    uint32_t c;
    if (a < mid) c = codes[i];
    else if (a > mid) c = codes[i + 1];
    else c = (codes[i] & 1) ? codes[i + 1] : codes[i];
    return sign | c;
  }
};

// One reference encoder per format, built once (a table search needs the whole table).
const RefEncoder& ref_encoder(const Format& f) {
  static const std::vector<RefEncoder> refs(std::begin(kFormats), std::end(kFormats));
  return refs[&f - kFormats];
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// ---- 1. decoding --------------------------------------------------------------------------
TEST(Dtype, DecodeEveryPatternMatchesFieldDecoder) {
  for (const Format& f : kFormats) {
    int bad = 0, nans = 0, infs = 0;
    std::string first;
    for (uint32_t p = 0; p < (1u << f.bits()); ++p) {
      const double ref = ref_decode(f, p);
      const float got = f.decode(p);
      nans += std::isnan(ref);
      infs += std::isinf(ref);
      const bool ok = std::isnan(ref) ? std::isnan(got)
                                      : f32_bits(got) == f32_bits(static_cast<float>(ref)) &&
                                            double(static_cast<float>(ref)) == ref;
      if (!ok && bad++ == 0)
        first = hex(p) + " -> " + std::to_string(got) + ", reference " + std::to_string(ref);
    }
    EXPECT_EQ(bad, 0) << f.name << ": " << bad << " of " << (1u << f.bits())
                      << " patterns decode wrong; first " << first;
    // The special encodings the spec defines (a check on the reference itself).
    const int m_codes = 1 << f.mant_bits;
    EXPECT_EQ(nans, f.ieee_specials ? 2 * (m_codes - 1) : 2) << f.name;
    EXPECT_EQ(infs, f.ieee_specials ? 2 : 0) << f.name;
  }
  EXPECT_EQ(RefEncoder(kFormats[2]).max_finite(), kE4M3Max);
  EXPECT_EQ(RefEncoder(kFormats[3]).max_finite(), kE5M2Max);
  EXPECT_EQ(RefEncoder(kFormats[1]).max_finite(), 65504);
}

// ---- 2. encoding --------------------------------------------------------------------------
void push_with_neighbours(std::vector<float>& in, float v) {
  for (float s : {v, -v}) {
    in.push_back(s);
    in.push_back(std::nextafter(s, std::numeric_limits<float>::infinity()));
    in.push_back(std::nextafter(s, -std::numeric_limits<float>::infinity()));
  }
}

// Inputs that probe every rounding decision of format f, then random f32.
std::vector<float> encoder_inputs(const RefEncoder& ref, uint64_t seed, int* inexact_mids) {
  std::vector<float> in;
  const LD inf_or_next = std::ldexp(LD(1), (1 << ref.f.exp_bits) - 1 - ref.f.bias);
  std::vector<LD> grid = ref.values;
  if (ref.f.saturating) grid.push_back(inf_or_next);  // where RNE without saturation goes
  for (size_t i = 0; i < grid.size(); ++i) {
    if (grid[i] <= std::numeric_limits<float>::max()) push_with_neighbours(in, float(grid[i]));
    if (i + 1 == grid.size()) break;
    const LD mid = (grid[i] + grid[i + 1]) / 2;
    if (LD(float(mid)) != mid) ++*inexact_mids;
    push_with_neighbours(in, float(mid));
  }
  const float fmax = float(ref.max_finite());
  for (float v : {fmax * 1.0001f, fmax * 1.5f, fmax * 2.0f, fmax * 1e5f, 1e30f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                  0.0f, std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min()})
    push_with_neighbours(in, v);
  // NaNs: quiet and signaling, payloads high (survive truncation to 16 bits) and low only.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0x7fffffffu, 0x7f810000u,
                       0x7fa00000u})
    for (uint32_t s : {0u, 0x80000000u}) in.push_back(bits_f32(nan | s));
  std::mt19937_64 rng(seed);
  // Random f32 bit patterns, then random values with exponents around the format's range
  // (its subnormals included), then random f32 subnormals.
  const int e_lo = 127 + 1 - ref.f.bias - ref.f.mant_bits - 3;
  const int e_hi = 127 + (1 << ref.f.exp_bits) - ref.f.bias + 1;
  for (int i = 0; i < 2000000; ++i) in.push_back(bits_f32(uint32_t(rng())));
  for (int i = 0; i < 1000000; ++i) {
    const uint64_t r = rng();
    const uint32_t e = uint32_t(std::max(0, e_lo) + int(r % uint64_t(e_hi - std::max(0, e_lo))));
    in.push_back(bits_f32((uint32_t(r >> 32) & 0x807fffffu) | (std::min(e, 254u) << 23)));
  }
  for (int i = 0; i < 100000; ++i) in.push_back(bits_f32(uint32_t(rng()) & 0x807fffffu));
  return in;
}

TEST(Dtype, EncodeMatchesTableSearchReference) {
  for (size_t k = 0; k < std::size(kFormats); ++k) {
    const Format& f = kFormats[k];
    const RefEncoder& ref = ref_encoder(f);
    int inexact_mids = 0;
    const std::vector<float> in = encoder_inputs(ref, test::case_seed(k), &inexact_mids);
    ASSERT_EQ(inexact_mids, 0) << f.name << ": midpoints must be exact f32 to be probed";
    const bool quiet_nans = !f.saturating;  // bf16/f16: NaN stays a quiet NaN
    const uint32_t quiet_bit = 1u << (f.mant_bits - 1);
    size_t bad = 0;
    std::string first;
    for (float x : in) {
      const uint32_t want = ref.encode(x), got = f.encode(x);
      bool ok;
      if (want == RefEncoder::kNaN) {
        ok = std::isnan(f.decode(got)) && bool(got & f.sign_bit()) == std::signbit(x) &&
             (!quiet_nans || (got & quiet_bit));
      } else {
        ok = got == want;
      }
      if (!ok && bad++ == 0)
        first = "f32 " + hex(f32_bits(x)) + " -> " + hex(got) + ", reference " + hex(want);
    }
    EXPECT_EQ(bad, 0u) << f.name << ": " << bad << " of " << in.size()
                       << " inputs encode wrong; first " << first;
  }
}

#if defined(__FLT16_MAX__)
// GCC's _Float16 conversions (libgcc's soft-float or F16C) are an independent implementation.
TEST(Dtype, F16MatchesCompilerFloat16) {
  const Format& f = kFormats[1];
  size_t bad_dec = 0, bad_enc = 0;
  for (uint32_t p = 0; p < 65536; ++p) {
    const uint16_t h = uint16_t(p);
    _Float16 g;
    std::memcpy(&g, &h, 2);
    const float want = static_cast<float>(g), got = f16_to_f32(h);
    bad_dec += !(std::isnan(want) ? std::isnan(got) : f32_bits(want) == f32_bits(got));
  }
  int inexact = 0;
  const std::vector<float> in = encoder_inputs(ref_encoder(f), test::case_seed(100), &inexact);
  for (float x : in) {
    const _Float16 g = static_cast<_Float16>(x);
    uint16_t want;
    std::memcpy(&want, &g, 2);
    const uint16_t got = f32_to_f16(x);
    bad_enc += !(std::isnan(x) ? std::isnan(f16_to_f32(got)) : got == want);
  }
  EXPECT_EQ(bad_dec, 0u) << bad_dec << " of 65536 f16 patterns decode unlike _Float16";
  EXPECT_EQ(bad_enc, 0u) << bad_enc << " of " << in.size() << " f32 encode unlike _Float16";
}
#endif

// ---- 3. convert_buffer --------------------------------------------------------------------
constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::BF16, DType::F16, DType::E4M3,
                                DType::E5M2, DType::I32, DType::I64, DType::U8, DType::Bool};

const Format* format_of(DType t) {
  switch (t) {
    case DType::BF16: return &kFormats[0];
    case DType::F16: return &kFormats[1];
    case DType::E4M3: return &kFormats[2];
    case DType::E5M2: return &kFormats[3];
    default: return nullptr;
  }
}

template <class T>
T load(const std::vector<uint8_t>& b, size_t i) {
  T v;
  std::memcpy(&v, b.data() + i * sizeof(T), sizeof(T));
  return v;
}
template <class T>
void store(std::vector<uint8_t>& b, size_t i, T v) {
  std::memcpy(b.data() + i * sizeof(T), &v, sizeof(T));
}

// The exact value of element i (a NaN keeps its sign).
LD value_of(const std::vector<uint8_t>& b, DType t, size_t i) {
  if (const Format* f = format_of(t)) {
    const uint32_t p = t == DType::BF16 || t == DType::F16 ? load<uint16_t>(b, i)
                                                           : load<uint8_t>(b, i);
    return f->decode(p);
  }
  switch (t) {
    case DType::F32: return load<float>(b, i);
    case DType::F64: return load<double>(b, i);
    case DType::I32: return load<int32_t>(b, i);
    case DType::I64: return load<int64_t>(b, i);
    case DType::U8: return load<uint8_t>(b, i);
    default: return load<uint8_t>(b, i) != 0 ? 1 : 0;  // bool
  }
}

bool is_int(DType t) { return t == DType::I32 || t == DType::I64 || t == DType::U8; }

// Two's-complement wrap of v to `bits` bits, by arithmetic rather than a cast.
LD wrap(LD v, int bits, bool is_signed) {
  const LD m = std::ldexp(LD(1), bits);
  LD r = std::fmod(v, m);
  if (r < 0) r += m;
  if (is_signed && r >= m / 2) r -= m;
  return r;
}

// The expected destination element for source element i, written into `out` at i.
void expected_element(const std::vector<uint8_t>& src, DType st, size_t i, DType dt,
                      std::vector<uint8_t>& out) {
  const LD v = value_of(src, st, i);
  const bool src_fits_f32 = st != DType::F64 && st != DType::I64 && st != DType::I32;
  const bool src_int = is_int(st) || st == DType::Bool;
  if (const Format* f = format_of(dt)) {
    // The scalar encoder where it can take the value exactly, else the table reference.
    uint32_t c = src_fits_f32 ? f->encode(float(v)) : ref_encoder(*f).encode(v);
    if (c == RefEncoder::kNaN)  // S.1..1.1..1 is a NaN in all four formats
      c = (std::signbit(v) ? f->sign_bit() : 0) | (f->sign_bit() - 1);
    if (f->bits() == 16) store<uint16_t>(out, i, uint16_t(c));
    else store<uint8_t>(out, i, uint8_t(c));
    return;
  }
  switch (dt) {
    case DType::F32: store<float>(out, i, float(v)); return;  // one rounding from exact
    case DType::F64: store<double>(out, i, double(v)); return;
    case DType::Bool: store<uint8_t>(out, i, v != 0); return;  // NaN -> 1
    default: break;
  }
  const int bits = dt == DType::I32 ? 32 : dt == DType::I64 ? 64 : 8;
  const bool sgn = dt != DType::U8;
  LD r;
  if (src_int) {
    r = wrap(v, bits, sgn);
  } else if (std::isnan(v)) {
    r = 0;
  } else {
    const LD lo = sgn ? -std::ldexp(LD(1), bits - 1) : 0;
    const LD hi = std::ldexp(LD(1), sgn ? bits - 1 : bits) - 1;
    r = std::clamp(std::trunc(v), lo, hi);
  }
  if (dt == DType::I32) store<int32_t>(out, i, int32_t(r));
  else if (dt == DType::I64) store<int64_t>(out, i, int64_t(r));
  else store<uint8_t>(out, i, uint8_t(r));
}

// Random source data of type t, n elements, with the hard cases of every target mixed in.
std::vector<uint8_t> random_source(DType t, size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> b(n * dtype_size(t));
  std::uniform_real_distribution<double> u(-1, 1);
  // Midpoints of the narrow formats scaled into int64/f64 range, nudged by tiny amounts:
  // where rounding through f32 first would round twice.
  auto near_midpoint = [&](bool integer) -> LD {
    const Format& f = kFormats[rng() % 2];  // bf16 or f16 (fp8 share the logic)
    const RefEncoder& ref = ref_encoder(f);
    const size_t j = 1 + rng() % (ref.values.size() - 3);  // [1, last finite - 1]
    LD mid = (ref.values[j] + ref.values[j + 1]) / 2;
    const int scale = integer ? 62 - std::ilogb(double(mid)) : int(rng() % 8) - 4;
    mid = std::ldexp(mid, scale);
    const LD nudge = integer ? LD(int(rng() % 5) - 2) : std::ldexp(mid, -40 - int(rng() % 12));
    return (rng() & 1 ? -1 : 1) * (mid + (rng() & 1 ? nudge : -nudge));
  };
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = rng();
    const int kind = int(r % 8);
    const double wide = std::ldexp(u(rng), int(rng() % 80) - 40);  // spans fp8 to f32 ranges
    switch (t) {
      case DType::F32:
        store<float>(b, i, kind < 3 ? bits_f32(uint32_t(rng())) : kind < 5 ? float(wide)
                                                                            : float(u(rng) * 600));
        break;
      case DType::F64: {
        double v = kind < 2 ? std::ldexp(u(rng), int(rng() % 2100) - 1050)  // any exponent
                   : kind < 4 ? double(near_midpoint(false))
                   : kind < 6 ? wide : u(rng) * 1e19;  // beyond int64 too
        static const double kSpecial[] = {NAN, -NAN, INFINITY, -INFINITY, -0.0};
        if (kind == 7) v = kSpecial[r % 5];
        store<double>(b, i, v);
        break;
      }
      case DType::I64:
        store<int64_t>(b, i, kind < 4 ? int64_t(rng()) : kind < 6 ? int64_t(near_midpoint(true))
                                                                  : int64_t(rng() % 2001) - 1000);
        break;
      case DType::I32: store<int32_t>(b, i, kind < 4 ? int32_t(rng()) : int32_t(r % 601) - 300); break;
      case DType::Bool: {  // any nonzero byte reads as true
        static const uint8_t kBytes[] = {0, 1, 0, 1, 2, 255};
        store<uint8_t>(b, i, kBytes[r % 6]);
        break;
      }
      default:  // bf16/f16/fp8/u8: every bit pattern equally likely
        for (size_t k = 0; k < dtype_size(t); ++k) b[i * dtype_size(t) + k] = uint8_t(rng() >> (8 * k));
    }
  }
  return b;
}

bool same_element(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, DType t,
                  size_t i) {
  const size_t w = dtype_size(t);
  if (std::memcmp(a.data() + i * w, b.data() + i * w, w) == 0) return true;
  if (is_int(t) || t == DType::Bool) return false;
  const LD x = value_of(a, t, i), y = value_of(b, t, i);  // NaN payloads may differ
  return std::isnan(x) && std::isnan(y) && std::signbit(x) == std::signbit(y);
}

TEST(Dtype, ConvertBufferEveryPairMatchesScalarReference) {
  std::mt19937_64 rng(test::case_seed(200));
  const size_t n = 50000;  // above the OpenMP threshold
  for (DType st : kAllDTypes) {
    const std::vector<uint8_t> src = random_source(st, n, rng);
    for (DType dt : kAllDTypes) {
      std::vector<uint8_t> got(n * dtype_size(dt)), want(n * dtype_size(dt));
      convert_buffer(src.data(), st, got.data(), dt, n);
      // The same dtype is a copy: e5m2 inf stays inf, a bool byte 2 stays 2.
      if (st == dt) want = src;
      else for (size_t i = 0; i < n; ++i) expected_element(src, st, i, dt, want);
      // One element at a time (the strided-copy path) must agree with the bulk loop.
      std::vector<uint8_t> one(got.size());
      for (size_t i = 0; i < 64; ++i)
        convert_buffer(src.data() + i * dtype_size(st), st, one.data() + i * dtype_size(dt), dt, 1);
      size_t bad = 0, bad_one = 0, first = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!same_element(got, want, dt, i) && bad++ == 0) first = i;
        if (i < 64) bad_one += !same_element(got, one, dt, i);
      }
      EXPECT_EQ(bad, 0u) << dtype_name(st) << " -> " << dtype_name(dt) << ": " << bad << " of "
                         << n << " wrong; first at " << first << " (value "
                         << double(value_of(src, st, first)) << ", got "
                         << double(value_of(got, dt, first)) << ", want "
                         << double(value_of(want, dt, first)) << ")";
      EXPECT_EQ(bad_one, 0u) << dtype_name(st) << " -> " << dtype_name(dt) << ": n=1 differs";
    }
  }
}

// int64 beyond 2^53 (where double has gaps) must convert exactly between integer types and
// round once into floating types.
TEST(Dtype, Int64AboveTwoTo53IsExact) {
  std::mt19937_64 rng(test::case_seed(300));
  std::vector<int64_t> v;
  for (int k = 53; k < 63; ++k)
    for (int64_t d : {1, 3, -1, 255}) v.push_back((int64_t{1} << k) + d), v.push_back(-v.back());
  v.push_back(std::numeric_limits<int64_t>::max());
  v.push_back(std::numeric_limits<int64_t>::min());
  for (int i = 0; i < 1000; ++i) v.push_back(int64_t(rng() | (uint64_t{1} << 54)));
  const size_t n = v.size();
  std::vector<uint8_t> src(n * 8);
  std::memcpy(src.data(), v.data(), src.size());
  for (DType dt : kAllDTypes) {
    std::vector<uint8_t> got(n * dtype_size(dt)), want(got.size());
    convert_buffer(src.data(), DType::I64, got.data(), dt, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      expected_element(src, DType::I64, i, dt, want);
      bad += !same_element(got, want, dt, i);
    }
    EXPECT_EQ(bad, 0u) << "i64 -> " << dtype_name(dt) << ": " << bad << " of " << n << " wrong";
  }
  // Through i64 and back from the wider integer dtypes loses nothing.
  std::vector<int64_t> back(n);
  std::vector<int64_t> i64_from_i64(n);
  convert_buffer(v.data(), DType::I64, i64_from_i64.data(), DType::I64, n);
  EXPECT_EQ(i64_from_i64, v);
  std::vector<int32_t> i32(n);
  for (size_t i = 0; i < n; ++i) i32[i] = int32_t(rng());
  convert_buffer(i32.data(), DType::I32, back.data(), DType::I64, n);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += back[i] != int64_t(i32[i]);
  EXPECT_EQ(bad, 0u) << "i32 -> i64: " << bad << " wrong";
}

}  // namespace
}  // namespace r1
