// linear_fp8 (engine/ops_fp8.h): the FP8 training linear layer. Its forward and both
// gradients equal the block-scaled FP8 GEMMs of the recipe (rebuilt here from the kernels,
// bit for bit on the CPU); they stay within FP8's quantization error of the exact f64 linear
// layer (E4M3 keeps 3 mantissa bits: 2^-4 relative per operand, about 5% normwise for a
// product of two quantized operands; 3.5% measured, printed below); on a GPU they match the
// CPU. Shapes
// are not multiples of the 128-wide tiles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/ops_fp8.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
using test::host_bytes;

[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();

double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> a = got.to_double_vector(), b = want.to_double_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// The recipe's product with the kernels called directly: a per 1x128 tile, b per 128x128
// block, or per 1x128 tile too when b_rows (wgrad's 1D1D product).
Tensor fp8_product(const Tensor& a, const Tensor& b, bool b_rows = false) {
  const Device dev = a.device();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  Tensor aq = Tensor::empty({m, k}, DType::E4M3, dev), bq = Tensor::empty({n, k}, DType::E4M3, dev);
  Tensor as = Tensor::empty({m, fp8_blocks(k)}, DType::F32, dev);
  Tensor bs = Tensor::empty({b_rows ? n : fp8_blocks(n), fp8_blocks(k)}, DType::F32, dev);
  kernels::quantize_fp8_rows()(dev, a.contiguous(), aq, as);
  if (b_rows) kernels::quantize_fp8_rows()(dev, b.contiguous(), bq, bs);
  else kernels::quantize_fp8_blocks()(dev, b.contiguous(), bq, bs);
  Tensor d = Tensor::empty({m, n}, a.dtype(), dev);
  kernels::gemm_fp8_blockscaled()(dev, aq, as, bq, bs, d);
  return d;
}

struct Result {
  Tensor y, dx, dw;
};

// y = linear_fp8(x, w) (or the exact linear), then backward of sum(g * y).
Result run(const Tensor& x0, const Tensor& w0, const Tensor& g, bool fp8) {
  Tensor x = x0.clone().set_requires_grad(), w = w0.clone().set_requires_grad();
  const Tensor y = fp8 ? linear_fp8(x, w) : linear(x, w);
  backward(sum(mul(y, g)));
  return {y.detach(), x.grad(), w.grad()};
}

TEST(LinearFp8, EqualsTheRecipesGemmsOnTheCpu) {
  const Tensor x = Tensor::randn({3, 37, 200}, case_seed(1));
  const Tensor w = Tensor::randn({130, 200}, case_seed(2), DType::F32, Device::cpu(), 0.05);
  const Tensor g = Tensor::randn({3, 37, 130}, case_seed(3));
  const Result r = run(x, w, g, true);
  const Tensor x2 = x.view({111, 200}), g2 = g.view({111, 130});
  EXPECT_EQ(r.y.view({111, 130}).to_double_vector(), fp8_product(x2, w).to_double_vector());
  EXPECT_EQ(r.dx.view({111, 200}).to_double_vector(),
            fp8_product(g2, w.transpose(0, 1).contiguous()).to_double_vector());
  EXPECT_EQ(r.dw.to_double_vector(),
            fp8_product(g2.transpose(0, 1).contiguous(), x2.transpose(0, 1).contiguous(),
                        /*b_rows=*/true)
                .to_double_vector());
}

TEST(LinearFp8, StaysWithinFp8ErrorOfTheExactLayer) {
  // Outliers in x (a few values 20x) are what the 1x128 tiles are for.
  Tensor x = Tensor::randn({96, 300}, case_seed(10));
  for (int64_t i = 0; i < 96; i += 7) x.select(0, i).narrow(0, i % 300, 1).fill_(20.0);
  const Tensor w = Tensor::randn({260, 300}, case_seed(11), DType::F32, Device::cpu(), 0.05);
  const Tensor g = Tensor::randn({96, 260}, case_seed(12));
  const Result q = run(x, w, g, true);
  const Result e = run(x.to(DType::F64), w.to(DType::F64), g.to(DType::F64), false);
  for (auto [name, got, want] : {std::tuple{"y", q.y, e.y}, std::tuple{"dx", q.dx, e.dx},
                                 std::tuple{"dw", q.dw, e.dw}}) {
    const double err = rel_error(got, want);
    std::printf("linear_fp8 %s: normwise relative error %.4f against the exact f64 layer\n",
                name, err);
    EXPECT_LT(err, 0.08) << name;  // two quantized operands: ~5% expected
    EXPECT_GT(err, 1e-3) << name << ": no quantization error at all: is FP8 really used?";
  }
}

// Why wgrad quantizes x^T per 1x128 tile along the tokens (1D1D) rather than per 128x128
// block: channels of very different sizes (as a model's activations have) share a block's
// scale, and the small ones lose their mantissa bits to it (E4M3 subnormals, or zero). Channel
// magnitudes here span 1e-4 .. 10 (log-uniform); the exact dw = dy^T x in f64 is the
// reference. The per-tile form must be the more accurate one, by a clear margin (its error is
// the E4M3 rounding of every channel; the block form zeroes the smallest channels).
TEST(LinearFp8, WgradRowScalesBeatBlockScalesOnSkewedChannels) {
  const int64_t tokens = 512, in = 256, out = 64;
  Tensor x = Tensor::randn({tokens, in}, case_seed(40));
  const std::vector<double> u = Tensor::rand({in}, case_seed(41), 0.0, 1.0, DType::F64)
                                    .to_double_vector();
  std::vector<double> mag(u.size());
  for (size_t j = 0; j < u.size(); ++j) mag[j] = std::pow(10.0, -4.0 + 5.0 * u[j]);
  x = mul(x, Tensor::from_vector(mag, {1, in}).to(DType::F32));
  const Tensor dy = Tensor::randn({tokens, out}, case_seed(42));
  const Tensor dyt = dy.transpose(0, 1).contiguous(), xt = x.transpose(0, 1).contiguous();
  const Tensor exact = matmul(dyt.to(DType::F64), xt.to(DType::F64), false, true);
  // Error per dw column (input channel), normwise over the column, then averaged: every
  // channel counts, not only the large ones that dominate a global norm.
  auto column_error = [&](const Tensor& got) {
    const std::vector<double> g = got.to_double_vector(), e = exact.to_double_vector();
    double total = 0;
    for (int64_t j = 0; j < in; ++j) {
      double num = 0, den = 0;
      for (int64_t i = 0; i < out; ++i) {
        const size_t k = static_cast<size_t>(i * in + j);
        num += (g[k] - e[k]) * (g[k] - e[k]);
        den += e[k] * e[k];
      }
      total += std::sqrt(num / den);
    }
    return total / static_cast<double>(in);
  };
  const double e_rows = column_error(fp8_product(dyt, xt, /*b_rows=*/true));
  const double e_blocks = column_error(fp8_product(dyt, xt, /*b_rows=*/false));
  std::printf("wgrad mean per-channel relative error: 1x128 tiles along tokens %.4f, 128x128 "
              "blocks %.4f\n", e_rows, e_blocks);
  EXPECT_LT(e_rows, 0.08);
  EXPECT_LT(e_rows * 1.2, e_blocks);  // measured 1.38-1.77x over 8 seeds
  // And linear_fp8's weight gradient is the per-tile product.
  Tensor xv = x.clone(), w = Tensor::randn({out, in}, case_seed(43), DType::F32, Device::cpu(),
                                           0.05).set_requires_grad();
  backward(sum(mul(linear_fp8(xv, w), dy)));
  EXPECT_LT(std::fabs(column_error(w.grad()) - e_rows), 1e-12);
}

// bf16 RNE of an f32 value, written here from the bit pattern (independent of engine/convert).
float to_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&v, &u, 4);
  return v;
}

