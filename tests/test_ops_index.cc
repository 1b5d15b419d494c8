// concat, split, gather, index_select: forward values against direct loops, gradients against
// f64 finite differences (repeated indices exercise the scatter accumulation, split uses only
// some outputs), index dtypes i32/i64, and errors for bad shapes and indices.
#include <gtest/gtest.h>

#include "engine/kernels.h"
#include "engine/ops.h"
#include "tests/harness.h"

namespace r1 {
namespace {

Tensor rnd(const Shape& s, uint64_t k) { return Tensor::randn(s, test::case_seed(k), DType::F64); }
Tensor rnd_grad(const Shape& s, uint64_t k) { return rnd(s, k).set_requires_grad(); }

// Flat offset of a multi-index in a contiguous shape.
int64_t flat(const Shape& s, const std::vector<int64_t>& idx) {
  int64_t o = 0;
  for (size_t d = 0; d < s.size(); ++d) o = o * s[d] + idx[d];
  return o;
}

// Calls fn(multi-index) for every element of shape s, row-major.
template <class Fn>
void for_each_index(const Shape& s, Fn fn) {
  std::vector<int64_t> idx(s.size(), 0);
  for (int64_t n = 0; n < shape_numel(s); ++n) {
    fn(idx);
    for (size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
}

TEST(Concat, ValuesAndGradAlongEachDim) {
  const Shape base = {2, 3, 4};
  uint64_t k = 0;
  for (int64_t dim = -3; dim < 3; ++dim) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    std::vector<Tensor> xs;
    for (int64_t len : {1, 3, 2}) {
      Shape s = base;
      s[d] = len;
      xs.push_back(rnd_grad(s, ++k));
    }
    const Tensor out = concat(xs, dim);
    const std::vector<double> ov = out.to_double_vector();
    int64_t at = 0;
    for (const Tensor& x : xs) {
      const std::vector<double> xv = x.to_double_vector();
      for_each_index(x.shape(), [&](const std::vector<int64_t>& i) {
        std::vector<int64_t> j = i;
        j[d] += at;
        EXPECT_EQ(ov[flat(out.shape(), j)], xv[flat(x.shape(), i)]);
      });
      at += x.size(d);
    }
    test::expect_gradcheck(
        "concat dim " + std::to_string(dim),
        [dim](const std::vector<Tensor>& in) { return concat(in, dim); }, xs,
        test::case_seed(++k));
  }
}

TEST(Split, UnequalSizesSomeOutputsUsed) {
  uint64_t k = 100;
  for (int64_t dim = 0; dim < 3; ++dim) {
    Shape s = {3, 4, 5};
    s[dim] = 6;
    const std::vector<int64_t> sizes = {1, 3, 2};
    const Tensor x = rnd_grad(s, ++k);
    const std::vector<Tensor> parts = split(x, sizes, dim);
    ASSERT_EQ(parts.size(), 3u);
    const Tensor back = concat(parts, dim);
    test::expect_close("split then concat", back, x, 0, 0);
    // Only the last output used.
    test::expect_gradcheck(
        "split last only dim " + std::to_string(dim),
        [=](const std::vector<Tensor>& in) {
          const Tensor p = split(in[0], sizes, dim)[2];
          return mul(p, p);
        },
        {x}, test::case_seed(++k));
    // First and last used, the middle one not.
    test::expect_gradcheck(
        "split first+last dim " + std::to_string(dim),
        [=](const std::vector<Tensor>& in) {
          const std::vector<Tensor> p = split(in[0], sizes, dim);
          return concat({scale(p[0], 3.0), mul(p[2], p[2])}, dim);
        },
        {x}, test::case_seed(++k));
  }
}

// Indices in [0, bound) with more draws than the bound, so some repeat.
Tensor repeated_index(const Shape& s, int64_t bound, uint64_t k, DType dt) {
  return Tensor::randint(s, test::case_seed(k), 0, bound, dt);
}

TEST(Gather, ValuesAndGradWithRepeatedIndices) {
  uint64_t k = 200;
  const Shape xs = {3, 4, 5};
  for (DType dt : {DType::I64, DType::I32})
    for (int64_t dim = 0; dim < 3; ++dim) {
      Shape is = xs;
      is[dim] = 2 * xs[dim] + 1;  // more entries than the dim holds: repeats
      if (dim != 0) is[0] = 2;    // smaller than x off `dim` (torch.gather allows it)
      const Tensor x = rnd_grad(xs, ++k);
      const Tensor index = repeated_index(is, xs[dim], ++k, dt);
      const Tensor out = gather(x, dim, index);
      ASSERT_EQ(out.shape(), is);
      const std::vector<double> xv = x.to_double_vector(), ov = out.to_double_vector();
      const std::vector<int64_t> iv = index.to_int_vector();
      for_each_index(is, [&](const std::vector<int64_t>& i) {
        std::vector<int64_t> src = i;
        src[dim] = iv[flat(is, i)];
        EXPECT_EQ(ov[flat(is, i)], xv[flat(xs, src)]);
      });
      test::expect_gradcheck(
          "gather dim " + std::to_string(dim),
          [=](const std::vector<Tensor>& in) { return gather(in[0], dim, index); }, {x},
          test::case_seed(++k));
    }
}

TEST(IndexSelect, ValuesAndGradWithRepeatedIndices) {
  uint64_t k = 300;
  const Shape xs = {3, 4, 5};
  for (DType dt : {DType::I64, DType::I32})
    for (int64_t dim = -1; dim < 3; ++dim) {
      const int64_t d = dim < 0 ? dim + 3 : dim;
      const int64_t n = 2 * xs[d] + 1;
      const Tensor x = rnd_grad(xs, ++k);
      const Tensor index = repeated_index({n}, xs[d], ++k, dt);
      const Tensor out = index_select(x, dim, index);
      Shape os = xs;
      os[d] = n;
      ASSERT_EQ(out.shape(), os);
      const std::vector<double> xv = x.to_double_vector(), ov = out.to_double_vector();
      const std::vector<int64_t> iv = index.to_int_vector();
      for_each_index(os, [&](const std::vector<int64_t>& i) {
        std::vector<int64_t> src = i;
        src[d] = iv[i[d]];
        EXPECT_EQ(ov[flat(os, i)], xv[flat(xs, src)]);
      });
      test::expect_gradcheck(
          "index_select dim " + std::to_string(dim),
          [=](const std::vector<Tensor>& in) { return index_select(in[0], dim, index); }, {x},
          test::case_seed(++k));
    }
}

TEST(IndexKernels, AccumulateOntoExistingValues) {
  // index_add and scatter_add add onto dx (the contract says "accumulates").
  const Tensor dout = rnd({2, 7, 3}, 400);
  const Tensor dx0 = rnd({2, 4, 3}, 401);
  const Tensor idx = repeated_index({7}, 4, 402, DType::I32);
  Tensor dx = dx0.clone();
  kernels::index_add()(Device::cpu(), dout, idx, dx);
  std::vector<double> want = dx0.to_double_vector();
  const std::vector<double> g = dout.to_double_vector();
  const std::vector<int64_t> iv = idx.to_int_vector();
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t c = 0; c < 3; ++c) want[(o * 4 + iv[i]) * 3 + c] += g[(o * 7 + i) * 3 + c];
  test::expect_close("index_add", dx.to_double_vector(), want, 1e-14, 1e-14);

  const Tensor sidx = repeated_index({2, 7, 3}, 4, 403, DType::I64);
  Tensor sx = dx0.clone();
  kernels::scatter_add()(Device::cpu(), dout, sidx, sx);
  std::vector<double> swant = dx0.to_double_vector();
  const std::vector<int64_t> sv = sidx.to_int_vector();
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t c = 0; c < 3; ++c)
        swant[(o * 4 + sv[(o * 7 + i) * 3 + c]) * 3 + c] += g[(o * 7 + i) * 3 + c];
  test::expect_close("scatter_add", sx.to_double_vector(), swant, 1e-14, 1e-14);
}

// The error message must name the op and the offending index.
void expect_index_error(const std::function<void()>& f, const std::string& op,
                        const std::string& index_text) {
  try {
    f();
    ADD_FAILURE() << op << ": no error for index " << index_text;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(op), std::string::npos) << msg;
    EXPECT_NE(msg.find("index " + index_text), std::string::npos) << msg;
  }
}

