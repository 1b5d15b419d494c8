// RMSNorm forward and backward with the rows streamed into shared memory by the copy engine
// (the 1-d bulk copy, cp.async.bulk, completing on an mbarrier), `stages` rows ahead of the
// threads that reduce them. An A/B variant (R1_ROW_PIPE=1) of norm_act.cu's kernels until an
// H200 run says which is faster.
//
// Why: on the H200 (e5d6f34, N = 16384, D = 7168) the bf16 RMSNorm forward reached 0.49-0.55
// of the copy bandwidth and the backward 0.20-0.46 over every launch shape of the sweep, while
// f32 took 0.85 / 0.67. In those kernels the loads a thread keeps in flight are its registers:
// a row's load, block reduction and store run one after the other, and what an SM has in
// flight is what its resident threads hold. Here the copy engine holds it: every block has
// `stages` rows requested before it reduces the first, and re-requests a stage the moment
// its threads are done with it, so the bytes in flight per SM are stages x row bytes x
// blocks, whatever the reduction and the stores cost (about 100 KB at V3's bf16 rows).
//
// The same bits as norm_act.cu's kernels: the launcher gives the kernel the same threads per
// row, each thread walks its chunks (lane, lane + tpr, ...) in the same order with the same
// arithmetic (rmsnorm_math.cuh), the row's threads combine in the same tree (group_reduce),
// and the backward's dw partials cover the same row blocks (rmsnorm_backward_rows) summed in
// row order. So the switch can never change a result, only its time.
//
// When it applies: rows whose bytes are a multiple of 16 (D % 8 == 0 for bf16, % 4 for f32)
// at 16-byte aligned addresses (cp.async.bulk's rule; the copy engine reads whole rows),
// enough stages (>= 2) in the shared-memory budget, and for the backward at most
// kPipeBwdChunks chunks per thread (its dw partial lives in registers). Otherwise the launcher
// runs norm_act.cu's kernels.
#include "kernels/cuda/norm_pipe.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "kernels/cuda/common/hopper.cuh"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/rmsnorm_math.cuh"

