// CUDA binary, reduce and sum_squares against the CPU kernels run in f64 on the same rounded
// inputs (ggml's test-backend-ops idea): one table of shapes per kernel, f32 and bf16, fresh
// random inputs every run (the harness prints the seed), GPU outputs poisoned so that an
// element a kernel forgets to write fails. Plus the properties the CPU cannot check: argmax
// ties resolve to the first index, a row's sum does not depend on the rows launched beside
// it, and sum_squares does not depend on the pointer's alignment. Every test skips without
// a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;

// Prints the run's seed at startup, even when every test skips.
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();

const Device kGpu = Device::cuda(0);
const Device kCpu = Device::cpu();
constexpr DType kFloats[] = {DType::F32, DType::BF16};
constexpr BinaryOp kBinaryOps[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div};

const char* op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "?";
}

// One input, N(0, 1) in dtype dt: `ref` is the f64 CPU copy of the rounded values, `gpu` the
// same values on the GPU starting `off` elements into their storage (off = 1: a pointer that
// is not 16-byte aligned).
struct Input {
  Tensor ref, gpu;
};
Input make_input(const Shape& shape, int64_t off, uint64_t seed, DType dt) {
  const int64_t n = shape_numel(shape);
  const Tensor base = Tensor::randn({n + off}, seed, dt);
  return {test::rounded_f64(base.narrow(0, off, n), dt).view(shape),
          base.to(kGpu).narrow(0, off, n).view(shape)};
}

// A poisoned GPU output of `shape` starting `off` elements into `base`.
Tensor poisoned_at(Tensor& base, const Shape& shape, int64_t off, DType dt) {
  base = test::poisoned({shape_numel(shape) + off}, dt, kGpu);
  return base.narrow(0, off, shape_numel(shape)).view(shape);
}

void expect_same_ints(const std::string& name, const Tensor& got, const Tensor& want) {
  const std::vector<int64_t> g = got.to_int_vector(), w = want.to_int_vector();
  ASSERT_EQ(g.size(), w.size()) << name;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i] != w[i] && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << g.size() << " differ; first at "
                     << first << ": " << g[first] << " vs " << w[first];
}

// ---- binary ----------------------------------------------------------------------------

struct BinaryCase {
  Shape out, a, b;  // a and b broadcast to out
  int64_t off;      // storage offset of a, b and out
  bool large;       // only add and mul: the CPU reference is slow
};

const std::vector<BinaryCase> kBinaryCases = {
    {{7}, {7}, {7}, 0, false},
    {{7}, {7}, {7}, 1, false},
    {{1}, {1}, {1}, 0, false},
    {{3, 5, 7}, {3, 5, 7}, {3, 5, 7}, 1, false},
    {{1, 4099}, {1, 4099}, {1, 4099}, 0, false},
    {{33, 65}, {33, 1}, {1, 65}, 0, false},   // outer product
    {{33, 65}, {33, 1}, {1, 65}, 1, false},
    {{2, 3, 4, 5}, {3, 1, 1}, {2, 1, 4, 5}, 0, false},
    {{6, 10}, {}, {6, 10}, 0, false},          // 0-d scalar operand
    {{6, 10}, {6, 10}, {1}, 1, false},
    {{5, 1, 9}, {5, 1, 9}, {9}, 0, false},     // size-1 dim in out
    {{2, 3, 7, 5}, {2, 1, 7, 1}, {1, 3, 1, 5}, 1, false},
    {{4096, 7168}, {4096, 7168}, {4096, 7168}, 0, true},
    {{4096, 7168}, {4096, 7168}, {7168}, 0, true},  // bias add
};

TEST(CudaBinary, MatchesCpuOnEveryShapeAndDtype) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 0;
  for (const BinaryCase& c : kBinaryCases) {
    for (DType dt : kFloats) {
      const Input a = make_input(c.a, c.off, case_seed(++k), dt);
      const Input b = make_input(c.b, c.off, case_seed(++k), dt);
      for (BinaryOp op : kBinaryOps) {
        if (c.large && (op == BinaryOp::Sub || op == BinaryOp::Div)) continue;
        const std::string name =
            fmt::format("binary {} {} a{} b{} -> {} off {}", op_name(op), dtype_name(dt),
                        shape_str(c.a), shape_str(c.b), shape_str(c.out), c.off);
        Tensor ref = Tensor::empty(c.out, DType::F64);
        kernels::binary()(kCpu, op, a.ref.expand(c.out), b.ref.expand(c.out), ref);
        Tensor base;
        Tensor out = poisoned_at(base, c.out, c.off, dt);
        kernels::binary()(kGpu, op, a.gpu.expand(c.out), b.gpu.expand(c.out), out);
        const test::Tol tol = test::tol_for(dt);
        test::expect_close(name, out, ref, tol.atol, tol.rtol);
        if (c.off) {
          EXPECT_TRUE(std::isnan(base.narrow(0, 0, 1).item())) << name << ": wrote before out";
        }
      }
    }
  }
}

