// Every op of engine/ops.h against PyTorch CPU (float32), forward and input gradients, from
// ONE table (ggml's test-backend-ops habit): adding an op means adding rows, not a harness.
// The table runs through r1 first; all inputs, upstream gradients and the case specs go to
// one safetensors file, tests/torch_ref/ops_ref.py computes the references for the whole
// table in one python run, and each case compares max|r1 - torch| / max|torch| to the op's
// tolerance, for every output and every float input's gradient.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ---- the table -------------------------------------------------------------------------

enum class Kind { Normal, NonZero, Index };
struct Input {
  Shape shape;
  Kind kind = Kind::Normal;
  double stddev = 1.0;           // Normal
  int64_t lo = 0, hi = 0;        // Index: uniform in [lo, hi)
  DType index_dtype = DType::I64;
  std::optional<int64_t> ignore;  // Index: about a quarter of the entries (never the first)
};
Input F(Shape s, double stddev = 1.0) {
  Input in;
  in.shape = std::move(s);
  in.stddev = stddev;
  return in;
}
// |v| in [0.5, 2], either sign: a denominator far from zero.
Input NZ(Shape s) {
  Input in;
  in.shape = std::move(s);
  in.kind = Kind::NonZero;
  return in;
}
Input I(Shape s, int64_t lo, int64_t hi, DType dt = DType::I64,
        std::optional<int64_t> ignore = std::nullopt) {
  Input in;
  in.shape = std::move(s);
  in.kind = Kind::Index;
  in.lo = lo;
  in.hi = hi;
  in.index_dtype = dt;
  in.ignore = ignore;
  return in;
}

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&, const json&)>;
struct OpDef {
  double tol;  // on max|r1 - torch| / max|torch|, outputs and gradients alike
  OpFn run;
};

RopeConfig rope_config(const json& p) {
  RopeConfig c;
  c.dim = p["dim"];
  c.theta = p["theta"];
  c.interleaved = p["interleaved"];
  c.yarn_factor = p["yarn_factor"];
  c.original_max_position_embeddings = p["original_max_position_embeddings"];
  c.beta_fast = p["beta_fast"];
  c.beta_slow = p["beta_slow"];
  c.mscale = p["mscale"];
  c.mscale_all_dim = p["mscale_all_dim"];
  return c;
}

// Tolerances: 0 where the op only moves values (bit-exact); 1e-6 where each result is one
// f32 operation or an accumulation of a few; 1e-5 for sums whose order differs from torch's
// (broadcast gradients are sums too: their cancellation against max|torch| reached 1.4e-6
// for div); 2e-5 for dot products (K <= 64), normalizations and transcendentals.
// Worst seen over 10 seeds (R1_TEST_VERBOSE=1 prints each): add/sub/mul/div 1.4e-6,
// softmax/log_softmax 1.2e-6, sum/mean 8.7e-7, cross_entropy 6.7e-7, matmul/linear 1.7e-7,
// rmsnorm 2.3e-7, rope 1.0e-7; scale, add_scalar, max, concat, split, gather,
// index_select, embedding 0.
const std::map<std::string, OpDef>& ops() {
  static const std::map<std::string, OpDef> m = {
      {"matmul", {2e-5, [](auto& x, auto& p) {
         return std::vector{matmul(x[0], x[1], p["trans_a"], p["trans_b"])}; }}},
      {"linear", {2e-5, [](auto& x, auto&) {
         return std::vector{linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor())}; }}},
      {"add", {1e-5, [](auto& x, auto&) { return std::vector{add(x[0], x[1])}; }}},
      {"sub", {1e-5, [](auto& x, auto&) { return std::vector{sub(x[0], x[1])}; }}},
      {"mul", {1e-5, [](auto& x, auto&) { return std::vector{mul(x[0], x[1])}; }}},
      {"div", {1e-5, [](auto& x, auto&) { return std::vector{div(x[0], x[1])}; }}},
      {"scale", {1e-6, [](auto& x, auto& p) { return std::vector{scale(x[0], p["s"])}; }}},
      {"add_scalar", {1e-6, [](auto& x, auto& p) {
         return std::vector{add_scalar(x[0], p["s"])}; }}},
      {"sum", {1e-5, [](auto& x, auto& p) {
         return std::vector{p["dim"].is_null() ? sum(x[0]) : sum(x[0], p["dim"], p["keepdim"])}; }}},
      {"mean", {1e-5, [](auto& x, auto& p) {
         return std::vector{p["dim"].is_null() ? mean(x[0]) : mean(x[0], p["dim"], p["keepdim"])}; }}},
      {"max", {0, [](auto& x, auto& p) { return std::vector{max(x[0], p["dim"], p["keepdim"])}; }}},
      {"concat", {0, [](auto& x, auto& p) { return std::vector{concat(x, p["dim"])}; }}},
      {"split", {0, [](auto& x, auto& p) {
         return split(x[0], p["sizes"].template get<std::vector<int64_t>>(), p["dim"]); }}},
      {"gather", {1e-6, [](auto& x, auto& p) { return std::vector{gather(x[0], p["dim"], x[1])}; }}},
      {"index_select", {1e-6, [](auto& x, auto& p) {
         return std::vector{index_select(x[0], p["dim"], x[1])}; }}},
      {"embedding", {1e-6, [](auto& x, auto&) { return std::vector{embedding(x[0], x[1])}; }}},
      {"rmsnorm", {2e-5, [](auto& x, auto& p) { return std::vector{rmsnorm(x[0], x[1], p["eps"])}; }}},
      {"swiglu", {2e-5, [](auto& x, auto&) { return std::vector{swiglu(x[0], x[1])}; }}},
      {"softmax", {2e-5, [](auto& x, auto&) { return std::vector{softmax(x[0])}; }}},
      {"log_softmax", {2e-5, [](auto& x, auto&) { return std::vector{log_softmax(x[0])}; }}},
      {"cross_entropy", {2e-5, [](auto& x, auto& p) {
         return std::vector{cross_entropy(x[0], x[1], p["ignore_index"])}; }}},
      {"rope", {2e-5, [](auto& x, auto& p) {
         const RopeTable table(rope_config(p), p["max_positions"]);
         return std::vector{rope(x[0], x[1], table)}; }}},
  };
  return m;
}