// a (m, k) b (n, k) -> per element the f64 dot of the bf16-rounded operands and sum |a b|.
void bf16_dot_ref(const std::vector<float>& a, const std::vector<float>& b, int64_t m, int64_t n,
                  int64_t k, std::vector<double>* val, std::vector<double>* abs) {
  val->assign(static_cast<size_t>(m * n), 0.0);
  abs->assign(val->size(), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double v = 0, s = 0;
      for (int64_t l = 0; l < k; ++l) {
        const double p = double{to_bf16(a[static_cast<size_t>(i * k + l)])} *
                         to_bf16(b[static_cast<size_t>(j * k + l)]);
        v += p;
        s += std::fabs(p);
      }
      (*val)[static_cast<size_t>(i * n + j)] = v;
      (*abs)[static_cast<size_t>(i * n + j)] = s;
    }
}

std::vector<float> transpose_of(const std::vector<float>& a, int64_t r, int64_t c) {
  std::vector<float> t(a.size());
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) t[static_cast<size_t>(j * r + i)] = a[static_cast<size_t>(i * c + j)];
  return t;
}

// linear_bf16 on f32 tensors: each GEMM of the layer is a bf16 GEMM with fp32 accumulation
// and a bf16 result. Against f64 dots of bf16-rounded operands: every output is a bf16 value
// (low 16 bits zero) within one bf16 rounding (2^-8 relative) plus the fp32 accumulation
// (k 2^-24 sum |a b|) of the exact dot.
TEST(LinearBf16, EqualsBf16GemmsWithFp32Accumulation) {
  const int64_t m = 45, k = 200, n = 70;
  const Tensor x = Tensor::randn({m, k}, case_seed(30));
  const Tensor w = Tensor::randn({n, k}, case_seed(31), DType::F32, Device::cpu(), 0.05);
  const Tensor g = Tensor::randn({m, n}, case_seed(32));
  Tensor xg = x.clone().set_requires_grad(), wg = w.clone().set_requires_grad();
  const Tensor y = linear_bf16(xg, wg);
  backward(sum(mul(y, g)));
  const std::vector<float> xv = x.to_float_vector(), wv = w.to_float_vector(), gv = g.to_float_vector();
  struct Case {
    const char* name;
    Tensor got;
    std::vector<float> a, b;
    int64_t rows, cols, inner;
  };
  const Case cases[] = {
      {"y = x w^T", y.detach(), xv, wv, m, n, k},
      {"dx = g w", xg.grad(), gv, transpose_of(wv, n, k), m, k, n},
      {"dw = g^T x", wg.grad(), transpose_of(gv, m, n), transpose_of(xv, m, k), n, k, m}};
  for (const Case& c : cases) {
    std::vector<double> ref, abs;
    bf16_dot_ref(c.a, c.b, c.rows, c.cols, c.inner, &ref, &abs);
    const std::vector<float> got = c.got.to_float_vector();
    ASSERT_EQ(got.size(), ref.size()) << c.name;
    int64_t bad = 0, not_bf16 = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      not_bf16 += to_bf16(got[i]) != got[i];
      const double tol = 0x1p-8 * std::fabs(ref[i]) + c.inner * 0x1p-24 * abs[i];
      if (!(std::fabs(got[i] - ref[i]) <= tol) && bad++ < 3)
        ADD_FAILURE() << c.name << " element " << i << ": " << got[i] << " vs " << ref[i];
    }
    EXPECT_EQ(bad, 0) << c.name;
    EXPECT_EQ(not_bf16, 0) << c.name << ": outputs are not bf16 values";
  }
}