// ---- reduce ----------------------------------------------------------------------------

struct ReduceCase {
  int64_t outer, R, inner;
};

// Rows (inner == 1) are chunked by 4096, columns by 512 rows of R: the table covers one and
// several chunks, and three levels of partials ((1, 29360128, 1) and (1, 300000, 2)).
const std::vector<ReduceCase> kReduceCases = {
    {1, 1, 1},      {1, 7, 1},       {3, 4099, 1},   {5, 1, 3},
    {2, 33, 17},    {4, 300, 33},    {1, 100000, 1}, {3, 1500, 5},
    {1, 300000, 2}, {4096, 7168, 1}, {1, 4096, 7168}, {1, 4096 * 7168, 1},
};

TEST(CudaReduce, SumAndMaxMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 1000;
  for (const ReduceCase& c : kReduceCases) {
    for (DType dt : kFloats) {
      const Shape x3 = {c.outer, c.R, c.inner}, o2 = {c.outer, c.inner};
      const Input x = make_input(x3, 0, case_seed(++k), dt);
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max}) {
        const bool is_max = op == ReduceOp::Max;
        const std::string name = fmt::format("reduce {} {} ({}, {}, {})", is_max ? "max" : "sum",
                                             dtype_name(dt), c.outer, c.R, c.inner);
        Tensor ref = Tensor::empty(o2, DType::F64);
        Tensor ref_idx = is_max ? Tensor::empty(o2, DType::I64) : Tensor();
        kernels::reduce()(kCpu, op, x.ref, ref, ref_idx);
        Tensor out = test::poisoned(o2, dt, kGpu);
        Tensor idx = is_max ? test::poisoned(o2, DType::I64, kGpu) : Tensor();
        kernels::reduce()(kGpu, op, x.gpu, out, idx);
        if (is_max) {  // a selection: exact, ties included (both take the first index)
          test::expect_close(name, out, ref, 0.0, 0.0);
          expect_same_ints(name + " argmax", idx, ref_idx);
        } else {  // a sum of R N(0, 1) values is ~sqrt(R) in size
          const test::Tol tol = test::tol_for(dt, std::sqrt(static_cast<double>(c.R)));
          test::expect_close(name, out, ref, tol.atol, tol.rtol);
        }
      }
    }
  }
}

// Rows built on the host with deliberate ties of the maximum (2.0, above every other value
// in [-1, 1)) across chunk boundaries, NaNs, and a -0/+0 tie: the first index must win.
TEST(CudaReduce, MaxTiesReturnTheFirstIndex) {
  R1_SKIP_WITHOUT_CUDA();
  struct TieCase {
    int64_t outer, R, inner;
    std::vector<std::vector<int64_t>> at;  // per output (o * inner + j): rows set to `value`
    double value;
    std::vector<int64_t> want;  // expected argmax per output
  };
  const double nan = std::nan("");
  const std::vector<TieCase> cases = {
      {2, 10000, 1, {{7000, 300, 9000}, {8192, 4096}}, 2.0, {300, 4096}},  // row chunks
      {1, 1200, 3, {{700, 13}, {520, 1100}, {1199}}, 2.0, {13, 520, 1199}},  // column chunks
      {1, 5000, 1, {{9, 4, 4500}}, nan, {4}},  // the first NaN wins, as on the CPU
  };
  uint64_t k = 2000;
  for (const TieCase& c : cases) {
    std::vector<double> v = Tensor::rand({c.outer, c.R, c.inner}, case_seed(++k), -1.0, 1.0,
                                         DType::F64).to_double_vector();
    for (int64_t oj = 0; oj < c.outer * c.inner; ++oj) {
      const int64_t o = oj / c.inner, j = oj % c.inner;
      for (int64_t r : c.at[oj]) v[(o * c.R + r) * c.inner + j] = c.value;
    }
    for (DType dt : kFloats) {
      const std::string name = fmt::format("max ties {} ({}, {}, {})", dtype_name(dt), c.outer,
                                           c.R, c.inner);
      const Tensor x = Tensor::from_vector(v, {c.outer, c.R, c.inner}, dt, kGpu);
      Tensor out = test::poisoned({c.outer, c.inner}, dt, kGpu);
      Tensor idx = test::poisoned({c.outer, c.inner}, DType::I64, kGpu);
      kernels::reduce()(kGpu, ReduceOp::Max, x, out, idx);
      EXPECT_EQ(idx.to_int_vector(), c.want) << name;
      for (double m : out.to_double_vector()) {
        if (std::isnan(c.value)) EXPECT_TRUE(std::isnan(m)) << name;
        else EXPECT_EQ(m, c.value) << name;
      }
    }
  }
  // -0 and +0 compare equal: the first of them is the maximum of a negative row.
  const Tensor z = Tensor::from_vector(std::vector<double>{-1.0, -0.0, 0.0, -2.0}, {1, 4, 1},
                                       DType::F32, kGpu);
  Tensor out = Tensor::empty({1, 1}, DType::F32, kGpu);
  Tensor idx = test::poisoned({1, 1}, DType::I64, kGpu);
  kernels::reduce()(kGpu, ReduceOp::Max, z, out, idx);
  EXPECT_EQ(idx.to_int_vector(), std::vector<int64_t>{1});
}