struct Case {
  Case(std::string o, std::vector<Input> in, json p = json::object())
      : op(std::move(o)), inputs(std::move(in)), params(std::move(p)) {}
  std::string op;
  std::vector<Input> inputs;
  json params;
  std::string name;  // op_<k>, filled in by build_cases()
};

json mm(bool ta, bool tb) { return {{"trans_a", ta}, {"trans_b", tb}}; }
json red(std::optional<int64_t> dim, bool keepdim = false) {
  return {{"dim", dim ? json(*dim) : json()}, {"keepdim", keepdim}};
}
json rope_p(int64_t dim, bool interleaved, double factor, int64_t max_pos) {
  return {{"dim", dim}, {"theta", 10000.0}, {"interleaved", interleaved},
          {"yarn_factor", factor}, {"original_max_position_embeddings", 4096},
          {"beta_fast", 32.0}, {"beta_slow", 1.0}, {"mscale", 1.0},
          {"mscale_all_dim", 0.0}, {"max_positions", max_pos}};
}

std::vector<Case> build_cases() {
  std::vector<Case> c = {
      // matmul: every transpose, batched, 2-D b broadcast over a's batch, thin and K = 64.
      {"matmul", {F({5, 7}), F({7, 3})}, mm(false, false)},
      {"matmul", {F({7, 5}), F({7, 3})}, mm(true, false)},
      {"matmul", {F({5, 7}), F({3, 7})}, mm(false, true)},
      {"matmul", {F({7, 5}), F({3, 7})}, mm(true, true)},
      {"matmul", {F({2, 3, 4, 6}), F({2, 3, 6, 5})}, mm(false, false)},
      {"matmul", {F({2, 3, 6, 4}), F({2, 3, 5, 6})}, mm(true, true)},
      {"matmul", {F({3, 4, 6}), F({6, 5})}, mm(false, false)},
      {"matmul", {F({3, 6, 4}), F({5, 6})}, mm(true, true)},
      {"matmul", {F({2, 4, 6}), F({5, 6})}, mm(false, true)},
      {"matmul", {F({1, 33}), F({33, 1})}, mm(false, false)},
      {"matmul", {F({17, 64}), F({64, 19})}, mm(false, false)},
      {"linear", {F({5, 8}), F({6, 8}), F({6})}},
      {"linear", {F({2, 3, 8}), F({4, 8})}},
      {"linear", {F({7, 16}), F({1, 16}), F({1})}},
      {"linear", {F({2, 2, 3, 5}), F({3, 5}), F({3})}},
      {"linear", {F({9, 64}), F({33, 64}), F({33})}},
  };
  // Broadcasting families, the same for each binary op (div's denominator away from zero).
  const std::vector<std::pair<Shape, Shape>> bshapes = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{5}, {}}, {{1, 3, 1}, {2, 1, 5}}};
  for (const char* op : {"add", "sub", "mul", "div"})
    for (const auto& [a, b] : bshapes)
      c.push_back({op, {F(a), std::string(op) == "div" ? NZ(b) : F(b)}});
  c.push_back({"scale", {F({3, 5})}, {{"s", -1.7}}});
  c.push_back({"scale", {F({2, 3, 4})}, {{"s", 0.3}}});
  c.push_back({"add_scalar", {F({3, 5})}, {{"s", 2.5}}});
  c.push_back({"add_scalar", {F({7})}, {{"s", -0.75}}});
  for (const char* op : {"sum", "mean"}) {
    c.push_back({op, {F({4, 5})}, red(std::nullopt)});
    c.push_back({op, {F({2, 3, 4})}, red(std::nullopt)});
    c.push_back({op, {F({4, 5})}, red(0)});
    c.push_back({op, {F({4, 5})}, red(-1, true)});
    c.push_back({op, {F({2, 3, 4})}, red(1)});
    c.push_back({op, {F({2, 3, 4})}, red(1, true)});
    c.push_back({op, {F({7})}, red(0)});
    c.push_back({op, {F({3, 300})}, red(1)});
  }
  c.push_back({"max", {F({4, 6})}, red(1)});
  c.push_back({"max", {F({3, 4, 5})}, red(0, true)});
  c.push_back({"max", {F({3, 4, 5})}, red(-1)});
  c.push_back({"max", {F({2, 3, 4})}, red(1, true)});
  c.push_back({"concat", {F({2, 3}), F({4, 3})}, {{"dim", 0}}});
  c.push_back({"concat", {F({2, 3, 4}), F({2, 1, 4}), F({2, 5, 4})}, {{"dim", 1}}});
  c.push_back({"concat", {F({3, 2}), F({3, 5})}, {{"dim", -1}}});
  c.push_back({"split", {F({6, 4})}, {{"sizes", {2, 4}}, {"dim", 0}}});
  c.push_back({"split", {F({2, 7, 3})}, {{"sizes", {3, 1, 3}}, {"dim", 1}}});
  c.push_back({"split", {F({3, 8})}, {{"sizes", {5, 3}}, {"dim", -1}}});
  // gather: the index may be longer than x along dim, and no longer elsewhere.
  c.push_back({"gather", {F({4, 6}), I({4, 3}, 0, 6)}, {{"dim", 1}}});
  c.push_back({"gather", {F({5, 3}), I({7, 3}, 0, 5)}, {{"dim", 0}}});
  c.push_back({"gather", {F({2, 3, 4}), I({2, 3, 5}, 0, 4, DType::I32)}, {{"dim", 2}}});
  c.push_back({"gather", {F({3, 4, 2}), I({2, 4, 2}, 0, 4)}, {{"dim", 1}}});
  c.push_back({"index_select", {F({6, 4}), I({5}, 0, 6)}, {{"dim", 0}}});
  c.push_back({"index_select", {F({3, 5, 2}), I({7}, 0, 5, DType::I32)}, {{"dim", 1}}});
  c.push_back({"index_select", {F({3, 5, 4}), I({6}, 0, 4)}, {{"dim", -1}}});
  c.push_back({"embedding", {I({2, 5}, 0, 11), F({11, 8})}});
  c.push_back({"embedding", {I({7}, 0, 4, DType::I32), F({4, 3})}});  // repeats accumulate
  c.push_back({"embedding", {I({3, 2, 4}, 0, 50), F({50, 16})}});
  c.push_back({"rmsnorm", {F({4, 16}), F({16})}, {{"eps", 1e-6}}});
  c.push_back({"rmsnorm", {F({2, 3, 7}), F({7})}, {{"eps", 1e-5}}});
  c.push_back({"rmsnorm", {F({1, 64}, 0.01), F({64})}, {{"eps", 1e-6}}});  // eps matters
  c.push_back({"swiglu", {F({3, 8}), F({3, 8})}});
  c.push_back({"swiglu", {F({2, 4, 5}, 4.0), F({2, 4, 5})}});
  c.push_back({"swiglu", {F({17}), F({17})}});
  for (const char* op : {"softmax", "log_softmax"}) {
    c.push_back({op, {F({4, 7})}});
    c.push_back({op, {F({2, 3, 16}, 10.0)}});  // large logits: needs the max subtracted
    c.push_back({op, {F({5, 1})}});
    c.push_back({op, {F({3, 257})}});
  }
  c.push_back({"cross_entropy", {F({8, 11}), I({8}, 0, 11, DType::I64, -100)}, {{"ignore_index", -100}}});
  c.push_back({"cross_entropy", {F({6, 3}), I({6}, 0, 3, DType::I64, 2)}, {{"ignore_index", 2}}});
  c.push_back({"cross_entropy", {F({16, 50}, 3.0), I({16}, 0, 50, DType::I32)}, {{"ignore_index", -100}}});
  c.push_back({"cross_entropy", {F({4, 1000}), I({4}, 0, 1000, DType::I64, -1)}, {{"ignore_index", -1}}});
  // rope: interleaved (DeepSeek) and half-split (Llama), (B, T) and (T) positions, YaRN.
  c.push_back({"rope", {F({2, 5, 3, 8}), I({2, 5}, 0, 32)}, rope_p(8, true, 1.0, 32)});
  c.push_back({"rope", {F({1, 6, 2, 16}), I({6}, 0, 64)}, rope_p(16, false, 1.0, 64)});
  c.push_back({"rope", {F({2, 4, 2, 16}), I({2, 4}, 0, 512)}, rope_p(16, true, 40.0, 512)});
  c.push_back({"rope", {F({1, 7, 3, 32}), I({7}, 0, 2048)}, rope_p(32, false, 40.0, 2048)});
  c.push_back({"rope", {F({2, 3, 1, 64}), I({3}, 0, 100)}, rope_p(64, true, 40.0, 100)});
  std::map<std::string, int> count;
  for (Case& k : c) k.name = k.op + "_" + std::to_string(count[k.op]++);
  return c;
}