namespace r1::cuda {

namespace {
std::atomic<int> g_pipe_mode{-1};
std::atomic<int64_t> g_pipe_launches[2] = {0, 0};  // forward, backward
}  // namespace

bool row_pipe_enabled() {
  static const bool env = [] {
    const char* e = std::getenv("R1_ROW_PIPE");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  const int m = g_pipe_mode.load(std::memory_order_relaxed);
  return m < 0 ? env : m == 1;
}
void set_row_pipe(int mode) { g_pipe_mode.store(mode, std::memory_order_relaxed); }
int64_t row_pipe_launches(bool backward) {
  return g_pipe_launches[backward ? 1 : 0].load(std::memory_order_relaxed);
}

namespace {

using hopper::bulk_load_1d;
using hopper::fence_barrier_init;
using hopper::fence_proxy_async_smem;
using hopper::mbar_arrive_expect_tx;
using hopper::mbar_init;
using hopper::mbar_wait;

constexpr int kPipeMaxStages = 8;
constexpr int64_t kPipeFwdRows = 32;  // forward rows per block (a pipeline's fill is one row's latency)
constexpr int kPipeBwdChunks = 4;     // the backward's most chunks per thread (dw in registers)
// Shared memory per block: a budget for two blocks per SM first, then one block.
constexpr int64_t kBudgetTwo = 96 * 1024, kBudgetOne = 200 * 1024;

constexpr int64_t round128(int64_t b) { return (b + 127) / 128 * 128; }

// Thread 0: stage s := rows [row, row + 1) of each of the `srcs` sources (1 for the forward:
// x; 2 for the backward: x then dy, at stage + k * part).
template <class T>
__device__ inline void issue_stage(unsigned char* stage, int64_t part, uint64_t* bar,
                                   const T* a, const T* b, int64_t row, int64_t D) {
  const auto bytes = static_cast<uint32_t>(D * int64_t{sizeof(T)});
  mbar_arrive_expect_tx(bar, b ? 2 * bytes : bytes);
  bulk_load_1d(stage, a + row * D, bytes, bar);
  if (b) bulk_load_1d(stage + part, b + row * D, bytes, bar);
}

// The start of a pipelined block: thread 0 initializes the barriers (one per stage, then w's
// at full[stages]), asks for w (after the stages) and the first `stages` of the block's
// `rows` rows (x, and dy at + part when given); the block syncs, so that nobody waits on a
// barrier before it is initialized.
template <class T>
__device__ inline void pipe_start(unsigned char* smem, uint64_t* full, int stages,
                                  int64_t stage_bytes, int64_t part, const T* w, const T* x,
                                  const T* dy, int64_t r0, int rows, int64_t D) {
  if (threadIdx.x == 0) {
    for (int s = 0; s <= stages; ++s) mbar_init(&full[s], 1);
    fence_barrier_init();
    issue_stage<T>(smem + stages * stage_bytes, 0, &full[stages], w, nullptr, 0, D);
    for (int i = 0; i < stages && i < rows; ++i)
      issue_stage<T>(smem + i * stage_bytes, part, &full[i], x, dy, r0 + i, D);
  }
  __syncthreads();
}

// x (N, D), w (D) -> y (N, D), rstd (N). Block b: rows [b rows_per_block, ...), one at a time
// by all tpr = blockDim threads; w sits in shared memory beside the stages.
template <class T>
__global__ void __launch_bounds__(kMaxRowThreads)
    rmsnorm_forward_pipe_kernel(const T* x, const T* w, T* y, float* rstd, int64_t N, int64_t D,
                                float eps, int64_t rows_per_block, int stages,
                                int64_t stage_bytes) {
  constexpr int kV = kVec<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ uint64_t full[kPipeMaxStages + 1];  // the stages', then w's
  __shared__ float red[kMaxRowThreads / 32];
  const int tpr = blockDim.x, lane = threadIdx.x;
  const int64_t r0 = int64_t{blockIdx.x} * rows_per_block;
  const int rows = static_cast<int>(rows_per_block < N - r0 ? rows_per_block : N - r0);
  unsigned char* wbuf = smem + stages * stage_bytes;
  pipe_start<T>(smem, full, stages, stage_bytes, 0, w, x, nullptr, r0, rows, D);
  const int64_t nch = D / kV;
  const uint4* ws = reinterpret_cast<const uint4*>(wbuf);
  mbar_wait(&full[stages], 0);
  for (int i = 0; i < rows; ++i) {
    const int s = i % stages;
    const int64_t n = r0 + i;
    mbar_wait(&full[s], static_cast<uint32_t>((i / stages) & 1));
    const uint4* xs = reinterpret_cast<const uint4*>(smem + s * stage_bytes);
    float ss = 0;
    for (int64_t c = lane; c < nch; c += tpr) {
      const uint4 raw = xs[c];
#pragma unroll
      for (int k = 0; k < kV; ++k) ss = rms::sumsq(ss, chunk_elem<T>(raw, k));
    }
    ss = group_reduce(ss, Add{}, red, tpr);
    const float r = rms::rstd(ss, D, eps);
    if (lane == 0) rstd[n] = r;
    T* yr = y + n * D;
    for (int64_t c = lane; c < nch; c += tpr) {
      const uint4 raw = xs[c], wr = ws[c];
      float f[kV];
#pragma unroll
      for (int k = 0; k < kV; ++k) f[k] = rms::y(chunk_elem<T>(raw, k), r, chunk_elem<T>(wr, k));
      *reinterpret_cast<uint4*>(yr + c * kV) = pack_chunk<T>(f);
    }
    fence_proxy_async_smem();  // this thread's reads of stage s before the copy that refills it
    __syncthreads();           // every thread is done with stage s: it can take the next row
    if (lane == 0 && i + stages < rows)
      issue_stage<T>(smem + s * stage_bytes, 0, &full[s], x, nullptr, r0 + i + stages, D);
  }
}

// x, dy (N, D), w (D), rstd (N) -> dx (N, D), partial (G, D): block b's rows
// [b rows_per_block, ...) in order, each stage x's row then dy's (at stage + part); the dw
// partial of the thread's chunks (lane + j tpr, j < J) in registers, written at the end.
template <class T, int J>
__global__ void __launch_bounds__(kMaxRowThreads)
    rmsnorm_backward_pipe_kernel(const T* x, const T* w, const float* rstd, const T* dy, T* dx,
                                 float* partial, int64_t N, int64_t D, int64_t rows_per_block,
                                 int stages, int64_t stage_bytes) {
  constexpr int kV = kVec<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ uint64_t full[kPipeMaxStages + 1];
  __shared__ float red[kMaxRowThreads / 32];
  const int tpr = blockDim.x, lane = threadIdx.x;
  const int64_t part = stage_bytes / 2;
  const int64_t r0 = int64_t{blockIdx.x} * rows_per_block;
  const int rows = static_cast<int>(rows_per_block < N - r0 ? rows_per_block : N - r0);
  unsigned char* wbuf = smem + stages * stage_bytes;
  pipe_start<T>(smem, full, stages, stage_bytes, part, w, x, dy, r0, rows, D);
  const int64_t nch = D / kV;
  const uint4* ws = reinterpret_cast<const uint4*>(wbuf);
  float acc[J][kV];
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int k = 0; k < kV; ++k) acc[j][k] = 0.0f;
  mbar_wait(&full[stages], 0);
  for (int i = 0; i < rows; ++i) {
    const int s = i % stages;
    const int64_t n = r0 + i;
    const float r = rstd[n];  // issued before the wait: its latency hides behind the row's
    mbar_wait(&full[s], static_cast<uint32_t>((i / stages) & 1));
    const uint4* xs = reinterpret_cast<const uint4*>(smem + s * stage_bytes);
    const uint4* gs = reinterpret_cast<const uint4*>(smem + s * stage_bytes + part);
    float d = 0;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t c = lane + int64_t{j} * tpr;
      if (c >= nch) break;
      const uint4 xr = xs[c], gr = gs[c], wr = ws[c];
#pragma unroll
      for (int k = 0; k < kV; ++k)
        d = rms::dot(d, chunk_elem<T>(wr, k), chunk_elem<T>(gr, k), chunk_elem<T>(xr, k));
    }
    d = group_reduce(d, Add{}, red, tpr);
    const float cf = rms::coef(d, r, D);
    T* dxr = dx + n * D;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t c = lane + int64_t{j} * tpr;
      if (c >= nch) break;
      const uint4 xr = xs[c], gr = gs[c], wr = ws[c];
      float f[kV];
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        const float xv = chunk_elem<T>(xr, k), gv = chunk_elem<T>(gr, k);
        f[k] = rms::dx(r, chunk_elem<T>(wr, k), gv, xv, cf);
        acc[j][k] = rms::dw(acc[j][k], gv, xv, r);
      }
      *reinterpret_cast<uint4*>(dxr + c * kV) = pack_chunk<T>(f);
    }
    fence_proxy_async_smem();
    __syncthreads();
    if (lane == 0 && i + stages < rows)
      issue_stage<T>(smem + s * stage_bytes, part, &full[s], x, dy, r0 + i + stages, D);
  }
  float* pr = partial + int64_t{blockIdx.x} * D;
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int64_t c = lane + int64_t{j} * tpr;
    if (c >= nch) break;
