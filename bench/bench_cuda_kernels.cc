// CUDA kernels against the GPU's measured ceilings.
//
//   ./build/bin/bench_cuda_kernels [--benchmark_filter=RmsNorm] [--benchmark_out=r.json
//                                   --benchmark_out_format=json]
//
// Before any case runs, main() measures two ceilings on the device it runs on:
//   copy_gbps     a 2 GiB device-to-device cudaMemcpyAsync (read + write bytes / time, best
//                 of 10): what a memory-bound kernel can hope for;
//   gemm_tflops   cuBLASLt bf16 8192^3 (fp32 accumulation) through the engine's gemm kernel.
// Every memory-bound case reports GB/s (the bytes its contract must move at least once,
// counted by hand below) and frac_copy = GB/s / copy_gbps; GEMM cases report TFLOP/s and
// frac_gemm. Times are CUDA events around `kReps` back-to-back launches on the current
// stream (manual time), after one warm-up launch; no host sync inside the timed region.
// Shapes are the realistic ones of DeepSeek-V3 (hidden 7168, vocab 129280, moe 2048).
// scripts/gpu-check.sh runs this and turns the JSON into bench/results/<gpu>-<date>.md.
//
// Without a CUDA build or device the binary prints why and exits 0 with no cases.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/tensor.h"

#if defined(R1_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda/stream.h"
#include "bench/cuda_data.h"
#include "bench/cuda_timing.h"
#include "kernels/cuda/gemm_bf16_mma.h"
#include "kernels/cuda/gemm_invariant.h"
#endif

namespace r1 {
namespace {

#if defined(R1_HAVE_CUDA)

const Device kGpu = Device::cuda(0);
using bench::dev_randn;
using bench::run_timed;

Tensor dev_randint(const Shape& shape, int64_t lo, int64_t hi, uint64_t seed) {
  return Tensor::randint(shape, seed, lo, hi, DType::I64).to(kGpu);
}

double esize(DType dt) { return static_cast<double>(dtype_size(dt)); }
DType dtype_arg(int64_t a) { return a == 0 ? DType::BF16 : DType::F32; }
std::string dtype_label(DType dt) { return dtype_name(dt); }

// ---- ceilings ----------------------------------------------------------------------------

double measure_copy_gbps() {
  const size_t n = size_t{2} << 30;
  Tensor a = Tensor::empty({static_cast<int64_t>(n)}, DType::U8, kGpu);
  Tensor b = Tensor::empty({static_cast<int64_t>(n)}, DType::U8, kGpu);
  const cudaStream_t s = cuda::current_stream(0);
  cuda::Event start(true), stop(true);
  double best = 1e30;
  for (int i = 0; i < 11; ++i) {
    start.record(s);
    R1_CUDA_CHECK(cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), n, cudaMemcpyDeviceToDevice, s));
    stop.record(s);
    stop.synchronize();
    if (i > 0) best = std::min<double>(best, start.elapsed_ms(stop) / 1e3);
  }
  return 2.0 * static_cast<double>(n) / best / 1e9;
}

double measure_gemm_tflops() {
  const int64_t n = 8192;
  const Tensor a = dev_randn({1, n, n}, DType::BF16, 1), b = dev_randn({1, n, n}, DType::BF16, 2);
  Tensor c = Tensor::empty({1, n, n}, DType::BF16, kGpu);
  const cudaStream_t s = cuda::current_stream(0);
  kernels::gemm()(kGpu, a, b, c, false, true, 1.0, 0.0);
  cuda::Event start(true), stop(true);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    start.record(s);
    for (int r = 0; r < 5; ++r) kernels::gemm()(kGpu, a, b, c, false, true, 1.0, 0.0);
    stop.record(s);
    stop.synchronize();
    best = std::min<double>(best, start.elapsed_ms(stop) / 1e3 / 5);
  }
  return 2.0 * n * n * n / best / 1e12;
}

// ---- basic and elementwise ---------------------------------------------------------------

