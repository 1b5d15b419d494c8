// Shared test helpers: the per-run seed, finite-difference gradient checks in f64, and
// closeness checks with tolerances by dtype.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace r1::test {

// A fresh seed per run (R1_TEST_SEED overrides it to replay a failure); printed once.
uint64_t run_seed();
// A seed for one case: run_seed() mixed with a case number.
uint64_t case_seed(uint64_t k);

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step (f64)
  double atol = 1e-7;
  double rtol = 1e-5;
};

// Checks the gradients of f with respect to every input that requires grad, against
// central finite differences in f64. Inputs must be contiguous f64 CPU tensors (int inputs
// are passed through). The scalar probed is sum(W * f(x)) with W random (seeded by `seed`),
// so every output element's gradient path is exercised. Failures name the case and element.
void expect_gradcheck(const std::string& name,
                      const std::function<Tensor(const std::vector<Tensor>&)>& f,
                      std::vector<Tensor> inputs, uint64_t seed, GradcheckOptions opt = {});

// Elementwise |a - b| <= atol + rtol * |b|; reports the worst element and the count. NaN in
// either side fails.
void expect_close(const std::string& name, const Tensor& a, const Tensor& b, double atol,
                  double rtol);
void expect_close(const std::string& name, const std::vector<double>& a,
                  const std::vector<double>& b, double atol, double rtol);

// True when a CUDA device is present; CUDA tests begin with R1_SKIP_WITHOUT_CUDA().
bool cuda_available();

}  // namespace r1::test

#define R1_SKIP_WITHOUT_CUDA() \
  do {                         \
    if (!::r1::test::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)
