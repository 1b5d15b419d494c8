#include "tests/harness.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/rng.h"

namespace r1::test {

uint64_t run_seed() {
  static const uint64_t seed = [] {
    uint64_t s;
    if (const char* e = std::getenv("R1_TEST_SEED")) {
      s = std::strtoull(e, nullptr, 10);
    } else {
      s = static_cast<uint64_t>(
          std::chrono::high_resolution_clock::now().time_since_epoch().count());
      s ^= static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&s));
      s %= 1000000007ull;
    }
    std::printf("[r1 test] seed %llu (replay with R1_TEST_SEED=%llu)\n",
                static_cast<unsigned long long>(s), static_cast<unsigned long long>(s));
    std::fflush(stdout);
    return s;
  }();
  return seed;
}

const char* python() {
  const char* e = std::getenv("R1_TEST_PYTHON");
  return e != nullptr && *e != '\0' ? e : R1_TEST_PYTHON;
}

const char* source_dir() {
  const char* e = std::getenv("R1_SOURCE_DIR");
  return e != nullptr && *e != '\0' ? e : R1_SOURCE_DIR;
}

uint64_t case_seed(uint64_t k) {
  const Philox4x32 b = philox_bits(run_seed(), 0x7e57, k);
  return (static_cast<uint64_t>(b.v[1]) << 32) | b.v[0];
}

namespace {

double probe(const std::function<Tensor(const std::vector<Tensor>&)>& f,
             const std::vector<Tensor>& inputs, const std::vector<double>& w) {
  NoGrad ng;
  const std::vector<double> out = f(inputs).to_double_vector();
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += w[i] * out[i];
  return s;
}

}  // namespace

void expect_gradcheck(const std::string& name,
                      const std::function<Tensor(const std::vector<Tensor>&)>& f,
                      std::vector<Tensor> inputs, uint64_t seed, GradcheckOptions opt) {
  for (Tensor& t : inputs) {
    if (!t.defined() || !dtype_is_floating(t.dtype())) continue;
    ASSERT_EQ(t.dtype(), DType::F64) << name << ": gradcheck needs f64 inputs";
    ASSERT_TRUE(t.is_contiguous() && t.device().is_cpu()) << name;
    t.zero_grad();
  }
  const Tensor out = f(inputs);
  ASSERT_TRUE(out.requires_grad()) << name << ": output does not require grad";
  const Tensor w = Tensor::randn(out.shape(), seed ^ 0x9e3779b97f4a7c15ull, DType::F64);
  backward(out, w);
  const std::vector<double> wv = w.to_double_vector();
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor g = x.grad();
    ASSERT_TRUE(g.defined()) << name << ": input " << k << " got no gradient";
    const std::vector<double> analytic = g.to_double_vector();
    double* px = static_cast<double*>(x.data_ptr());
    int bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = px[i];
      px[i] = orig + opt.eps;
      const double sp = probe(f, inputs, wv);
      px[i] = orig - opt.eps;
      const double sm = probe(f, inputs, wv);
      px[i] = orig;
      const double fd = (sp - sm) / (2 * opt.eps);
      const double err = std::fabs(analytic[i] - fd);
      const double tol = opt.atol + opt.rtol * std::fabs(fd);
      if (!(err <= tol)) {
        if (bad++ < 5)
          ADD_FAILURE() << name << ": input " << k << " element " << i << ": analytic "
                        << analytic[i] << " vs finite difference " << fd << " (seed " << seed
                        << ")";
      }
      worst = std::max(worst, err / (std::fabs(fd) + 1e-12));
    }
    EXPECT_EQ(bad, 0) << name << ": input " << k << ": " << bad << " of " << x.numel()
                      << " gradient elements off";
  }
}

void expect_close(const std::string& name, const std::vector<double>& a,
                  const std::vector<double>& b, double atol, double rtol) {
  ASSERT_EQ(a.size(), b.size()) << name << ": sizes differ";
  size_t bad = 0, worst_i = 0;
  double worst = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    const double tol = atol + rtol * std::fabs(b[i]);
    const bool ok = err <= tol;  // false for NaN
    if (!ok) ++bad;
    const double ratio = std::isnan(err) ? INFINITY : err / tol;
    if (ratio > worst) {
      worst = ratio;
      worst_i = i;
    }
  }
  EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << a.size()
                     << " elements off; worst at " << worst_i << ": " << a[worst_i] << " vs "
                     << b[worst_i] << " (atol " << atol << ", rtol " << rtol << ")";
}

void expect_close(const std::string& name, const Tensor& a, const Tensor& b, double atol,
                  double rtol) {
  ASSERT_EQ(a.shape(), b.shape()) << name << ": shape " << shape_str(a.shape()) << " vs "
                                  << shape_str(b.shape());
  expect_close(name, a.to_double_vector(), b.to_double_vector(), atol, rtol);
}

bool cuda_available() { return device_available(DeviceType::CUDA); }

bool cuda_required() {
  const char* e = std::getenv("R1_REQUIRE_CUDA");
  return e != nullptr && std::string(e) == "1";
}

void poison(Tensor& t, uint8_t byte) {
  R1_CHECK(t.is_contiguous(), "poison: {} is not contiguous", t.str());
  std::vector<unsigned char> b(t.nbytes(), byte);
  if (!b.empty()) copy_bytes(t.data_ptr(), t.device(), b.data(), Device::cpu(), b.size());
}

std::vector<uint8_t> host_bytes(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).contiguous();
  std::vector<uint8_t> b(h.nbytes());
  if (!b.empty()) std::memcpy(b.data(), h.data_ptr(), b.size());
  return b;
}

Tensor poisoned(const Shape& shape, DType dtype, Device dev) {
  Tensor t = Tensor::empty(shape, dtype, dev);
  poison(t);
  return t;
}

Tensor rounded_f64(const Tensor& x, DType dt) {
  return x.to(Device::cpu()).contiguous().to(dt).to(DType::F64).contiguous();
}

Tol tol_for(DType dt, double scale) {
  switch (dt) {
    case DType::BF16: return {1e-2 * scale, 1e-2};
    case DType::F16: return {2e-3 * scale, 2e-3};
    case DType::F32: return {1e-5 * scale, 1e-5};
    default: return {1e-12 * scale, 1e-12};
  }
}

}  // namespace r1::test