// Batch invariance: reducing one row alone gives the same bits as reducing it among others.
TEST(CudaReduce, SumOfARowDoesNotDependOnTheBatch) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 3000;
  for (DType dt : kFloats) {
    for (const ReduceCase& c : {ReduceCase{37, 5000, 1}, ReduceCase{6, 1300, 40}}) {
      const Tensor x = Tensor::randn({c.outer, c.R, c.inner}, case_seed(++k), dt).to(kGpu);
      Tensor all = Tensor::empty({c.outer, c.inner}, dt, kGpu), none;
      kernels::reduce()(kGpu, ReduceOp::Sum, x, all, none);
      const int64_t o = c.outer / 2;
      Tensor one = Tensor::empty({1, c.inner}, dt, kGpu);
      kernels::reduce()(kGpu, ReduceOp::Sum, x.narrow(0, o, 1), one, none);
      EXPECT_EQ(one.to_float_vector(), all.narrow(0, o, 1).to_float_vector())
          << dtype_name(dt) << " (" << c.outer << ", " << c.R << ", " << c.inner << ")";
    }
  }
}

// ---- sum_squares -----------------------------------------------------------------------

TEST(CudaSumSquares, MatchesCpuAndIgnoresAlignment) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 4000;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{4099}, (int64_t{1} << 20) + 3,
                    int64_t{4096} * 7168}) {
    for (DType dt : kFloats) {
      const Input x = make_input({n}, 1, case_seed(++k), dt);
      const double ref = kernels::sum_squares()(kCpu, x.ref);
      const double got = kernels::sum_squares()(kGpu, x.gpu);
      // Both sum exact f64 squares; only the order of n f64 additions differs.
      EXPECT_NEAR(got, ref, 1e-10 * ref) << dtype_name(dt) << " n=" << n;
      const Tensor aligned = x.gpu.clone();  // a fresh 16-byte aligned copy
      EXPECT_EQ(kernels::sum_squares()(kGpu, aligned), got)
          << dtype_name(dt) << " n=" << n << ": result depends on the pointer";
    }
  }
}

TEST(CudaElementwise, RejectUnsupportedDtypes) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor x = Tensor::ones({4, 3}, DType::F64, kGpu);
  Tensor out = Tensor::empty({4, 3}, DType::F64, kGpu);
  EXPECT_THROW(kernels::binary()(kGpu, BinaryOp::Add, x, x, out), Error);
  Tensor r = Tensor::empty({4, 1}, DType::F64, kGpu), none;
  EXPECT_THROW(kernels::reduce()(kGpu, ReduceOp::Sum, x.view({4, 3, 1}), r, none), Error);
  EXPECT_THROW(kernels::sum_squares()(kGpu, x), Error);
}

// ---- through the ops and autograd ------------------------------------------------------

// loss = sum(max((a + b) * c, dim 1)) + sum(a / c - b), broadcasting everywhere; the value
// and the gradients on CUDA f32 against the CPU in f64 from the same values.
TEST(CudaElementwiseAutograd, BroadcastArithmeticSumMaxBackward) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor a32 = Tensor::randn({4, 1, 7}, case_seed(5001), DType::F32);
  const Tensor b32 = Tensor::randn({3, 7}, case_seed(5002), DType::F32);
  const Tensor c32 = Tensor::rand({4, 3, 1}, case_seed(5003), 0.5, 2.0, DType::F32);
  auto run = [&](Device dev, DType dt) {
    Tensor a = a32.to(dt).to(dev).set_requires_grad();
    Tensor b = b32.to(dt).to(dev).set_requires_grad();
    Tensor c = c32.to(dt).to(dev).set_requires_grad();
    const Tensor loss = sum(max(mul(add(a, b), c), 1)) + sum(sub(div(a, c), b));
    backward(loss);
    return std::vector<Tensor>{loss, a.grad(), b.grad(), c.grad()};
  };
  const std::vector<Tensor> want = run(kCpu, DType::F64), got = run(kGpu, DType::F32);
  const char* names[] = {"loss", "da", "db", "dc"};
  const test::Tol tol = test::tol_for(DType::F32, 10.0);
  for (size_t i = 0; i < want.size(); ++i)
    test::expect_close(names[i], got[i], want[i], tol.atol, tol.rtol);
}

}  // namespace
}  // namespace r1