#pragma unroll
    for (int k = 0; k < kV; k += 4)
      *reinterpret_cast<float4*>(pr + c * kV + k) =
          make_float4(acc[j][k], acc[j][k + 1], acc[j][k + 2], acc[j][k + 3]);
  }
}

// Stages of `stage_bytes` (plus `fixed` bytes) that fit a block's budget: two blocks per SM
// if at least two stages fit in kBudgetTwo, else one block; 0 when not even two fit.
struct PipePlan {
  int stages = 0;
  int64_t smem = 0;
};
PipePlan plan_stages(int64_t stage_bytes, int64_t fixed, int optin) {
  const int64_t budgets[] = {std::min<int64_t>(kBudgetTwo, optin),
                             std::min<int64_t>(kBudgetOne, optin)};
  for (const int64_t budget : budgets) {
    const int64_t s = std::min<int64_t>(kPipeMaxStages, (budget - fixed) / stage_bytes);
    if (s >= 2) return {static_cast<int>(s), s * stage_bytes + fixed};
  }
  return {};
}

bool aligned_rows(const void* p, int64_t row_bytes) {
  return row_bytes % 16 == 0 && (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

int optin_smem(int dev) {
  int optin = 0;
  R1_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return optin;
}

}  // namespace

bool rmsnorm_forward_pipe(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                          Tensor& rstd, int tpr) {
  const int64_t N = x.size(0), D = x.size(1);
  const int64_t row_bytes = D * static_cast<int64_t>(dtype_size(x.dtype()));
  if (!row_pipe_enabled() || N == 0 || D == 0 || !aligned_rows(x.data_ptr(), row_bytes) ||
      !aligned_rows(y.data_ptr(), row_bytes) || !aligned_rows(w.data_ptr(), row_bytes))
    return false;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const PipePlan p = plan_stages(round128(row_bytes), round128(row_bytes), optin_smem(dev));
  if (p.stages == 0) return false;
  const cudaStream_t s = current_stream(dev);
  const auto blocks = static_cast<unsigned>((N + kPipeFwdRows - 1) / kPipeFwdRows);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = rmsnorm_forward_pipe_kernel<T>;
    opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), static_cast<int>(p.smem));
    kernel<<<blocks, tpr, p.smem, s>>>(static_cast<const T*>(x.data_ptr()),
                                       static_cast<const T*>(w.data_ptr()),
                                       static_cast<T*>(y.data_ptr()), rstd.data<float>(), N, D,
                                       static_cast<float>(eps), kPipeFwdRows, p.stages,
                                       round128(row_bytes));
    R1_CUDA_CHECK_LAUNCH();
  });
  g_pipe_launches[0].fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool rmsnorm_backward_pipe(const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& partial, int64_t rows,
                           int tpr) {
  const int64_t N = x.size(0), D = x.size(1);
  const int64_t row_bytes = D * static_cast<int64_t>(dtype_size(x.dtype()));
  const int64_t kv = 16 / static_cast<int64_t>(dtype_size(x.dtype()));
  const int64_t per_thread = (D / kv + tpr - 1) / tpr;
  if (!row_pipe_enabled() || N == 0 || D == 0 || per_thread > kPipeBwdChunks ||
      !aligned_rows(x.data_ptr(), row_bytes) || !aligned_rows(dy.data_ptr(), row_bytes) ||
      !aligned_rows(dx.data_ptr(), row_bytes) || !aligned_rows(w.data_ptr(), row_bytes))
    return false;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const int64_t stage_bytes = 2 * round128(row_bytes);
  const PipePlan p = plan_stages(stage_bytes, round128(row_bytes), optin_smem(dev));
  if (p.stages == 0) return false;
  const cudaStream_t s = current_stream(dev);
  const auto blocks = static_cast<unsigned>((N + rows - 1) / rows);
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel) {
      opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), static_cast<int>(p.smem));
      kernel<<<blocks, tpr, p.smem, s>>>(
          static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()),
          rstd.data<float>(), static_cast<const T*>(dy.data_ptr()),
          static_cast<T*>(dx.data_ptr()), partial.data<float>(), N, D, rows, p.stages,
          stage_bytes);
      R1_CUDA_CHECK_LAUNCH();
    };
    if (per_thread <= 1) launch(rmsnorm_backward_pipe_kernel<T, 1>);
    else if (per_thread <= 2) launch(rmsnorm_backward_pipe_kernel<T, 2>);
    else launch(rmsnorm_backward_pipe_kernel<T, 4>);
  });
  g_pipe_launches[1].fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace r1::cuda