TEST(LinearFp8, RejectsMismatchedInputs) {
  const Tensor x = Tensor::randn({4, 8}, case_seed(20));
  EXPECT_THROW(linear_fp8(x, Tensor::randn({5, 9}, case_seed(21))), Error);
  EXPECT_THROW(linear_fp8(x, Tensor::randn({5, 8}, case_seed(22), DType::F64)), Error);
  EXPECT_THROW(linear_fp8(x.to(DType::F64), Tensor::randn({5, 8}, case_seed(23), DType::F64)),
               Error);
}

// A fused producer's quantization is quantize_fp8_rows of its output x (M, K) on x's device,
// bit for bit (codes and scales compared as bytes: -0 and +0 differ).
void expect_quantization_of(const Tensor& x, const Fp8Rows& fused, const std::string& name) {
  const Device dev = x.device();
  Tensor q = Tensor::empty(x.shape(), DType::E4M3, dev);
  Tensor sc = Tensor::empty({x.size(0), fp8_blocks(x.size(1))}, DType::F32, dev);
  kernels::quantize_fp8_rows()(dev, x, q, sc);
  EXPECT_TRUE(host_bytes(fused.q) == host_bytes(q)) << name << ": q bytes";
  EXPECT_TRUE(host_bytes(fused.scales) == host_bytes(sc)) << name << ": scale bytes";
}

