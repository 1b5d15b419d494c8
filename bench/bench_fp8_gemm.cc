// FP8 block-scaled GEMM (DeepSeek-V3 recipe) against cuBLASLt, on DeepSeek-V3's linear-layer
// shapes: d (M, N) bf16 = a (M, K) e4m3 (1x128 scales) @ b (N, K)^T e4m3 (128x128 scales).
//
//   ./build/bin/bench_fp8_gemm [--benchmark_filter=Simple] [--benchmark_out=r.json
//                               --benchmark_out_format=json]
//
// Cases, each over N x K in {2112x7168, 24576x1536, 32768x512, 7168x16384, 4096x7168,
// 7168x2048} and M in {64, 128, 4096}:
//   Fp8Simple          r1's simple CUDA kernel (kernels/cuda/fp8/gemm_fp8_simple.cu): the
//                      oracle, CUDA cores, no tensor cores; the floor to beat.
//   Fp8Wgmma           r1's TMA + wgmma kernel (gemm_fp8_wgmma.cu) at the configuration it
//                      picks (tuned table or default; the label names it).
//   Fp8CublasLtBlock   cuBLASLt with VEC128 / BLK128x128 scales: the same function, the
//                      baseline the fast kernel must match or beat.
//   Fp8CublasLtTensor  cuBLASLt per-tensor FP8: the ceiling without block scaling.
//   Fp8CublasLtBf16    cuBLASLt bf16 on the unquantized operands: what FP8 must beat.
//   Fp8Wgrad*          the weight-gradient GEMM of the same layers (M = out, N = in, K =
//                      4096 tokens), 1D1D (row scales on both operands, as linear_fp8 runs
//                      it) on the mma kernel and on cuBLASLt (VEC128 x VEC128), and the mma
//                      kernel with 128x128 scales on b for the epilogue's cost.
//   Fp8Grouped*        MoE expert GEMMs (E experts x m tokens, contiguous layout): r1's
//                      simple and wgmma grouped kernels in one launch (contiguous; wgmma also
//                      masked) against loops of dense calls (mma.sync, cuBLASLt
//                      block-scaled).
// Before timing, each r1 kernel and each block-scaled cuBLASLt row runs once and its output is
// compared with the simple kernel's (normwise, on the device; counter rel_err_vs_simple): a
// row that computed something else reports the error, not a speed. The per-tensor and bf16
// cuBLASLt rows compute other functions (speed ceilings) and are not compared.
// Each reports TFLOP/s (2 M N K / time) and GB/s (operands, scales and d moved once). Times
// are CUDA events around kReps back-to-back launches on the current stream (manual time)
// after one warm-up launch, as bench/bench_cuda_kernels.cc does. Inputs are quantized once
// on the device (not timed); cuBLASLt's scale layouts are prepared once (not timed).
//
// Without a CUDA build or device the binary prints why and exits 0 with no cases.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/tensor.h"

#if defined(R1_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda/stream.h"
#include "bench/cuda_data.h"
#include "bench/cuda_timing.h"
#include "kernels/cuda/fp8/gemm_fp8_cublaslt.h"
#include "kernels/cuda/fp8/gemm_fp8_mma.h"
#include "kernels/cuda/fp8/gemm_fp8_simple.h"
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"
#endif

