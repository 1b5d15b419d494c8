// Shared test helpers: the per-run seed, finite-difference gradient checks in f64, and
// closeness checks with tolerances by dtype.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace r1::test {

// A fresh seed per run (R1_TEST_SEED overrides it to replay a failure); printed once.
uint64_t run_seed();
// The Python with PyTorch that the reference tests run, and the source tree holding their
// scripts (tests/torch_ref): $R1_TEST_PYTHON / $R1_SOURCE_DIR when set (scripts/gpu-check.sh
// points them at the GPU machine's own PyTorch and checkout), else the build's defaults.
const char* python();
const char* source_dir();
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

// ---- CUDA-vs-CPU comparisons -------------------------------------------------------------
// Sets every byte of a contiguous tensor (any device) to 0xFF (NaN for floats, -1 for ints)
// without going through the kernels under test: an output element a kernel forgets to write
// stays NaN and fails expect_close. `byte`: another fill (a second poison where 0xff is a
// value the kernel may write, e.g. an e4m3 NaN code).
void poison(Tensor& t, uint8_t byte = 0xFF);
// The bytes of t (any device, any layout: made contiguous on the host first).
std::vector<uint8_t> host_bytes(const Tensor& t);
// An uninitialized tensor on `dev`, poisoned.
Tensor poisoned(const Shape& shape, DType dtype, Device dev);
// x (any dtype/device) rounded to `dt` and widened back to a contiguous f64 CPU tensor: the
// exact values a kernel computing from dt-typed inputs sees, for an f64 CPU reference.
Tensor rounded_f64(const Tensor& x, DType dt);
// Tolerances for a CUDA result of dtype dt against an f64 reference computed from the same
// (rounded) inputs: f32 compute rtol 1e-5; bf16 outputs carry one bf16 rounding (2^-9
// relative) plus fp32 accumulation, so rtol 1e-2 (the CUDA issue's bound) and an atol scaled
// by the magnitude `scale` of the values.
struct Tol {
  double atol, rtol;
};
Tol tol_for(DType dt, double scale = 1.0);

// Skips without a device, except where R1_REQUIRE_CUDA=1 (scripts/gpu-check.sh sets it): there
// a CUDA test that cannot find the GPU fails instead of passing vacuously.
bool cuda_required();

}  // namespace r1::test

#define R1_SKIP_WITHOUT_CUDA()                                                  \
  do {                                                                          \
    if (!::r1::test::cuda_available()) {                                        \
      if (::r1::test::cuda_required()) FAIL() << "R1_REQUIRE_CUDA=1 but no CUDA device"; \
      GTEST_SKIP() << "no CUDA device";                                         \
    }                                                                           \
  } while (0)