TEST(Indexing, BadIndicesAndShapesThrow) {
  const Tensor x = rnd({3, 4}, 500);
  const Tensor big = Tensor::from_vector(std::vector<int64_t>{0, 4, 1}, {3});
  const Tensor neg = Tensor::from_vector(std::vector<int32_t>{0, -1}, {2});
  expect_index_error([&] { index_select(x, 1, big); }, "index_select", "4");
  expect_index_error([&] { index_select(x, 0, neg); }, "index_select", "-1");
  const Tensor gbig = Tensor::from_vector(std::vector<int64_t>{0, 1, 3, 2, 0, 4}, {3, 2});
  expect_index_error([&] { gather(x, 1, gbig); }, "gather", "4");
  EXPECT_THROW(gather(x, 1, Tensor::zeros({3}, DType::I64)), Error);      // rank
  EXPECT_THROW(gather(x, 1, Tensor::zeros({4, 2}, DType::I64)), Error);   // larger off dim
  EXPECT_THROW(index_select(x, 0, Tensor::zeros({2}, DType::F32)), Error);  // dtype
  EXPECT_THROW(index_select(x, 2, big), Error);                           // dim
  EXPECT_THROW(concat({x, rnd({3, 5}, 501)}, 0), Error);
  EXPECT_THROW(concat({x, rnd({3}, 502)}, 0), Error);
  EXPECT_THROW(concat({}, 0), Error);
  EXPECT_THROW(split(x, {1, 1}, 0), Error);  // sums to 2, not 3
  EXPECT_THROW(split(x, {5, -1}, 1), Error);
}

}  // namespace
}  // namespace r1