void BM_Fill(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  Tensor x = Tensor::empty({int64_t{1} << 28}, dt, kGpu);
  st.SetLabel(dtype_label(dt));
  run_timed(st, x.numel() * esize(dt), 0, [&] { kernels::fill()(kGpu, x, 0.5); });
}

void BM_CopyTranspose(benchmark::State& st) {  // (8192, 8192) -> its transpose, bf16
  const Tensor x = dev_randn({8192, 8192}, DType::BF16, 3);
  Tensor y = Tensor::empty({8192, 8192}, DType::BF16, kGpu);
  const Tensor xt = x.transpose(0, 1);
  st.SetLabel("bf16 transpose");
  run_timed(st, 2.0 * x.numel() * 2, 0, [&] { kernels::copy_strided()(kGpu, xt, y); });
}

void BM_CopyConvert(benchmark::State& st) {  // f32 -> bf16, contiguous
  const Tensor x = dev_randn({int64_t{1} << 27}, DType::F32, 4);
  Tensor y = Tensor::empty(x.shape(), DType::BF16, kGpu);
  st.SetLabel("f32->bf16");
  run_timed(st, x.numel() * 6.0, 0, [&] { kernels::copy_strided()(kGpu, x, y); });
}

void BM_AddScaled(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  Tensor y = dev_randn({int64_t{1} << 27}, dt, 5);
  const Tensor x = dev_randn({int64_t{1} << 27}, dt, 6);
  st.SetLabel(dtype_label(dt));
  run_timed(st, 3.0 * x.numel() * esize(dt), 0, [&] { kernels::add_scaled()(kGpu, y, x, 1e-3); });
}

void BM_BinaryAdd(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const bool bcast = st.range(1) != 0;
  const int64_t N = 16384, D = 7168;
  const Tensor a = dev_randn({N, D}, dt, 7);
  const Tensor b = bcast ? dev_randn({D}, dt, 8).view({1, D}).expand({N, D}) : dev_randn({N, D}, dt, 8);
  Tensor out = Tensor::empty({N, D}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + (bcast ? " (N,D)+(D)" : " (N,D)+(N,D)"));
  run_timed(st, (bcast ? 2.0 : 3.0) * N * D * esize(dt), 0,
            [&] { kernels::binary()(kGpu, BinaryOp::Add, a, b, out); });
}

void BM_ReduceSumRows(benchmark::State& st) {  // (N, D) -> (D): a bias gradient
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 16384, D = 7168;
  const Tensor x = dev_randn({1, N, D}, dt, 9);
  Tensor out = Tensor::empty({1, D}, dt, kGpu), none;
  st.SetLabel(dtype_label(dt) + " (N,D)->(D)");
  run_timed(st, N * D * esize(dt), 0,
            [&] { kernels::reduce()(kGpu, ReduceOp::Sum, x, out, none); });
}

void BM_ReduceMaxLastDim(benchmark::State& st) {  // (N, V) -> (N) with argmax: greedy decode
  const int64_t N = 256, V = 129280;
  const Tensor x = dev_randn({N, V, 1}, DType::F32, 10);
  Tensor out = Tensor::empty({N, 1}, DType::F32, kGpu);
  Tensor arg = Tensor::empty({N, 1}, DType::I64, kGpu);
  st.SetLabel("f32 (256,129280) max+argmax");
  run_timed(st, N * V * 4.0, 0, [&] { kernels::reduce()(kGpu, ReduceOp::Max, x, out, arg); });
}

void BM_SumSquares(benchmark::State& st) {
  const Tensor x = dev_randn({int64_t{1} << 28}, DType::F32, 11);
  st.SetLabel("f32 (grad norm)");
  run_timed(st, x.numel() * 4.0, 0, [&] { benchmark::DoNotOptimize(kernels::sum_squares()(kGpu, x)); });
}

// ---- indexing ----------------------------------------------------------------------------