// The fused producer (swiglu with an Fp8Rows output, kernel swiglu_quantize_fp8) on `dev`:
// its output and quantization are the bits of swiglu followed by quantize_fp8_rows on the
// same device, for f32 (and bf16 on a GPU: the CPU kernels compute in f32), F a multiple of 128, of 4 only, and odd (the scalar path);
// and linear_fp8 fed the fused quantization gives the bits of linear_fp8 quantizing itself.
void expect_fused_swiglu_matches(Device dev) {
  const int64_t shapes[][2] = {{7, 256}, {33, 200}, {5, 131}};
  int seed = 40;
  const std::vector<DType> dtypes = dev.is_cpu() ? std::vector{DType::F32}
                                                 : std::vector{DType::F32, DType::BF16};
  for (DType dt : dtypes)
    for (const auto& sh : shapes) {
      const int64_t m = sh[0], f = sh[1];
      const Tensor gate = Tensor::randn({1, m, f}, case_seed(++seed)).to(dt).to(dev);
      const Tensor up = Tensor::randn({1, m, f}, case_seed(++seed)).to(dt).to(dev);
      const std::string name = fmt::format("{} ({}, {}) {}", dtype_name(dt), m, f, dev.str());
      Fp8Rows fused;
      const Tensor h = swiglu(gate, up, &fused);
      const Tensor want_h = swiglu(gate, up);
      EXPECT_EQ(h.to_double_vector(), want_h.to_double_vector()) << name << ": swiglu output";
      expect_quantization_of(want_h.view({m, f}), fused, name);
      if (dt != DType::F32) continue;
      const Tensor w = Tensor::randn({70, f}, case_seed(++seed), DType::F32, Device::cpu(), 0.05).to(dev);
      EXPECT_EQ(linear_fp8(h, w, &fused).to_double_vector(), linear_fp8(h, w).to_double_vector())
          << name << ": linear_fp8 on the fused quantization";
    }
}

// The same for rmsnorm with an Fp8Rows output (kernel rmsnorm_quantize_fp8): y, the
// quantization and rstd's effect (y) are the bits of rmsnorm then quantize_fp8_rows on the
// same device. Row lengths: a multiple of 128, a partial last tile, shorter than a tile, an
// odd one (scalar loads), and 7168 (V3's hidden size: several steps of a row walk on a GPU).
void expect_fused_rmsnorm_matches(Device dev) {
  const int64_t shapes[][2] = {{7, 256}, {33, 200}, {5, 100}, {9, 131}, {3, 7168}};
  int seed = 60;
  const std::vector<DType> dtypes = dev.is_cpu() ? std::vector{DType::F32}
                                                 : std::vector{DType::F32, DType::BF16};
  for (DType dt : dtypes)
    for (const auto& sh : shapes) {
      const int64_t m = sh[0], d = sh[1];
      const Tensor x = Tensor::randn({1, m, d}, case_seed(++seed), DType::F32, Device::cpu(), 3.0)
                           .to(dt).to(dev);
      const Tensor w = Tensor::rand({d}, case_seed(++seed), 0.5, 1.5).to(dt).to(dev);
      const std::string name = fmt::format("{} ({}, {}) {}", dtype_name(dt), m, d, dev.str());
      Fp8Rows fused;
      const Tensor y = rmsnorm(x, w, 1e-6, &fused);
      const Tensor want_y = rmsnorm(x, w, 1e-6);
      EXPECT_EQ(y.to_double_vector(), want_y.to_double_vector()) << name << ": rmsnorm output";
      expect_quantization_of(want_y.view({m, d}), fused, name);
    }
}