const std::vector<Case>& table() {
  static const std::vector<Case> t = build_cases();
  return t;
}

// ---- running r1 ------------------------------------------------------------------------

Tensor make_input(const Input& in, uint64_t seed) {
  switch (in.kind) {
    case Kind::Normal: return Tensor::randn(in.shape, seed, DType::F32, Device::cpu(), in.stddev);
    case Kind::NonZero: {
      std::vector<float> v = Tensor::rand(in.shape, seed, -1.0, 1.0).to_float_vector();
      for (float& x : v) x = std::copysign(0.5f + 1.5f * std::fabs(x), x);
      return Tensor::from_vector(v, in.shape);
    }
    case Kind::Index: {
      std::vector<int64_t> v = Tensor::randint(in.shape, seed, in.lo, in.hi).to_int_vector();
      std::mt19937_64 rng(seed);
      for (size_t i = 1; in.ignore && i < v.size(); ++i)
        if (rng() % 4 == 0) v[i] = *in.ignore;
      // The first entry is never ignored, also where the ignored value is a class (drawn at
      // random, it can be): a mean over no targets is 0 in r1
      // (CrossEntropy.AllIgnoredIsZeroWithZeroGrad) and NaN in PyTorch, and about 1% of the
      // seeds of the ignore_index 2 case failed on that.
      if (in.ignore && !v.empty() && v[0] == *in.ignore)
        v[0] = *in.ignore == in.lo ? in.lo + 1 : in.lo;
      return Tensor::from_vector(v, in.shape, in.index_dtype);
    }
  }
  return {};
}