void BM_EmbeddingForward(benchmark::State& st) {
  const int64_t V = 129280, D = 7168, N = 16384;
  const Tensor table = dev_randn({V, D}, DType::BF16, 12);
  const Tensor ids = dev_randint({N}, 0, V, 13);
  Tensor out = Tensor::empty({N, D}, DType::BF16, kGpu);
  st.SetLabel("bf16 V=129280 D=7168 N=16384");
  run_timed(st, 2.0 * N * D * 2, 0, [&] { kernels::embedding_forward()(kGpu, ids, table, out); });
}

void BM_EmbeddingBackward(benchmark::State& st) {  // accumulate into an f32 table gradient
  const int64_t V = 129280, D = 7168, N = 16384;
  const Tensor dout = dev_randn({N, D}, DType::F32, 14);
  const Tensor ids = dev_randint({N}, 0, V, 15);
  Tensor dtable = Tensor::zeros({V, D}, DType::F32, kGpu);
  st.SetLabel("f32 V=129280 D=7168 N=16384");
  // dout read once, each touched table row read and written once.
  run_timed(st, 3.0 * N * D * 4, 0,
            [&] { kernels::embedding_backward()(kGpu, ids, dout, dtable); });
}

void BM_IndexSelect(benchmark::State& st) {  // rows of a (V, D) table: MoE token permute
  const int64_t R = 32768, D = 7168, n = 32768;
  const Tensor x = dev_randn({1, R, D}, DType::BF16, 16);
  const Tensor idx = dev_randint({n}, 0, R, 17);
  Tensor out = Tensor::empty({1, n, D}, DType::BF16, kGpu);
  st.SetLabel("bf16 rows 32768x7168");
  run_timed(st, 2.0 * n * D * 2, 0, [&] { kernels::index_select()(kGpu, x, idx, out); });
}

// ---- model ops ---------------------------------------------------------------------------

void BM_RmsNormForward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 16384, D = 7168;
  const Tensor x = dev_randn({N, D}, dt, 18), w = dev_randn({D}, dt, 19);
  Tensor y = Tensor::empty({N, D}, dt, kGpu), rstd = Tensor::empty({N}, stat_dtype(dt), kGpu);
  st.SetLabel(dtype_label(dt) + " N=16384 D=7168");
  run_timed(st, 2.0 * N * D * esize(dt), 0,
            [&] { kernels::rmsnorm_forward()(kGpu, x, w, 1e-6, y, rstd); });
}

void BM_RmsNormBackward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 16384, D = 7168;
  const Tensor x = dev_randn({N, D}, dt, 20), w = dev_randn({D}, dt, 21);
  const Tensor dy = dev_randn({N, D}, dt, 22);
  Tensor y = Tensor::empty({N, D}, dt, kGpu), rstd = Tensor::empty({N}, stat_dtype(dt), kGpu);
  kernels::rmsnorm_forward()(kGpu, x, w, 1e-6, y, rstd);
  Tensor dx = Tensor::empty({N, D}, dt, kGpu), dw = Tensor::empty({D}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + " N=16384 D=7168");
  run_timed(st, 3.0 * N * D * esize(dt), 0,
            [&] { kernels::rmsnorm_backward()(kGpu, x, w, rstd, dy, dx, dw); });
}

void BM_Rope(benchmark::State& st) {  // MLA's decoupled rope part: (B, T, H, 64)
  const int64_t B = 4, T = 4096, H = 128, D = 64;
  RopeConfig cfg;
  cfg.dim = D;
  const RopeTable table(cfg, T, DType::BF16, kGpu);
  const Tensor x = dev_randn({B, T, H, D}, DType::BF16, 23);
  const Tensor pos = Tensor::arange(T, DType::I64).view({1, T}).expand({B, T}).contiguous().to(kGpu);
  Tensor y = Tensor::empty(x.shape(), DType::BF16, kGpu);
  st.SetLabel("bf16 (4,4096,128,64) interleaved");
  run_timed(st, 2.0 * x.numel() * 2, 0, [&] {
    kernels::rope()(kGpu, x, pos, table.cos, table.sin, true, false, y);
  });
}