TEST(LinearFp8, FusedRmsNormQuantizationEqualsTheTwoSteps) {
  expect_fused_rmsnorm_matches(Device::cpu());
}

TEST(LinearFp8Cuda, FusedRmsNormQuantizationEqualsTheTwoSteps) {
  R1_SKIP_WITHOUT_CUDA();
  expect_fused_rmsnorm_matches(Device::cuda(0));
}

// swiglu_quantize_fp8_masked (the MoE decode step's swiglu in the masked layout): the counted
// rows of each group get swiglu_quantize_fp8's bits on the same device; every other row of
// out, q and scales keeps what it held (a sentinel here); counts i32 and i64, a group empty,
// one full, F with a partial tile. A second shape, 40 groups of 64 rows with random counts and
// F = 1030 (not a multiple of 4: the element-wise lanes), has more counted tiles in a group
// than the CUDA kernel gives the group warps (its blocks stride).
void expect_masked_swiglu_matches(Device dev) {
  struct Case {
    int64_t g, mmax, f;
    std::vector<int64_t> cnt;
  };
  std::vector<int64_t> random_cnt = Tensor::randint({40}, case_seed(73), 0, 65).to_int_vector();
  random_cnt[0] = 64;  // full
  random_cnt[1] = 0;   // empty
  const Case cases[] = {{3, 5, 200, {2, 0, 5}}, {40, 64, 1030, random_cnt}};
  const std::vector<DType> dtypes = dev.is_cpu() ? std::vector{DType::F32}
                                                 : std::vector{DType::F32, DType::BF16};
  for (const Case& k : cases)
    for (DType dt : dtypes)
      for (DType cdt : {DType::I32, DType::I64}) {
        const int64_t g = k.g, mmax = k.mmax, f = k.f, fb = fp8_blocks(f);
        const std::vector<int64_t>& cnt = k.cnt;
        const Tensor counts = Tensor::from_vector(cnt, {g}, DType::I64).to(cdt).to(dev);
        const Tensor gate = Tensor::randn({g, mmax, f}, case_seed(70)).to(dt).to(dev);
        const Tensor up = Tensor::randn({g, mmax, f}, case_seed(71)).to(dt).to(dev);
        Tensor out = Tensor::full({g, mmax, f}, 7.0, dt, dev);
        Tensor q = Tensor::full({g, mmax, f}, 3.0, DType::E4M3, dev);
        Tensor sc = Tensor::full({g, mmax, fb}, -1.0, DType::F32, dev);
        kernels::swiglu_quantize_fp8_masked()(dev, gate, up, counts, out, q, sc);
        Tensor want_out = Tensor::empty({g * mmax, f}, dt, dev);
        Tensor want_q = Tensor::empty({g * mmax, f}, DType::E4M3, dev);
        Tensor want_s = Tensor::empty({g * mmax, fb}, DType::F32, dev);
        kernels::swiglu_quantize_fp8()(dev, gate.view({g * mmax, f}), up.view({g * mmax, f}),
                                       want_out, want_q, want_s);
        const std::string name = fmt::format("{}x{}x{} {} counts {} {}", g, mmax, f, dtype_name(dt),
                                             dtype_name(cdt), dev.str());
        const auto o = out.to(DType::F64).to_double_vector(), wo = want_out.to(DType::F64).to_double_vector();
        const std::vector<unsigned char> qv = host_bytes(q), wq = host_bytes(want_q);
        const unsigned char sentinel_q = host_bytes(Tensor::full({1}, 3.0, DType::E4M3))[0];
        const auto sv = sc.to_double_vector(), ws = want_s.to_double_vector();
        for (int64_t e = 0; e < g; ++e)
          for (int64_t i = 0; i < mmax; ++i) {
            const bool live = i < cnt[e];
            const int64_t r = e * mmax + i;
            for (int64_t c = 0; c < f; ++c) {
              ASSERT_EQ(o[r * f + c], live ? wo[r * f + c] : 7.0) << name << " row " << r;
              ASSERT_EQ(qv[r * f + c], live ? wq[r * f + c] : sentinel_q) << name << " row " << r;
            }
            for (int64_t b = 0; b < fb; ++b)
              ASSERT_EQ(sv[r * fb + b], live ? ws[r * fb + b] : -1.0) << name << " row " << r;
          }
      }
  // Shapes that do not fit are errors.
  const Tensor a = Tensor::randn({2, 3, 8}, case_seed(72)).to(dev);
  Tensor out = Tensor::empty({2, 3, 8}, DType::F32, dev), q = Tensor::empty({2, 3, 8}, DType::E4M3, dev);
  Tensor sc = Tensor::empty({2, 3, 1}, DType::F32, dev);
  EXPECT_THROW(kernels::swiglu_quantize_fp8_masked()(
                   dev, a, a, Tensor::zeros({3}, DType::I64, dev), out, q, sc),
               Error);
  EXPECT_THROW(kernels::swiglu_quantize_fp8_masked()(
                   dev, a, a, Tensor::zeros({2}, DType::F32, dev), out, q, sc),
               Error);
}