struct Result {
  std::string error;           // r1 threw, or torch did
  std::vector<Tensor> inputs;
  std::vector<Tensor> outs, grads;  // grads: one per input, undefined for index inputs
  std::vector<Tensor> ref_outs, ref_grads;
};

// Forward, then backward of sum_j sum(out_j * gout_j) with the gouts as upstream gradients.
void run_r1(const Case& c, uint64_t seed, Result& r, std::vector<Tensor>& gouts) {
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    r.inputs.push_back(make_input(c.inputs[k], seed + 17 * k));
    if (c.inputs[k].kind != Kind::Index) r.inputs.back().set_requires_grad(true);
  }
  clear_tape();
  try {
    r.outs = ops().at(c.op).run(r.inputs, c.params);
    for (size_t j = 0; j < r.outs.size(); ++j)
      gouts.push_back(Tensor::randn(r.outs[j].shape(), seed + 1000 + j));
    if (r.outs.size() == 1) {
      backward(r.outs[0], gouts[0]);
    } else {
      Tensor loss;
      for (size_t j = 0; j < r.outs.size(); ++j) {
        const Tensor s = sum(mul(r.outs[j], gouts[j]));
        loss = loss.defined() ? add(loss, s) : s;
      }
      backward(loss);
    }
    for (const Tensor& t : r.inputs) r.grads.push_back(t.requires_grad() ? t.grad() : Tensor());
  } catch (const std::exception& e) {
    clear_tape();
    r.error = std::string("r1 threw: ") + e.what();
  }
}