void BM_SwigluForward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 16384, F = 18432;
  const Tensor g = dev_randn({N, F}, dt, 24), u = dev_randn({N, F}, dt, 25);
  Tensor out = Tensor::empty({N, F}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + " N=16384 F=18432");
  run_timed(st, 3.0 * N * F * esize(dt), 0, [&] { kernels::swiglu_forward()(kGpu, g, u, out); });
}

void BM_SwigluBackward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 8192, F = 18432;
  const Tensor g = dev_randn({N, F}, dt, 26), u = dev_randn({N, F}, dt, 27);
  const Tensor d = dev_randn({N, F}, dt, 28);
  Tensor dg = Tensor::empty({N, F}, dt, kGpu), du = Tensor::empty({N, F}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + " N=8192 F=18432");
  run_timed(st, 5.0 * N * F * esize(dt), 0,
            [&] { kernels::swiglu_backward()(kGpu, g, u, d, dg, du); });
}

void BM_SoftmaxForward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 4096, V = 32768;
  const Tensor x = dev_randn({N, V}, dt, 29);
  Tensor y = Tensor::empty({N, V}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + " (4096,32768) log");
  run_timed(st, 2.0 * N * V * esize(dt), 0, [&] { kernels::softmax_forward()(kGpu, x, true, y); });
}

void BM_SoftmaxBackward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 4096, V = 32768;
  const Tensor x = dev_randn({N, V}, dt, 30), dy = dev_randn({N, V}, dt, 31);
  Tensor y = Tensor::empty({N, V}, dt, kGpu), dx = Tensor::empty({N, V}, dt, kGpu);
  kernels::softmax_forward()(kGpu, x, true, y);
  st.SetLabel(dtype_label(dt) + " (4096,32768) log");
  run_timed(st, 3.0 * N * V * esize(dt), 0,
            [&] { kernels::softmax_backward()(kGpu, y, dy, true, dx); });
}

void BM_CrossEntropyForward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 4096, V = 129280;
  const Tensor logits = dev_randn({N, V}, dt, 32, 2.0);
  const Tensor tgt = dev_randint({N}, 0, V, 33);
  Tensor loss = Tensor::empty({N}, stat_dtype(dt), kGpu), lse = Tensor::empty({N}, stat_dtype(dt), kGpu);
  st.SetLabel(dtype_label(dt) + " N=4096 V=129280");
  run_timed(st, N * V * esize(dt), 0, [&] {
    kernels::cross_entropy_forward()(kGpu, logits, tgt, -100, loss, lse);
  });
}

void BM_CrossEntropyBackward(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 4096, V = 129280;
  const Tensor logits = dev_randn({N, V}, dt, 34, 2.0);
  const Tensor tgt = dev_randint({N}, 0, V, 35);
  Tensor loss = Tensor::empty({N}, stat_dtype(dt), kGpu), lse = Tensor::empty({N}, stat_dtype(dt), kGpu);
  kernels::cross_entropy_forward()(kGpu, logits, tgt, -100, loss, lse);
  const Tensor dloss = Tensor::full({N}, 1.0 / N, stat_dtype(dt), kGpu);
  Tensor dlogits = Tensor::empty({N, V}, dt, kGpu);
  st.SetLabel(dtype_label(dt) + " N=4096 V=129280");
  run_timed(st, 2.0 * N * V * esize(dt), 0, [&] {
    kernels::cross_entropy_backward()(kGpu, logits, tgt, lse, dloss, -100, dlogits);
  });
}

void BM_AdamW(benchmark::State& st) {  // fp32 master p, m, v; grad in f32 or bf16
  const DType gdt = dtype_arg(st.range(0));
  const int64_t n = int64_t{1} << 27;
  Tensor p = dev_randn({n}, DType::F32, 36), m = dev_randn({n}, DType::F32, 37, 1e-3);
  Tensor v = Tensor::full({n}, 1e-4, DType::F32, kGpu);
  const Tensor g = dev_randn({n}, gdt, 38, 1e-2);
  st.SetLabel(std::string("p,m,v f32, grad ") + dtype_name(gdt));
  int64_t step = 0;
  run_timed(st, n * (6.0 * 4 + esize(gdt)), 0, [&] {
    kernels::adamw_step()(kGpu, p, g, m, v, 1e-4, 0.9, 0.95, 1e-8, 0.1, ++step, 0.5);
  });
}