TEST(LinearFp8, MaskedSwigluQuantizationTouchesCountedRowsOnly) {
  expect_masked_swiglu_matches(Device::cpu());
}

TEST(LinearFp8Cuda, MaskedSwigluQuantizationTouchesCountedRowsOnly) {
  R1_SKIP_WITHOUT_CUDA();
  expect_masked_swiglu_matches(Device::cuda(0));
}

TEST(LinearFp8, FusedSwigluQuantizationEqualsTheTwoSteps) { expect_fused_swiglu_matches(Device::cpu()); }

TEST(LinearFp8Cuda, FusedSwigluQuantizationEqualsTheTwoSteps) {
  R1_SKIP_WITHOUT_CUDA();
  expect_fused_swiglu_matches(Device::cuda(0));
}

// grouped_linear_fp8 (the MoE experts as one layer): per group of rows, the bits of
// linear_fp8 on that group's rows with that group's weight, for y, dx and every dw; groups
// empty, of one row, and across 128-row tiles; a weight without requires_grad gets none.
void expect_grouped_matches_per_group(Device dev, DType dt) {
  const int64_t in = 200, out = 130;
  const std::vector<int64_t> offsets{0, 70, 70, 71, 300, 333};  // sizes 70, 0, 1, 229, 33
  const int64_t m = offsets.back(), groups = static_cast<int64_t>(offsets.size()) - 1;
  auto on_dev = [&](const Tensor& t) { return t.to(dt).to(dev); };
  const Tensor x0 = on_dev(Tensor::randn({m, in}, case_seed(50)));
  const Tensor g = on_dev(Tensor::randn({m, out}, case_seed(51)));
  std::vector<Tensor> w0;
  for (int64_t e = 0; e < groups; ++e)
    w0.push_back(on_dev(Tensor::randn({out, in}, case_seed(52 + e), DType::F32, Device::cpu(), 0.05)));
  // Grouped: one op over all rows.
  Tensor x = x0.clone().set_requires_grad();
  std::vector<Tensor> ws;
  for (int64_t e = 0; e < groups; ++e) {
    ws.push_back(w0[e].clone());
    if (e != 4) ws.back().set_requires_grad();  // group 4's weight is frozen
  }
  const Tensor y = grouped_linear_fp8(x, ws, offsets);
  backward(sum(mul(y, g)));
  // Per group: linear_fp8 on row slices.
  const std::string name = fmt::format("{} {}", dtype_name(dt), dev.str());
  for (int64_t e = 0; e < groups; ++e) {
    const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
    const std::string ge = fmt::format("{} group {} ({} rows)", name, e, rows);
    if (rows == 0) {
      EXPECT_FALSE(ws[e].grad().defined()) << ge << ": an empty group's weight has no gradient";
      continue;
    }
    Tensor xe = x0.narrow(0, r0, rows).clone().set_requires_grad();
    Tensor we = w0[e].clone().set_requires_grad();
    const Tensor ye = linear_fp8(xe, we);
    backward(sum(mul(ye, g.narrow(0, r0, rows))));
    EXPECT_EQ(y.detach().narrow(0, r0, rows).to_double_vector(), ye.detach().to_double_vector())
        << ge << ": y";
    EXPECT_EQ(x.grad().narrow(0, r0, rows).to_double_vector(), xe.grad().to_double_vector())
        << ge << ": dx";
    if (e == 4) {
      EXPECT_FALSE(ws[e].grad().defined()) << ge << ": a frozen weight has no gradient";
    } else {
      ASSERT_TRUE(ws[e].grad().defined()) << ge;
      EXPECT_EQ(ws[e].grad().to_double_vector(), we.grad().to_double_vector()) << ge << ": dw";
    }
  }
}

