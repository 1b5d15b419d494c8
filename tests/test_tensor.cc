// Tensor basics: factories, views and their strides, copies across dtypes, autograd through
// views, gradient accumulation, NoGrad.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "tests/harness.h"

namespace r1 {
namespace {

TEST(Tensor, FactoriesAndShape) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  for (double v : t.to_double_vector()) EXPECT_EQ(v, 0.0);
  Tensor f = Tensor::full({5}, 2.5, DType::F64);
  for (double v : f.to_double_vector()) EXPECT_EQ(v, 2.5);
  EXPECT_EQ(Tensor::arange(4).to_int_vector(), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Tensor, ViewsShareStorageAndIndexCorrectly) {
  const uint64_t seed = test::run_seed();
  Tensor x = Tensor::randn({3, 4, 5}, seed, DType::F64);
  const std::vector<double> xv = x.to_double_vector();
  auto at = [&](int64_t i, int64_t j, int64_t k) { return xv[(i * 4 + j) * 5 + k]; };

  Tensor t = x.transpose(0, 2);  // (5, 4, 3)
  EXPECT_FALSE(t.is_contiguous());
  const std::vector<double> tv = t.contiguous().to_double_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(tv[(k * 4 + j) * 3 + i], at(i, j, k));

  Tensor n = x.narrow(1, 1, 2);  // (3, 2, 5)
  const std::vector<double> nv = n.contiguous().to_double_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(nv[(i * 2 + j) * 5 + k], at(i, j + 1, k));

  Tensor p = x.permute({1, 2, 0});  // (4, 5, 3)
  const std::vector<double> pv = p.contiguous().to_double_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(pv[(j * 5 + k) * 3 + i], at(i, j, k));

  Tensor s = x.select(2, 3);  // (3, 4)
  const std::vector<double> sv = s.contiguous().to_double_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(sv[i * 4 + j], at(i, j, 3));

  // A write through a view lands in the base.
  Tensor col = x.select(1, 0);
  col.fill_(7.0);
  const std::vector<double> after = x.to_double_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(after[(i * 4 + 0) * 5 + k], 7.0);
  EXPECT_EQ(after[(1 * 4 + 1) * 5 + 2], at(1, 1, 2));
  EXPECT_EQ(x.reshape({-1, 5}).shape(), (Shape{12, 5}));
  EXPECT_THROW(x.transpose(0, 1).view({60}), Error);
}

TEST(Tensor, CopyConvertsDtypes) {
  const uint64_t seed = test::run_seed();
  Tensor x = Tensor::randn({7, 3}, seed, DType::F64);
  Tensor f = x.to(DType::F32);
  const std::vector<double> a = x.to_double_vector(), b = f.to_double_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(b[i], static_cast<double>(static_cast<float>(a[i])));
  Tensor i = Tensor::from_vector(std::vector<int64_t>{-3, 0, 5, (1ll << 40)}, {4});
  EXPECT_EQ(i.to(DType::F64).to_double_vector(), (std::vector<double>{-3, 0, 5, 1099511627776.0}));
}

TEST(Tensor, RandomIsSeededAndPlausible) {
  const uint64_t seed = test::run_seed();
  const std::vector<double> a = Tensor::randn({4096}, seed, DType::F64).to_double_vector();
  const std::vector<double> b = Tensor::randn({4096}, seed, DType::F64).to_double_vector();
  EXPECT_EQ(a, b);
  double m = 0, v = 0;
  for (double x : a) m += x;
  m /= a.size();
  for (double x : a) v += (x - m) * (x - m);
  v /= a.size();
  EXPECT_NEAR(m, 0.0, 0.1);   // 6 sigma of the sample mean
  EXPECT_NEAR(v, 1.0, 0.15);
}

// A --device flag: parsed and checked against this machine in one place (every binary's flag),
// each refusal an InputError that names the flag and the value.
TEST(Device, FlagIsParsedAndMustBePresent) {
  EXPECT_EQ(device_from_flag("cpu"), Device::cpu());
  const auto refused = [](const std::string& v, const std::string& why) {
    try {
      device_from_flag(v, "--dev");
      ADD_FAILURE() << v << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--dev " + v + ": " + why), std::string::npos)
          << e.what();
    }
  };
  refused("tpu", "expected cpu, cuda or cuda:N");
  refused("cuda:x", "expected cpu, cuda or cuda:N");
  refused("cuda:1023", "not available here");  // no machine has that many GPUs
  if (device_available(DeviceType::CUDA)) EXPECT_EQ(device_from_flag("cuda"), Device::cuda(0));
  else refused("cuda", "not available here");
}

TEST(Philox, KnownAnswers) {
  // Random123's published known-answer vectors for philox4x32-10.
  Philox4x32 r = philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  r = philox4x32_10({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu,
                    0xffffffffu);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
  r = philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u,
                    0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(Autograd, GradsOfViewsAndAccumulation) {
  const uint64_t seed = test::run_seed();
  Tensor x = Tensor::randn({3, 4}, seed, DType::F64);
  x.set_requires_grad();
  // y = x.T narrowed: grad is the upstream grad scattered back, zeros elsewhere.
  Tensor y = x.transpose(0, 1).narrow(0, 1, 2);  // (2, 3): y[a, b] = x[b, a + 1]
  Tensor g = Tensor::randn({2, 3}, seed + 1, DType::F64);
  backward(y, g);
  const std::vector<double> gx = x.grad().to_double_vector(), gv = g.to_double_vector();
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t a = 0; a < 4; ++a)
      EXPECT_EQ(gx[b * 4 + a], (a >= 1 && a <= 2) ? gv[(a - 1) * 3 + b] : 0.0);
  EXPECT_EQ(tape_size(), 0u);

  // A second backward accumulates into the leaf.
  Tensor y2 = x.transpose(0, 1).narrow(0, 1, 2);
  backward(y2, g);
  const std::vector<double> gx2 = x.grad().to_double_vector();
  for (size_t i = 0; i < gx.size(); ++i) EXPECT_EQ(gx2[i], 2 * gx[i]);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = Tensor::ones({2, 2}, DType::F64);
  x.set_requires_grad();
  {
    NoGrad ng;
    Tensor y = x.transpose(0, 1);
    EXPECT_FALSE(y.requires_grad());
  }
  EXPECT_EQ(tape_size(), 0u);
  Tensor z = x.view({4});
  EXPECT_TRUE(z.requires_grad());
  EXPECT_FALSE(z.is_leaf());
  clear_tape();
}

}  // namespace
}  // namespace r1