// ---- fp8 quantization (DeepSeek-V3 block scaling) ------------------------------------------

// Activations: bf16 (M, K) -> e4m3 (M, K) + f32 scales per 1x128 tile.
void BM_QuantizeFp8Rows(benchmark::State& st) {
  const int64_t M = 16384, K = 7168;
  const Tensor x = dev_randn({M, K}, DType::BF16, 43);
  Tensor q = Tensor::empty({M, K}, DType::E4M3, kGpu);
  Tensor sc = Tensor::empty({M, fp8_blocks(K)}, DType::F32, kGpu);
  st.SetLabel("bf16 (16384,7168) -> e4m3, 1x128 scales");
  run_timed(st, M * K * 3.0 + sc.numel() * 4.0, 0,
            [&] { kernels::quantize_fp8_rows()(kGpu, x, q, sc); });
}

// The fused producer of the attention projections' FP8 input: RMSNorm writing y and its
// 1x128 quantization in one pass (against RmsNormForward + QuantizeFp8Rows: x read once, y
// never re-read).
void BM_RmsNormQuantizeFp8(benchmark::State& st) {
  const DType dt = dtype_arg(st.range(0));
  const int64_t N = 16384, D = 7168;
  const Tensor x = dev_randn({N, D}, dt, 18), w = dev_randn({D}, dt, 19);
  Tensor y = Tensor::empty({N, D}, dt, kGpu), rstd = Tensor::empty({N}, stat_dtype(dt), kGpu);
  Tensor q = Tensor::empty({N, D}, DType::E4M3, kGpu);
  Tensor sc = Tensor::empty({N, fp8_blocks(D)}, DType::F32, kGpu);
  st.SetLabel(dtype_label(dt) + " N=16384 D=7168 -> y + e4m3, 1x128 scales");
  run_timed(st, N * D * (2.0 * esize(dt) + 1.0) + sc.numel() * 4.0, 0,
            [&] { kernels::rmsnorm_quantize_fp8()(kGpu, x, w, 1e-6, y, rstd, q, sc); });
}

// The wgrad operand dy^T: bf16 dy (M, N) -> e4m3 (N, M) with 1x128 scales along M, without
// forming dy^T (the transposed quantizer).
void BM_QuantizeFp8RowsTransposed(benchmark::State& st) {
  const int64_t M = 16384, N = 7168;
  const Tensor x = dev_randn({M, N}, DType::BF16, 45);
  Tensor q = Tensor::empty({N, M}, DType::E4M3, kGpu);
  Tensor sc = Tensor::empty({N, fp8_blocks(M)}, DType::F32, kGpu);
  st.SetLabel("bf16 (16384,7168) -> e4m3 (7168,16384), 1x128 scales along M");
  run_timed(st, M * N * 3.0 + sc.numel() * 4.0, 0,
            [&] { kernels::quantize_fp8_rows_transposed()(kGpu, x, q, sc); });
}

// Weights: f32 master (N, K) -> e4m3 (N, K) + f32 scales per 128x128 block.
void BM_QuantizeFp8Blocks(benchmark::State& st) {
  const int64_t N = 7168, K = 16384;
  const Tensor w = dev_randn({N, K}, DType::F32, 44);
  Tensor q = Tensor::empty({N, K}, DType::E4M3, kGpu);
  Tensor sc = Tensor::empty({fp8_blocks(N), fp8_blocks(K)}, DType::F32, kGpu);
  st.SetLabel("f32 (7168,16384) -> e4m3, 128x128 scales");
  run_timed(st, N * K * 5.0 + sc.numel() * 4.0, 0,
            [&] { kernels::quantize_fp8_blocks()(kGpu, w, q, sc); });
}