TEST(GroupedLinearFp8, EqualsLinearFp8PerGroup) {
  expect_grouped_matches_per_group(Device::cpu(), DType::F32);
}

// On a GPU the grouped op runs one grouped launch or a dense GEMM per group
// (gemm_fp8_grouped_preferred); either way the tile code per row is linear_fp8's.
TEST(GroupedLinearFp8Cuda, EqualsLinearFp8PerGroup) {
  R1_SKIP_WITHOUT_CUDA();
  expect_grouped_matches_per_group(Device::cuda(0), DType::F32);
  expect_grouped_matches_per_group(Device::cuda(0), DType::BF16);
}

TEST(GroupedLinearFp8, RejectsBadGroups) {
  const Tensor x = Tensor::randn({10, 8}, case_seed(60));
  const std::vector<Tensor> ws{Tensor::randn({5, 8}, case_seed(61)),
                               Tensor::randn({5, 8}, case_seed(62))};
  EXPECT_NO_THROW(grouped_linear_fp8(x, ws, {0, 4, 10}));
  EXPECT_THROW(grouped_linear_fp8(x, ws, {0, 10}), Error);         // one offset short
  EXPECT_THROW(grouped_linear_fp8(x, ws, {0, 4, 9}), Error);       // does not end at M
  EXPECT_THROW(grouped_linear_fp8(x, ws, {0, 11, 10}), Error);     // falls
  EXPECT_THROW(grouped_linear_fp8(x, ws, {1, 4, 10}), Error);      // does not start at 0
  EXPECT_THROW(grouped_linear_fp8(x, {ws[0], Tensor::randn({6, 8}, case_seed(63))}, {0, 4, 10}),
               Error);                                             // weights differ
  EXPECT_THROW(grouped_linear_fp8(x, {}, {0}), Error);
  EXPECT_THROW(grouped_linear_fp8(x.view({2, 5, 8}), ws, {0, 4, 10}), Error);  // not (M, K)
}

