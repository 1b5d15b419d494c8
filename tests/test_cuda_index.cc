// CUDA gather, scatter_add, index_select, index_add and embedding forward/backward against
// the CPU kernels run in f64 on the same rounded inputs (ggml's test-backend-ops idea): one
// table of shapes per kernel, f32 and bf16, i32 and i64 indices, fresh random inputs every run
// (the harness prints the seed). Outputs are poisoned so that an unwritten element fails;
// accumulating kernels start from random destinations on both sides. Out-of-range indices
// must throw naming the op and the first bad index. Every test skips without a GPU.
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
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

DType index_dtype(uint64_t k) { return k % 2 ? DType::I32 : DType::I64; }

// One float tensor, N(0, 1) in dtype dt: `ref` is the f64 CPU copy of the rounded values,
// `gpu` the same values on the GPU starting `off` elements into their storage (off = 1: a
// pointer that is not 16-byte aligned).
struct Input {
  Tensor ref, gpu;
};
Input make_input(const Shape& shape, int64_t off, uint64_t seed, DType dt) {
  const int64_t n = shape_numel(shape);
  const Tensor base = Tensor::randn({n + off}, seed, dt);
  return {test::rounded_f64(base.narrow(0, off, n), dt).view(shape),
          base.to(kGpu).narrow(0, off, n).view(shape)};
}

// A poisoned GPU tensor of `shape` starting `off` elements into its storage.
Tensor poisoned_at(const Shape& shape, int64_t off, DType dt) {
  return test::poisoned({shape_numel(shape) + off}, dt, kGpu)
      .narrow(0, off, shape_numel(shape))
      .view(shape);
}

// Accumulated values: a destination plus `hits` N(0, 1) terms on average; f32 atomics add
// one rounding per term.
test::Tol accumulate_tol(DType dt, double hits) {
  return test::tol_for(dt, std::sqrt(1 + 4 * hits));
}

std::string case_name(const char* op, DType dt, DType it, const std::vector<int64_t>& dims,
                      int64_t off = 0) {
  return fmt::format("{} {} index {} ({}) off {}", op, dtype_name(dt), dtype_name(it),
                     fmt::join(dims, ", "), off);
}

// ---- gather, scatter_add ---------------------------------------------------------------

struct GatherCase {
  int64_t outer, dx, di, inner;
};
const std::vector<GatherCase> kGatherCases = {
    {1, 1, 1, 1},   {2, 5, 3, 7},    {3, 17, 40, 1},     {4, 1000, 7, 33},
    {2, 3, 9, 300}, {1, 2, 5, 4099}, {4096, 7168, 7168, 1},  // all logits of a batch
};

TEST(CudaIndex, GatherAndScatterAddMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 0;
  for (const GatherCase& c : kGatherCases) {
    for (DType dt : kFloats) {
      const DType it = index_dtype(++k);
      const Shape xs = {c.outer, c.dx, c.inner}, is = {c.outer, c.di, c.inner};
      const Tensor index = Tensor::randint(is, case_seed(++k), 0, c.dx, it);
      const Tensor index_gpu = index.to(kGpu);
      const std::string dims = case_name("", dt, it, {c.outer, c.dx, c.di, c.inner});

      const Input x = make_input(xs, 0, case_seed(++k), dt);
      Tensor ref = Tensor::empty(is, DType::F64);
      kernels::gather()(kCpu, x.ref, index, ref);
      Tensor out = test::poisoned(is, dt, kGpu);
      kernels::gather()(kGpu, x.gpu, index_gpu, out);
      test::expect_close("gather" + dims, out, ref, 0.0, 0.0);  // a move: exact

      const Input dout = make_input(is, 0, case_seed(++k), dt);
      const Input dx0 = make_input(xs, 0, case_seed(++k), dt);  // random, not zeros
      Tensor dx_ref = dx0.ref.clone();
      kernels::scatter_add()(kCpu, dout.ref, index, dx_ref);
      Tensor dx = dx0.gpu.clone();
      kernels::scatter_add()(kGpu, dout.gpu, index_gpu, dx);
      const test::Tol tol = accumulate_tol(dt, static_cast<double>(c.di) / c.dx);
      test::expect_close("scatter_add" + dims, dx, dx_ref, tol.atol, tol.rtol);
    }
  }
}

// ---- index_select, index_add -----------------------------------------------------------

struct RowCase {
  int64_t outer, dx, n, inner, off;
};
// Row bytes: 12/6 (f32/bf16, no 16-byte words), 32/16 (16-byte words unless off = 1), ...
const std::vector<RowCase> kRowCases = {
    {1, 1, 1, 1, 0},   {2, 10, 7, 3, 0},  {2, 10, 7, 3, 1},    {3, 50, 20, 8, 0},
    {3, 50, 20, 8, 1}, {1, 1000, 300, 1, 0}, {2, 7, 9, 13, 0}, {2, 5, 40, 64, 0},
    {2, 64, 33, 1000, 1},
};