// ---- GEMM (cuBLASLt today) -----------------------------------------------------------------

// D (M, N) = A (M, K) B (N, K)^T: the linear-layer forward. DeepSeek-V3 shapes.
void BM_GemmBf16(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const Tensor a = dev_randn({1, M, K}, DType::BF16, 39), b = dev_randn({1, N, K}, DType::BF16, 40);
  Tensor c = Tensor::empty({1, M, N}, DType::BF16, kGpu);
  st.SetLabel("bf16 cuBLASLt NT");
  run_timed(st, (M * K + N * K + M * N) * 2.0, 2.0 * M * N * K,
            [&] { kernels::gemm()(kGpu, a, b, c, false, true, 1.0, 0.0); });
}

// The same products through the batch-invariant mma.sync kernel (kernels/cuda/gemm_bf16_mma.h).
void BM_GemmBf16Invariant(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const Tensor a = dev_randn({M, K}, DType::BF16, 39), b = dev_randn({N, K}, DType::BF16, 40);
  Tensor c = Tensor::empty({M, N}, DType::BF16, kGpu);
  st.SetLabel("bf16 mma.sync batch-invariant NT");
  run_timed(st, (M * K + N * K + M * N) * 2.0, 2.0 * M * N * K,
            [&] { cuda::gemm_bf16_nt_invariant(a, b, c, 2); });
}

void BM_GemmF32(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const Tensor a = dev_randn({1, M, K}, DType::F32, 41), b = dev_randn({1, N, K}, DType::F32, 42);
  Tensor c = Tensor::empty({1, M, N}, DType::F32, kGpu);
  st.SetLabel("f32 cuBLASLt NT (no TF32)");
  run_timed(st, (M * K + N * K + M * N) * 4.0, 2.0 * M * N * K,
            [&] { kernels::gemm()(kGpu, a, b, c, false, true, 1.0, 0.0); });
}

// The gemm under batch_invariant() (kernels/cuda/gemm_invariant.h): CUDA cores, one FMA chain
// per element; what invariance costs against cuBLASLt (GemmF32 / GemmBf16 on the same shapes).
// range(0): 0 bf16, 1 f32.
void BM_GemmInvariant(benchmark::State& st) {
  const DType dt = st.range(0) == 0 ? DType::BF16 : DType::F32;
  const int64_t M = st.range(1), N = st.range(2), K = st.range(3);
  const Tensor a = dev_randn({1, M, K}, dt, 45), b = dev_randn({1, N, K}, dt, 46);
  Tensor c = Tensor::empty({1, M, N}, dt, kGpu);
  st.SetLabel(std::string(dtype_name(dt)) + " batch-invariant SIMT NT");
  const double e = static_cast<double>(dtype_size(dt));
  run_timed(st, (M * K + N * K + M * N) * e, 2.0 * M * N * K,
            [&] { cuda::gemm_invariant(a, b, c, false, true, 1.0, 0.0); });
}