// fp8_dequantize_rows / fp8_dequantize_blocks: each code times its own tile's scale (rounded
// once to f32), checked element by element against the codes and scales read back in f64;
// and the result is within E4M3's rounding (2^-4 relative, of the tile's amax for the
// smallest values) of what was quantized. K with a partial last tile.
void expect_dequantize_matches(Device dev) {
  const int64_t m = 130, k = 300;
  const Tensor x = Tensor::randn({m, k}, case_seed(80), DType::F32, Device::cpu(), 3.0).to(dev);
  const Fp8Rows r = fp8_quantize_rows(x);
  Tensor bq = Tensor::empty({m, k}, DType::E4M3, dev);
  Tensor bs = Tensor::empty({fp8_blocks(m), fp8_blocks(k)}, DType::F32, dev);
  kernels::quantize_fp8_blocks()(dev, x, bq, bs);
  const auto xv = x.to_double_vector();
  const auto rq = r.q.to(DType::F64).to_double_vector(), rs = r.scales.to_double_vector();
  const auto qb = bq.to(DType::F64).to_double_vector(), sb = bs.to_double_vector();
  const auto dr = fp8_dequantize_rows(r, DType::F32).to_double_vector();
  const auto db = fp8_dequantize_blocks(bq, bs, DType::F32).to_double_vector();
  const auto dw = fp8_weight_as_used(x).to_double_vector();
  const int64_t kb = fp8_blocks(k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const size_t e = static_cast<size_t>(i * k + j);
      const double want_r = static_cast<float>(rq[e] * rs[i * kb + j / 128]);
      const double want_b = static_cast<float>(qb[e] * sb[(i / 128) * kb + j / 128]);
      ASSERT_EQ(dr[e], want_r) << dev.str() << " rows (" << i << ", " << j << ")";
      ASSERT_EQ(db[e], want_b) << dev.str() << " blocks (" << i << ", " << j << ")";
      ASSERT_EQ(dw[e], want_b) << dev.str() << " fp8_weight_as_used (" << i << ", " << j << ")";
      ASSERT_LE(std::fabs(dr[e] - xv[e]), std::fabs(xv[e]) / 16 + rs[i * kb + j / 128] * 448 / 512)
          << dev.str() << " rows (" << i << ", " << j << ") is not x's rounding";
    }
}

TEST(LinearFp8, DequantizeIsCodeTimesScale) { expect_dequantize_matches(Device::cpu()); }

TEST(LinearFp8Cuda, DequantizeIsCodeTimesScale) {
  R1_SKIP_WITHOUT_CUDA();
  expect_dequantize_matches(Device::cuda(0));
}

TEST(LinearFp8Cuda, MatchesTheCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::randn({2, 65, 260}, case_seed(30));
  const Tensor w = Tensor::randn({200, 260}, case_seed(31), DType::F32, Device::cpu(), 0.05);
  const Tensor g = Tensor::randn({2, 65, 200}, case_seed(32));
  const Result c = run(x, w, g, true);
  // f32 on the GPU: the same quantized bits, fp32 sums in another order.
  const Result d = run(x.to(gpu), w.to(gpu), g.to(gpu), true);
  EXPECT_LT(rel_error(d.y.to(Device::cpu()), c.y), 1e-5);
  EXPECT_LT(rel_error(d.dx.to(Device::cpu()), c.dx), 1e-5);
  EXPECT_LT(rel_error(d.dw.to(Device::cpu()), c.dw), 1e-5);
  // bf16 on the GPU against the CPU on the same bf16-rounded inputs.
  auto r16 = [](const Tensor& t) { return t.to(DType::BF16).to(DType::F32); };
  const Result c16 = run(r16(x), r16(w), r16(g), true);
  const Result d16 = run(x.to(DType::BF16).to(gpu), w.to(DType::BF16).to(gpu),
                         g.to(DType::BF16).to(gpu), true);
  EXPECT_LT(rel_error(d16.y.to(Device::cpu()), c16.y), 1e-2);
  EXPECT_LT(rel_error(d16.dx.to(Device::cpu()), c16.dx), 1e-2);
  EXPECT_LT(rel_error(d16.dw.to(Device::cpu()), c16.dw), 1e-2);
}

}  // namespace
}  // namespace r1