std::string temp_dir() {
  std::string t = "/tmp/r1_torch_parity_" + std::to_string(test::run_seed()) + "_XXXXXX";
  R1_CHECK(::mkdtemp(t.data()) != nullptr, "mkdtemp {}", t);
  return t;
}

struct TableRun {
  std::string fatal;  // the python step failed as a whole
  std::vector<Result> results;
};

// Runs the whole table through r1, then once through PyTorch.
TableRun run_all() {
  TableRun run;
  run.results.resize(table().size());
  std::vector<std::pair<std::string, Tensor>> files;
  json spec = {{"cases", json::array()}};
  for (size_t i = 0; i < table().size(); ++i) {
    const Case& c = table()[i];
    Result& r = run.results[i];
    std::vector<Tensor> gouts;
    run_r1(c, test::case_seed(i), r, gouts);
    if (!r.error.empty()) continue;
    for (size_t k = 0; k < r.inputs.size(); ++k)
      files.emplace_back(fmt::format("{}/in/{}", c.name, k), r.inputs[k]);
    for (size_t j = 0; j < gouts.size(); ++j)
      files.emplace_back(fmt::format("{}/gout/{}", c.name, j), gouts[j]);
    spec["cases"].push_back({{"name", c.name}, {"op", c.op}, {"params", c.params},
                             {"n_in", r.inputs.size()}, {"n_out", r.outs.size()}});
  }
  const std::string dir = temp_dir();
  save_safetensors(dir + "/in.safetensors", files);
  std::ofstream(dir + "/spec.json") << spec.dump(1);
  const std::string cmd = fmt::format("'{}' '{}/tests/torch_ref/ops_ref.py' '{}/spec.json' "
                                      "'{}/in.safetensors' '{}/out.safetensors' 2> '{}/stderr.txt'",
                                      test::python(), test::source_dir(), dir, dir, dir, dir);
  const int status = std::system(cmd.c_str());
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (rc != 0) {
    std::ifstream err(dir + "/stderr.txt");
    std::string text((std::istreambuf_iterator<char>(err)), {});
    while (!text.empty() && text.back() == '\n') text.pop_back();
    if (rc == 3) fs::remove_all(dir);  // nothing to debug: the interpreter lacks torch
    run.fatal = rc == 3 ? fmt::format("PyTorch is not importable by {} ({}): run "
                                      "scripts/setup.sh (it installs python3-torch and "
                                      "python3-numpy)",
                                      test::python(), text)
                        : fmt::format("`{}` failed (exit {}), inputs kept in {}:\n{}", cmd, rc,
                                      dir, text);
    return run;
  }
  const SafetensorsFile out = SafetensorsFile::open(dir + "/out.safetensors");
  for (size_t i = 0; i < table().size(); ++i) {
    const Case& c = table()[i];
    Result& r = run.results[i];
    if (!r.error.empty()) continue;
    if (const auto e = out.metadata().find("error/" + c.name); e != out.metadata().end()) {
      r.error = "torch threw: " + e->second;
      continue;
    }
    for (size_t j = 0; j < r.outs.size(); ++j)
      r.ref_outs.push_back(out.get(fmt::format("{}/out/{}", c.name, j)).clone());
    for (size_t k = 0; k < r.inputs.size(); ++k)
      r.ref_grads.push_back(r.grads[k].defined() || c.inputs[k].kind != Kind::Index
                                ? out.get(fmt::format("{}/grad/{}", c.name, k)).clone()
                                : Tensor());
  }
  fs::remove_all(dir);
  return run;
}