TEST(CudaIndex, IndexSelectAndIndexAddMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 1000;
  for (const RowCase& c : kRowCases) {
    for (DType dt : kFloats) {
      const DType it = index_dtype(++k);
      const Shape xs = {c.outer, c.dx, c.inner}, os = {c.outer, c.n, c.inner};
      const Tensor index = Tensor::randint({c.n}, case_seed(++k), 0, c.dx, it);
      const Tensor index_gpu = index.to(kGpu);
      const std::string dims = case_name("", dt, it, {c.outer, c.dx, c.n, c.inner}, c.off);

      const Input x = make_input(xs, c.off, case_seed(++k), dt);
      Tensor ref = Tensor::empty(os, DType::F64);
      kernels::index_select()(kCpu, x.ref, index, ref);
      Tensor out = poisoned_at(os, c.off, dt);
      kernels::index_select()(kGpu, x.gpu, index_gpu, out);
      test::expect_close("index_select" + dims, out, ref, 0.0, 0.0);

      const Input dout = make_input(os, c.off, case_seed(++k), dt);
      const Input dx0 = make_input(xs, c.off, case_seed(++k), dt);
      Tensor dx_ref = dx0.ref.clone();
      kernels::index_add()(kCpu, dout.ref, index, dx_ref);
      Tensor dx = dx0.gpu;  // at the offset: accumulated in place
      kernels::index_add()(kGpu, dout.gpu, index_gpu, dx);
      const test::Tol tol = accumulate_tol(dt, static_cast<double>(c.n) / c.dx);
      test::expect_close("index_add" + dims, dx, dx_ref, tol.atol, tol.rtol);
    }
  }
}

// ---- embedding -------------------------------------------------------------------------

struct EmbeddingCase {
  int64_t N, V, D, off;
};
const std::vector<EmbeddingCase> kEmbeddingCases = {
    {1, 1, 1, 0},      {7, 5, 3, 0},     {33, 100, 64, 0}, {33, 100, 64, 1},
    {10, 3, 4099, 0},  {50, 7, 8, 0},    {4096, 4096, 7168, 0},  // a batch into a (V, 7168) table
};

TEST(CudaIndex, EmbeddingForwardAndBackwardMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 2000;
  for (const EmbeddingCase& c : kEmbeddingCases) {
    for (DType dt : kFloats) {
      const DType it = index_dtype(++k);
      const Tensor ids = Tensor::randint({c.N}, case_seed(++k), 0, c.V, it);
      const Tensor ids_gpu = ids.to(kGpu);
      const std::string dims = case_name("", dt, it, {c.N, c.V, c.D}, c.off);

      const Input table = make_input({c.V, c.D}, c.off, case_seed(++k), dt);
      Tensor ref = Tensor::empty({c.N, c.D}, DType::F64);
      kernels::embedding_forward()(kCpu, ids, table.ref, ref);
      Tensor out = poisoned_at({c.N, c.D}, c.off, dt);
      kernels::embedding_forward()(kGpu, ids_gpu, table.gpu, out);
      test::expect_close("embedding_forward" + dims, out, ref, 0.0, 0.0);

      const Input dout = make_input({c.N, c.D}, c.off, case_seed(++k), dt);
      const Input dt0 = make_input({c.V, c.D}, c.off, case_seed(++k), dt);
      Tensor dtable_ref = dt0.ref.clone();
      kernels::embedding_backward()(kCpu, ids, dout.ref, dtable_ref);
      Tensor dtable = dt0.gpu;
      kernels::embedding_backward()(kGpu, ids_gpu, dout.gpu, dtable);
      const test::Tol tol = accumulate_tol(dt, static_cast<double>(c.N) / c.V);
      test::expect_close("embedding_backward" + dims, dtable, dtable_ref, tol.atol, tol.rtol);
    }
  }
}

// ---- errors ----------------------------------------------------------------------------

// fn must throw an Error naming the op and `bad` (the first bad index in index order).
void expect_bad_index(const std::string& op, int64_t bad, const std::function<void()>& fn) {
  try {
    fn();
    ADD_FAILURE() << op << ": no error for index " << bad;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(op), std::string::npos) << msg;
    EXPECT_NE(msg.find(fmt::format("index {} at position", bad)), std::string::npos) << msg;
  }
}

// An index tensor on the GPU: random in [0, bound) except two bad values, `first` at
// position 3 and another after it, so the error must name `first`.
Tensor bad_index(const Shape& shape, int64_t bound, int64_t first, DType it, uint64_t seed) {
  std::vector<int64_t> v = Tensor::randint(shape, seed, 0, bound, DType::I64).to_int_vector();
  v[3] = first;
  v[v.size() - 2] = first < 0 ? bound : -1;
  return Tensor::from_vector(v, shape, DType::I64).to(it).to(kGpu);
}