namespace r1 {
namespace {

#if defined(R1_HAVE_CUDA)

const Device kGpu = Device::cuda(0);

// bf16 N(0, 1) operands on the device (bench/cuda_data.h).
Tensor dev_randn(int64_t rows, int64_t cols, uint64_t seed) {
  return bench::dev_randn({rows, cols}, DType::BF16, seed);
}

// The quantized operands of one shape, on the device, in r1's and cuBLASLt's scale layouts.
struct Fp8Problem {
  int64_t m = 0, n = 0, k = 0;
  Tensor a_q, a_scales, b_q, b_scales;  // r1 layouts (engine/kernels.h)
  Tensor a_lt, b_lt;                    // cuBLASLt layouts (gemm_fp8_cublaslt.h)
  Tensor a_scale, b_scale;              // per-tensor: 1 float each
  Tensor a_bf16, b_bf16;                // the unquantized operands, (1, M, K) and (1, N, K)
};

Fp8Problem make_problem(int64_t m, int64_t n, int64_t k) {
  Fp8Problem p;
  p.m = m, p.n = n, p.k = k;
  const Tensor a = dev_randn(m, k, 1), b = dev_randn(n, k, 2);
  p.a_bf16 = a.view({1, m, k});
  p.b_bf16 = b.view({1, n, k});
  p.a_q = Tensor::empty({m, k}, DType::E4M3, kGpu);
  p.b_q = Tensor::empty({n, k}, DType::E4M3, kGpu);
  p.a_scales = Tensor::empty({m, fp8_blocks(k)}, DType::F32, kGpu);
  p.b_scales = Tensor::empty({fp8_blocks(n), fp8_blocks(k)}, DType::F32, kGpu);
  kernels::quantize_fp8_rows()(kGpu, a, p.a_q, p.a_scales);
  kernels::quantize_fp8_blocks()(kGpu, b, p.b_q, p.b_scales);
  p.a_lt = Tensor::empty({cuda::cublaslt_vec128_scales_size(m, k)}, DType::F32, kGpu);
  p.b_lt = Tensor::empty({cuda::cublaslt_blk128_scales_size(n, k)}, DType::F32, kGpu);
  cuda::cublaslt_fp8_scales_from_r1(p.a_scales.data<float>(), p.b_scales.data<float>(),
                                    p.a_lt.data<float>(), p.b_lt.data<float>(), m, n, k,
                                    cuda::current_stream(0));
  // Per-tensor: the block-quantized bytes reinterpreted with one scale each. The values
  // differ from a true per-tensor quantization, the work does not.
  p.a_scale = Tensor::full({1}, 1.0 / 448, DType::F32, kGpu);
  p.b_scale = Tensor::full({1}, 1.0 / 448, DType::F32, kGpu);
  synchronize(kGpu);
  return p;
}

// bench::run_timed with this problem's bytes (operands, output, scales) and flops.
void run_timed(benchmark::State& st, const Fp8Problem& p, const std::function<void()>& fn) {
  const double m = static_cast<double>(p.m), n = static_cast<double>(p.n);
  const double k = static_cast<double>(p.k);
  const double bytes = m * k + n * k + 2.0 * m * n +
                       4.0 * (m * static_cast<double>(fp8_blocks(p.k)) +
                              static_cast<double>(p.b_scales.numel()));
  bench::run_timed(st, bytes, 2.0 * m * n * k, fn);
}

std::string shape_label(const Fp8Problem& p) {
  return "M=" + std::to_string(p.m) + " N=" + std::to_string(p.n) + " K=" + std::to_string(p.k);
}

// Runs fn once and compares its output d with `want` (the simple kernel's product of the same
// operands: the CUDA-core oracle, validated on an H200), normwise on the device; a row whose
// kernel computed something else reports the error instead of a speed. tol: 1e-3 for f32
// out, 1e-2 for bf16 (its rounding). The error is kept as a counter.
bool verified(benchmark::State& st, const Tensor& d, const Tensor& want,
              const std::function<void()>& fn) {
  fn();
  const Tensor got = d.contiguous().view(want.shape()).to(DType::F32);
  const Tensor diff = sub(got, want);
  const double num = sum(mul(diff, diff)).item(), den = sum(mul(want, want)).item();
  const double err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const double tol = d.dtype() == DType::F32 ? 1e-3 : 1e-2;
  if (!(err < tol)) {
    st.SkipWithError(("output differs from the simple kernel's: normwise relative error " +
                      std::to_string(err)).c_str());
    return false;
  }
  st.counters["rel_err_vs_simple"] = err;
  return true;
}

// The simple kernel's product of p's operands, f32 (verified's reference).
Tensor simple_product(const Fp8Problem& p) {
  Tensor want = Tensor::empty({p.m, p.n}, DType::F32, kGpu);
  cuda::gemm_fp8_blockscaled_simple(p.a_q, p.a_scales, p.b_q, p.b_scales, want);
  return want;
}

void BM_Fp8Simple(benchmark::State& st) {
  const Fp8Problem p = make_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({p.m, p.n}, DType::BF16, kGpu);
  st.SetLabel("simple (CUDA cores) " + shape_label(p));
  run_timed(st, p, [&] {
    cuda::gemm_fp8_blockscaled_simple(p.a_q, p.a_scales, p.b_q, p.b_scales, d);
  });
}

// The mma.sync kernel with 1 (load, then compute) or 2 (cp.async double buffer) stages.
template <int kStages>
void BM_Fp8Mma(benchmark::State& st) {
  const Fp8Problem p = make_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({p.m, p.n}, DType::BF16, kGpu);
  st.SetLabel("mma.sync stages=" + std::to_string(kStages) + " " + shape_label(p));
  const auto fn = [&] {
    cuda::gemm_fp8_blockscaled_mma(p.a_q, p.a_scales, p.b_q, p.b_scales, d, kStages);
  };
  if (verified(st, d, simple_product(p), fn)) run_timed(st, p, fn);
}

// True (the benchmark skipped with the reason) on a GPU without wgmma (not sm_90).
bool skip_without_wgmma(benchmark::State& st) {
  if (cuda::fp8_wgmma_supported(0)) return false;
  st.SkipWithError("wgmma needs compute capability 9.0");
  return true;
}

// The wgmma/TMA kernel on p with the configuration it picks by itself (tuned table or
// default), writing d of `out` dtype; the label starts with `what`.
void run_wgmma(benchmark::State& st, const Fp8Problem& p, DType out, const std::string& what) {
  if (skip_without_wgmma(st)) return;
  Tensor d = Tensor::empty({p.m, p.n}, out, kGpu);
  const cuda::Fp8WgmmaConfig c = cuda::fp8_wgmma_choose(0, p.m, p.n, p.k);
  st.SetLabel(what + " " + c.name() + " " + shape_label(p));
  const auto fn = [&] {
    cuda::gemm_fp8_blockscaled_wgmma(p.a_q, p.a_scales, p.b_q, p.b_scales, d, &c);
  };
  if (verified(st, d, simple_product(p), fn)) run_timed(st, p, fn);
}

void BM_Fp8Wgmma(benchmark::State& st) {
  run_wgmma(st, make_problem(st.range(0), st.range(1), st.range(2)), DType::BF16, "wgmma");
}

void BM_Fp8CublasLtBlock(benchmark::State& st) {
  const Fp8Problem p = make_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({p.m, p.n}, DType::BF16, kGpu);
  st.SetLabel("cuBLASLt VEC128xBLK128x128 " + shape_label(p));
  const auto fn = [&] {
    cuda::cublaslt_gemm_fp8_blockscaled(p.a_q.data_ptr(), p.a_lt.data<float>(), p.b_q.data_ptr(),
                                        p.b_lt.data<float>(), d.data_ptr(), DType::BF16, p.m,
                                        p.n, p.k, cuda::current_stream(0));
  };
  if (verified(st, d, simple_product(p), fn)) run_timed(st, p, fn);
}

// cuBLASLt bf16 on the same shapes (the unquantized operands): what FP8 is meant to beat.
void BM_Fp8CublasLtBf16(benchmark::State& st) {
  const Fp8Problem p = make_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({1, p.m, p.n}, DType::BF16, kGpu);
  st.SetLabel("cuBLASLt bf16 " + shape_label(p));
  const double m = static_cast<double>(p.m), n = static_cast<double>(p.n);
  const double k = static_cast<double>(p.k);
  bench::run_timed(st, 2.0 * (m * k + n * k + m * n), 2.0 * m * n * k, [&] {
    kernels::gemm()(kGpu, p.a_bf16, p.b_bf16, d, false, true, 1.0, 0.0);
  });
}

void BM_Fp8CublasLtTensor(benchmark::State& st) {
  const Fp8Problem p = make_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({p.m, p.n}, DType::BF16, kGpu);
  st.SetLabel("cuBLASLt per-tensor " + shape_label(p));
  run_timed(st, p, [&] {
    cuda::cublaslt_gemm_fp8_tensorwise(p.a_q.data_ptr(), p.a_scale.data<float>(),
                                       p.b_q.data_ptr(), p.b_scale.data<float>(), d.data_ptr(),
                                       DType::BF16, p.m, p.n, p.k, cuda::current_stream(0));
  });
}

// ---- wgrad (1D1D): dw (M = out, N = in) = dy^T (M, K = tokens) x^T (N, K)^T ----------------
// Both operands are activations quantized per 1x128 tile along the tokens (engine/ops_fp8.h),
// so b's scales are per row (N, KB). The 2D rows are the same GEMM with 128x128 block scales
// on b (the form linear_fp8 used before): the price of a per-column scale in the epilogue.

Fp8Problem make_wgrad_problem(int64_t m, int64_t n, int64_t k) {
  Fp8Problem p;
  p.m = m, p.n = n, p.k = k;
  const Tensor a = dev_randn(m, k, 3), b = dev_randn(n, k, 4);
  p.a_q = Tensor::empty({m, k}, DType::E4M3, kGpu);
  p.b_q = Tensor::empty({n, k}, DType::E4M3, kGpu);
  p.a_scales = Tensor::empty({m, fp8_blocks(k)}, DType::F32, kGpu);
  p.b_scales = Tensor::empty({n, fp8_blocks(k)}, DType::F32, kGpu);
  kernels::quantize_fp8_rows()(kGpu, a, p.a_q, p.a_scales);
  kernels::quantize_fp8_rows()(kGpu, b, p.b_q, p.b_scales);
  p.a_lt = Tensor::empty({cuda::cublaslt_vec128_scales_size(m, k)}, DType::F32, kGpu);
  p.b_lt = Tensor::empty({cuda::cublaslt_vec128_scales_size(n, k)}, DType::F32, kGpu);
  const cudaStream_t s = cuda::current_stream(0);
  cuda::cublaslt_vec128_scales_from_r1(p.a_scales.data<float>(), p.a_lt.data<float>(), m, k, s);
  cuda::cublaslt_vec128_scales_from_r1(p.b_scales.data<float>(), p.b_lt.data<float>(), n, k, s);
  synchronize(kGpu);
  return p;
}

// kRows: b's 1x128 row scales (1D1D, as linear_fp8 runs wgrad); else 128x128 block scales
// on the same b (the price of the per-column scale in the epilogue).
template <bool kRows>
void BM_Fp8WgradMma(benchmark::State& st) {
  Fp8Problem p = make_wgrad_problem(st.range(0), st.range(1), st.range(2));
  if (!kRows)
    p.b_scales = Tensor::full({fp8_blocks(p.n), fp8_blocks(p.k)}, 1.0 / 448, DType::F32, kGpu);
  Tensor d = Tensor::empty({p.m, p.n}, DType::F32, kGpu);
  st.SetLabel(std::string("mma.sync ") + (kRows ? "1D1D" : "2D (128x128 b scales)") +
              " stages=2 " + shape_label(p));
  const auto fn = [&] { cuda::gemm_fp8_blockscaled_mma(p.a_q, p.a_scales, p.b_q, p.b_scales, d, 2); };
  if (verified(st, d, simple_product(p), fn)) run_timed(st, p, fn);
}

void BM_Fp8Wgrad1D1DWgmma(benchmark::State& st) {
  run_wgmma(st, make_wgrad_problem(st.range(0), st.range(1), st.range(2)), DType::F32,
            "wgmma 1D1D");
}

void BM_Fp8Wgrad1D1DCublasLt(benchmark::State& st) {
  const Fp8Problem p = make_wgrad_problem(st.range(0), st.range(1), st.range(2));
  Tensor d = Tensor::empty({p.m, p.n}, DType::F32, kGpu);
  st.SetLabel("cuBLASLt VEC128xVEC128 " + shape_label(p));
  const auto fn = [&] {
    cuda::cublaslt_gemm_fp8_1d1d(p.a_q.data_ptr(), p.a_lt.data<float>(), p.b_q.data_ptr(),
                                 p.b_lt.data<float>(), d.data_ptr(), DType::F32, p.m, p.n, p.k,
                                 cuda::current_stream(0));
  };
  if (verified(st, d, simple_product(p), fn)) run_timed(st, p, fn);
}

// ---- grouped (MoE experts): E experts x m tokens each, N x K per expert ---------------------

// The contiguous layout's operands: A (E m, K) rows by expert, B (E, N, K) (N a multiple of
// 128, so the (E N, K) matrix's 128x128 blocks are each expert's), and per-expert cuBLASLt
// scale layouts for the loop-of-cuBLASLt baseline.
struct GroupedProblem {
  int64_t e = 0, m = 0, n = 0, k = 0;
  Tensor a_q, a_scales, b_q, b_scales, offsets;
  std::vector<Tensor> a_lt, b_lt;
};

GroupedProblem make_grouped(int64_t e, int64_t m, int64_t n, int64_t k) {
  GroupedProblem p;
  p.e = e, p.m = m, p.n = n, p.k = k;
  const Tensor a = dev_randn(e * m, k, 3), b = dev_randn(e * n, k, 4);
  p.a_q = Tensor::empty({e * m, k}, DType::E4M3, kGpu);
  p.a_scales = Tensor::empty({e * m, fp8_blocks(k)}, DType::F32, kGpu);
  Tensor bq = Tensor::empty({e * n, k}, DType::E4M3, kGpu);
  Tensor bs = Tensor::empty({e * n / kFp8Block, fp8_blocks(k)}, DType::F32, kGpu);
  kernels::quantize_fp8_rows()(kGpu, a, p.a_q, p.a_scales);
  kernels::quantize_fp8_blocks()(kGpu, b, bq, bs);
  p.b_q = bq.view({e, n, k});
  p.b_scales = bs.view({e, n / kFp8Block, fp8_blocks(k)});
  std::vector<int64_t> off;
  for (int64_t i = 0; i <= e; ++i) off.push_back(i * m);
  p.offsets = Tensor::from_vector(off, {e + 1}).to(kGpu);
  for (int64_t i = 0; i < e; ++i) {
    p.a_lt.push_back(Tensor::empty({cuda::cublaslt_vec128_scales_size(m, k)}, DType::F32, kGpu));
    p.b_lt.push_back(Tensor::empty({cuda::cublaslt_blk128_scales_size(n, k)}, DType::F32, kGpu));
    cuda::cublaslt_fp8_scales_from_r1(p.a_scales.narrow(0, i * m, m).data<float>(),
                                      p.b_scales.select(0, i).data<float>(),
                                      p.a_lt.back().data<float>(), p.b_lt.back().data<float>(),
                                      m, n, k, cuda::current_stream(0));
  }
  synchronize(kGpu);
  return p;
}

// Times fn after checking its output d against the simple grouped kernel's (verified above),
// unless check is false (the simple kernel itself).
void run_grouped(benchmark::State& st, const GroupedProblem& p, const std::string& what,
                 const Tensor& d, const std::function<void()>& fn, bool check = true) {
  const double E = static_cast<double>(p.e), m = static_cast<double>(p.m);
  const double n = static_cast<double>(p.n), k = static_cast<double>(p.k);
  const double bytes = E * (m * k + n * k + 2.0 * m * n);
  st.SetLabel(what + " E=" + std::to_string(p.e) + " m=" + std::to_string(p.m) + " N=" +
              std::to_string(p.n) + " K=" + std::to_string(p.k));
  if (check) {
    Tensor want = Tensor::empty({p.e * p.m, p.n}, DType::F32, kGpu);
    cuda::gemm_fp8_grouped_contiguous_simple(p.a_q, p.a_scales, p.b_q, p.b_scales, p.offsets,
                                             want);
    if (!verified(st, d, want, fn)) return;
  }
  bench::run_timed(st, bytes, 2.0 * E * m * n * k, fn);
}

// One launch for all experts (the simple tile: the grouped oracle).
void BM_Fp8GroupedSimple(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  Tensor d = Tensor::empty({p.e * p.m, p.n}, DType::BF16, kGpu);
  run_grouped(st, p, "grouped simple, one launch", d, [&] {
    cuda::gemm_fp8_grouped_contiguous_simple(p.a_q, p.a_scales, p.b_q, p.b_scales, p.offsets, d);
  }, /*check=*/false);
}

// The mma.sync tile, one launch for all experts (contiguous layout).
void BM_Fp8GroupedMma(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  Tensor d = Tensor::empty({p.e * p.m, p.n}, DType::BF16, kGpu);
  run_grouped(st, p, "grouped mma.sync, one launch", d, [&] {
    cuda::gemm_fp8_grouped_contiguous_mma(p.a_q, p.a_scales, p.b_q, p.b_scales, p.offsets, d);
  });
}

// The grouped wgmma kernel, one launch: contiguous layout (offsets), and masked (each expert
// a slot of m rows, all full: the same work, the decode layout's indexing).
void BM_Fp8GroupedWgmma(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  if (skip_without_wgmma(st)) return;
  Tensor d = Tensor::empty({p.e * p.m, p.n}, DType::BF16, kGpu);
  const cuda::Fp8WgmmaConfig c = cuda::fp8_wgmma_choose(0, p.m, p.n, p.k);
  run_grouped(st, p, "grouped wgmma " + c.name() + ", one launch", d, [&] {
    cuda::gemm_fp8_grouped_contiguous_wgmma(p.a_q, p.a_scales, p.b_q, p.b_scales, p.offsets, d,
                                            &c);
  });
}

void BM_Fp8GroupedWgmmaMasked(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  if (skip_without_wgmma(st)) return;
  Tensor d = Tensor::empty({p.e, p.m, p.n}, DType::BF16, kGpu);
  const Tensor counts = Tensor::full({p.e}, static_cast<double>(p.m), DType::I32, kGpu);
  const Tensor aq = p.a_q.view({p.e, p.m, p.k});
  const Tensor as = p.a_scales.view({p.e, p.m, fp8_blocks(p.k)});
  const cuda::Fp8WgmmaConfig c = cuda::fp8_wgmma_choose(0, p.m, p.n, p.k);
  run_grouped(st, p, "grouped wgmma masked " + c.name() + ", one launch", d, [&] {
    cuda::gemm_fp8_grouped_masked_wgmma(aq, as, p.b_q, p.b_scales, counts, d, &c);
  });
}

// A loop of dense calls, one per expert: the mma.sync kernel, the wgmma kernel (its tuned or
// default tile per call: what the grouped kernel's one launch saves against r1's own fastest
// dense kernel), and cuBLASLt block-scaled (the baselines a grouped kernel must beat; cuBLASLt
// has no grouped FP8 path with these scales). dense(a_q, a_scales, b_q, b_scales, d) per expert.
template <class Dense>
void run_dense_loop(benchmark::State& st, const GroupedProblem& p, const std::string& what,
                    Dense dense) {
  Tensor d = Tensor::empty({p.e * p.m, p.n}, DType::BF16, kGpu);
  run_grouped(st, p, what, d, [&] {
    for (int64_t i = 0; i < p.e; ++i) {
      Tensor di = d.narrow(0, i * p.m, p.m);
      dense(p.a_q.narrow(0, i * p.m, p.m), p.a_scales.narrow(0, i * p.m, p.m),
            p.b_q.select(0, i), p.b_scales.select(0, i), di);
    }
  });
}

void BM_Fp8GroupedLoopMma(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  run_dense_loop(st, p, "loop of mma.sync",
                 [](const Tensor& a, const Tensor& as, const Tensor& b, const Tensor& bs,
                    Tensor& d) { cuda::gemm_fp8_blockscaled_mma(a, as, b, bs, d, 2); });
}

void BM_Fp8GroupedLoopWgmma(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  if (skip_without_wgmma(st)) return;
  run_dense_loop(st, p, "loop of wgmma",
                 [](const Tensor& a, const Tensor& as, const Tensor& b, const Tensor& bs,
                    Tensor& d) { cuda::gemm_fp8_blockscaled_wgmma(a, as, b, bs, d); });
}

void BM_Fp8GroupedLoopCublasLt(benchmark::State& st) {
  const GroupedProblem p = make_grouped(st.range(0), st.range(1), st.range(2), st.range(3));
  Tensor d = Tensor::empty({p.e * p.m, p.n}, DType::BF16, kGpu);
  run_grouped(st, p, "loop of cuBLASLt block-scaled", d, [&] {
    for (int64_t i = 0; i < p.e; ++i)
      cuda::cublaslt_gemm_fp8_blockscaled(
          p.a_q.narrow(0, i * p.m, p.m).data_ptr(), p.a_lt[static_cast<size_t>(i)].data<float>(),
          p.b_q.select(0, i).data_ptr(), p.b_lt[static_cast<size_t>(i)].data<float>(),
          d.narrow(0, i * p.m, p.m).data_ptr(), DType::BF16, p.m, p.n, p.k,
          cuda::current_stream(0));
  });
}

void register_all() {
  const std::pair<int64_t, int64_t> nk[] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                            {7168, 16384}, {4096, 7168}, {7168, 2048}};
  auto reg = [&](const char* name, void (*fn)(benchmark::State&)) {
    auto* b = benchmark::RegisterBenchmark(name, bench::guarded(fn))->UseManualTime()->Unit(
        benchmark::kMicrosecond)->Iterations(3);  // fixed: see bench_cuda_kernels.cc
    for (int64_t m : {64, 128, 4096})
      for (auto [n, k] : nk) b->Args({m, n, k});
  };
  reg("Fp8Simple", BM_Fp8Simple);
  reg("Fp8Mma1", BM_Fp8Mma<1>);
  reg("Fp8Mma2", BM_Fp8Mma<2>);
  reg("Fp8Wgmma", BM_Fp8Wgmma);
  reg("Fp8CublasLtBlock", BM_Fp8CublasLtBlock);
  reg("Fp8CublasLtTensor", BM_Fp8CublasLtTensor);
  reg("Fp8CublasLtBf16", BM_Fp8CublasLtBf16);
  // wgrad of the same layers: M = out features, N = in features, K = 4096 tokens; f32 dw.
  using Fn = void (*)(benchmark::State&);
  const std::pair<const char*, Fn> wgrad_cases[] = {
      {"Fp8Wgrad1D1DMma", BM_Fp8WgradMma<true>},
      {"Fp8Wgrad2DMma", BM_Fp8WgradMma<false>},
      {"Fp8Wgrad1D1DWgmma", BM_Fp8Wgrad1D1DWgmma},
      {"Fp8Wgrad1D1DCublasLt", BM_Fp8Wgrad1D1DCublasLt}};
  for (auto [name, fn] : wgrad_cases) {
    auto* b = benchmark::RegisterBenchmark(name, bench::guarded(fn))->UseManualTime()->Unit(
        benchmark::kMicrosecond)->Iterations(3);
    for (auto [n, k] : nk) b->Args({n, k, 4096});
  }
  // Grouped: V3's expert GEMMs (gate+up fused: N 4096, K 7168; down: N 7168, K 2048) for
  // 4-32 experts of 128-8192 tokens each.
  const int64_t grouped[][4] = {{4, 8192, 4096, 7168}, {8, 1024, 4096, 7168},
                                {32, 128, 4096, 7168}, {8, 1024, 7168, 2048},
                                {32, 256, 7168, 2048}};
  const std::pair<const char*, Fn> grouped_cases[] = {
      {"Fp8GroupedSimple", BM_Fp8GroupedSimple},
      {"Fp8GroupedMma", BM_Fp8GroupedMma},
      {"Fp8GroupedWgmma", BM_Fp8GroupedWgmma},
      {"Fp8GroupedWgmmaMasked", BM_Fp8GroupedWgmmaMasked},
      {"Fp8GroupedLoopMma", BM_Fp8GroupedLoopMma},
      {"Fp8GroupedLoopWgmma", BM_Fp8GroupedLoopWgmma},
      {"Fp8GroupedLoopCublasLt", BM_Fp8GroupedLoopCublasLt}};
  for (auto [name, fn] : grouped_cases) {
    auto* b = benchmark::RegisterBenchmark(name, bench::guarded(fn))->UseManualTime()->Unit(
        benchmark::kMicrosecond)->Iterations(3);
    for (const auto& g : grouped) b->Args({g[0], g[1], g[2], g[3]});
  }
}

#endif  // R1_HAVE_CUDA

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#if defined(R1_HAVE_CUDA)
  if (!r1::device_available(r1::DeviceType::CUDA)) return r1::bench::missing_gpu_status("bench_fp8_gemm");
  cudaDeviceProp prop{};
  R1_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  benchmark::AddCustomContext("gpu", prop.name);
  r1::register_all();
  benchmark::RunSpecifiedBenchmarks();
#else
  std::printf("bench_fp8_gemm: built without CUDA; nothing to measure\n");
#endif
  benchmark::Shutdown();
  return 0;
}