const TableRun& the_run() {
  static const TableRun run = run_all();
  return run;
}

// ---- comparing ---------------------------------------------------------------------------

std::string describe(const Case& c) {
  std::string s = c.op + "(";
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    const Input& in = c.inputs[k];
    s += (k ? ", " : "") + shape_str(in.shape) +
         (in.kind == Kind::Index ? std::string(" ") + dtype_name(in.index_dtype) : "");
  }
  return s + ") " + c.params.dump();
}

// The scale a reduction's error is measured against: the same reduction of |x|. A sum's
// rounding error grows with sum |x_i|, and cancellation can leave the result itself near 0
// (seed 448058127 drew a (4, 5) mean of 5.4e-4 from unit-size terms: 1.8e-5 of the result,
// 1e-8 of this scale). 0 for the other ops.
double reduction_scale(const Case& c, const Result& r) {
  if (c.op != "sum" && c.op != "mean") return 0;
  const Tensor& x = r.inputs[0];
  std::vector<double> v = x.to_double_vector();
  for (double& e : v) e = std::fabs(e);
  double s = 0;
  for (const Tensor& t : ops().at(c.op).run({Tensor::from_vector(v, x.shape(), x.dtype())}, c.params))
    for (double e : t.to_double_vector()) s = std::max(s, std::fabs(e));
  return s;
}

// max|got - ref| / max(max|ref|, min_scale) <= tol, naming the worst element.
void expect_match(const std::string& what, const Tensor& got, const Tensor& ref, double tol,
                  double min_scale = 0) {
  ASSERT_TRUE(got.defined()) << what << ": r1 gave no tensor";
  ASSERT_EQ(got.shape(), ref.shape()) << what;
  const std::vector<double> a = got.to_double_vector(), b = ref.to_double_vector();
  double scale = 0, worst = -1;
  size_t at = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  scale = std::max(scale, min_scale);
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    if (!(d <= worst) || std::isnan(d)) worst = std::isnan(d) ? INFINITY : d, at = i;
  }
  if (a.empty()) return;
  const double rel = scale > 0 ? worst / scale : worst;
  if (std::getenv("R1_TEST_VERBOSE")) std::printf("%s: %.3g\n", what.c_str(), rel);
  EXPECT_LE(rel, tol) << what << ": max|r1 - torch| / scale = " << rel << " at element "
                      << at << " (r1 " << a[at] << ", torch " << b[at] << ", scale "
                      << scale << ": max|torch|" << (min_scale > 0 ? " or the reduction of |x|" : "")
                      << ")";
}

class TorchParity : public ::testing::TestWithParam<size_t> {};

TEST_P(TorchParity, ForwardAndInputGrads) {
  const TableRun& run = the_run();
  ASSERT_TRUE(run.fatal.empty()) << run.fatal;
  const Case& c = table()[GetParam()];
  const Result& r = run.results[GetParam()];
  const double tol = ops().at(c.op).tol;
  const std::string name = describe(c) + fmt::format(" [seed {}]", test::run_seed());
  ASSERT_TRUE(r.error.empty()) << name << ": " << r.error;
  ASSERT_EQ(r.outs.size(), r.ref_outs.size()) << name;
  const double out_scale = reduction_scale(c, r);
  for (size_t j = 0; j < r.outs.size(); ++j)
    expect_match(fmt::format("{} out {}", name, j), r.outs[j], r.ref_outs[j], tol, out_scale);
  for (size_t k = 0; k < r.inputs.size(); ++k)
    if (r.ref_grads[k].defined())
      expect_match(fmt::format("{} grad of input {}", name, k), r.grads[k], r.ref_grads[k], tol);
}

INSTANTIATE_TEST_SUITE_P(EveryOp, TorchParity, ::testing::Range<size_t>(0, table().size()),
                         [](const auto& info) { return table()[info.param].name; });

TEST(TorchParityTable, CoversEveryOpOfOpsH) {
  std::set<std::string> used;
  for (const Case& c : table()) used.insert(c.op);
  for (const auto& [op, def] : ops()) EXPECT_TRUE(used.count(op)) << op << " has no case";
}

}  // namespace
}  // namespace r1