TEST(CudaIndex, OutOfRangeIndicesThrow) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 3000;
  for (DType it : {DType::I32, DType::I64}) {
    for (DType dt : kFloats) {
      const Tensor x = Tensor::randn({2, 6, 5}, case_seed(++k), dt).to(kGpu);
      Tensor out = Tensor::empty({2, 8, 5}, dt, kGpu);
      Tensor dx = Tensor::randn({2, 6, 5}, case_seed(++k), dt).to(kGpu);
      const Tensor dout = Tensor::randn({2, 8, 5}, case_seed(++k), dt).to(kGpu);
      const Tensor gi = bad_index({2, 8, 5}, 6, 6, it, case_seed(++k));
      expect_bad_index("gather", 6, [&] { kernels::gather()(kGpu, x, gi, out); });
      const Tensor si = bad_index({2, 8, 5}, 6, -3, it, case_seed(++k));
      expect_bad_index("scatter_add", -3, [&] { kernels::scatter_add()(kGpu, dout, si, dx); });
      const Tensor ri = bad_index({8}, 6, 100, it, case_seed(++k));
      expect_bad_index("index_select", 100, [&] { kernels::index_select()(kGpu, x, ri, out); });
      const Tensor ai = bad_index({8}, 6, -1, it, case_seed(++k));
      expect_bad_index("index_add", -1, [&] { kernels::index_add()(kGpu, dout, ai, dx); });

      const Tensor table = Tensor::randn({6, 5}, case_seed(++k), dt).to(kGpu);
      Tensor emb = Tensor::empty({8, 5}, dt, kGpu);
      Tensor dtable = Tensor::randn({6, 5}, case_seed(++k), dt).to(kGpu);
      const Tensor g = Tensor::randn({8, 5}, case_seed(++k), dt).to(kGpu);
      const Tensor ei = bad_index({8}, 6, 6, it, case_seed(++k));
      expect_bad_index("embedding_forward", 6,
                       [&] { kernels::embedding_forward()(kGpu, ei, table, emb); });
      const Tensor bi = bad_index({8}, 6, -2, it, case_seed(++k));
      expect_bad_index("embedding_backward", -2,
                       [&] { kernels::embedding_backward()(kGpu, bi, g, dtable); });
    }
  }
}

TEST(CudaIndex, RejectUnsupportedDtypes) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor ids = Tensor::zeros({4}, DType::I64, kGpu);
  const Tensor table = Tensor::ones({3, 2}, DType::F64, kGpu);
  Tensor out = Tensor::empty({4, 2}, DType::F64, kGpu), dtable = table.clone();
  EXPECT_THROW(kernels::embedding_forward()(kGpu, ids, table, out), Error);
  EXPECT_THROW(kernels::embedding_backward()(kGpu, ids, out, dtable), Error);
  Tensor dx = Tensor::zeros({1, 3, 2}, DType::F64, kGpu);
  EXPECT_THROW(kernels::index_add()(kGpu, out.view({1, 4, 2}), ids, dx), Error);
  const Tensor f_ids = Tensor::zeros({4}, DType::F32, kGpu);
  Tensor out32 = Tensor::empty({4, 2}, DType::F32, kGpu);
  EXPECT_THROW(kernels::embedding_forward()(kGpu, f_ids, table.to(DType::F32), out32), Error);
}

// ---- through the ops and autograd ------------------------------------------------------

// loss = sum(gather(embedding(ids, T), 2, idx) * w1) + sum(index_select(T, 0, sel) * w2):
// T's gradient goes through embedding_backward, scatter_add and index_add, with repeated
// indices. CUDA f32 against the CPU in f64 from the same values.
TEST(CudaIndexAutograd, EmbeddingGatherIndexSelectBackward) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor t32 = Tensor::randn({11, 6}, case_seed(4001), DType::F32);
  const Tensor ids = Tensor::randint({2, 9}, case_seed(4002), 0, 11, DType::I64);
  const Tensor idx = Tensor::randint({2, 9, 4}, case_seed(4003), 0, 6, DType::I32);
  const Tensor sel = Tensor::randint({7}, case_seed(4004), 0, 11, DType::I64);
  const Tensor w1 = Tensor::randn({2, 9, 4}, case_seed(4005), DType::F32);
  const Tensor w2 = Tensor::randn({7, 6}, case_seed(4006), DType::F32);
  auto run = [&](Device dev, DType dt) {
    Tensor t = t32.to(dt).to(dev).set_requires_grad();
    const Tensor e = embedding(ids.to(dev), t);
    const Tensor loss = sum(mul(gather(e, 2, idx.to(dev)), w1.to(dt).to(dev))) +
                        sum(mul(index_select(t, 0, sel.to(dev)), w2.to(dt).to(dev)));
    backward(loss);
    return std::vector<Tensor>{loss, t.grad()};
  };
  const std::vector<Tensor> want = run(kCpu, DType::F64), got = run(kGpu, DType::F32);
  const test::Tol tol = test::tol_for(DType::F32, 10.0);
  test::expect_close("loss", got[0], want[0], tol.atol, tol.rtol);
  test::expect_close("dtable", got[1], want[1], tol.atol, tol.rtol);
}

}  // namespace
}  // namespace r1