void register_all() {
  auto reg = [](const char* name, void (*fn)(benchmark::State&)) {
    // A fixed count (5 x kReps launches after a warm-up) instead of a minimum time: with a
    // minimum time Google Benchmark calls the function once per trial count, redoing the
    // multi-GB setup each time; that setup, not the kernels, was most of the run.
    return benchmark::RegisterBenchmark(name, bench::guarded(fn))->UseManualTime()->Unit(benchmark::kMicrosecond)
        ->Iterations(5);
  };
  reg("Fill", BM_Fill)->Arg(0)->Arg(1);
  reg("CopyTranspose", BM_CopyTranspose);
  reg("CopyConvert", BM_CopyConvert);
  reg("AddScaled", BM_AddScaled)->Arg(0)->Arg(1);
  reg("BinaryAdd", BM_BinaryAdd)->Args({0, 0})->Args({0, 1})->Args({1, 0});
  reg("ReduceSumRows", BM_ReduceSumRows)->Arg(0)->Arg(1);
  reg("ReduceMaxLastDim", BM_ReduceMaxLastDim);
  reg("SumSquares", BM_SumSquares);
  reg("EmbeddingForward", BM_EmbeddingForward);
  reg("EmbeddingBackward", BM_EmbeddingBackward);
  reg("IndexSelect", BM_IndexSelect);
  reg("RmsNormForward", BM_RmsNormForward)->Arg(0)->Arg(1);
  reg("RmsNormBackward", BM_RmsNormBackward)->Arg(0)->Arg(1);
  reg("Rope", BM_Rope);
  reg("SwigluForward", BM_SwigluForward)->Arg(0)->Arg(1);
  reg("SwigluBackward", BM_SwigluBackward)->Arg(0)->Arg(1);
  reg("SoftmaxForward", BM_SoftmaxForward)->Arg(0)->Arg(1);
  reg("SoftmaxBackward", BM_SoftmaxBackward)->Arg(0)->Arg(1);
  reg("CrossEntropyForward", BM_CrossEntropyForward)->Arg(0)->Arg(1);
  reg("CrossEntropyBackward", BM_CrossEntropyBackward)->Arg(0)->Arg(1);
  reg("AdamW", BM_AdamW)->Arg(0)->Arg(1);
  reg("QuantizeFp8Rows", BM_QuantizeFp8Rows);
  reg("RmsNormQuantizeFp8", BM_RmsNormQuantizeFp8)->Arg(0)->Arg(1);
  reg("QuantizeFp8Blocks", BM_QuantizeFp8Blocks);
  reg("QuantizeFp8RowsTransposed", BM_QuantizeFp8RowsTransposed);
  auto* g = reg("GemmBf16", BM_GemmBf16);
  for (int64_t m : {64, 128, 4096})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{2112, 7168}, {24576, 1536}, {32768, 512},
                        {7168, 16384}, {4096, 7168}, {7168, 2048}})
      g->Args({m, n, k});
  auto* gi = reg("GemmBf16Invariant", BM_GemmBf16Invariant);
  for (int64_t m : {64, 128, 4096})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{2112, 7168}, {24576, 1536}, {32768, 512},
                        {7168, 16384}, {4096, 7168}, {7168, 2048}})
      gi->Args({m, n, k});
  reg("GemmF32", BM_GemmF32)->Args({4096, 4096, 4096})->Args({1024, 512, 512});
  reg("GemmInvariant", BM_GemmInvariant)
      ->Args({1, 4096, 4096, 4096})
      ->Args({1, 1024, 512, 512})  // tiny-model shapes (the GRPO path)
      ->Args({0, 4096, 4096, 7168});  // beside GemmBf16/4096/4096/7168
}

#endif  // R1_HAVE_CUDA

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#if defined(R1_HAVE_CUDA)
  if (!r1::device_available(r1::DeviceType::CUDA)) return r1::bench::missing_gpu_status("bench_cuda_kernels");
  cudaDeviceProp prop{};
  R1_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  r1::bench::ceilings().copy_gbps = r1::measure_copy_gbps();
  r1::bench::ceilings().gemm_tflops = r1::measure_gemm_tflops();
  std::printf("device %s: copy ceiling %.0f GB/s, cuBLASLt bf16 8192^3 %.0f TFLOP/s\n",
              prop.name, r1::bench::ceilings().copy_gbps, r1::bench::ceilings().gemm_tflops);
  benchmark::AddCustomContext("gpu", prop.name);
  benchmark::AddCustomContext("copy_gbps", std::to_string(r1::bench::ceilings().copy_gbps));
  benchmark::AddCustomContext("gemm_bf16_tflops",
                              std::to_string(r1::bench::ceilings().gemm_tflops));
  r1::register_all();
  benchmark::RunSpecifiedBenchmarks();
#else
  std::printf("bench_cuda_kernels: built without CUDA; nothing to measure\n");
#endif
  benchmark::Shutdown();
  return 0;
}
