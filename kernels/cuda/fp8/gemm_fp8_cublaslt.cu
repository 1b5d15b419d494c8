// cuBLASLt FP8 GEMM baselines (block-scaled and per-tensor); see gemm_fp8_cublaslt.h.
//
// Row-major r1 to column-major cuBLASLt, as kernels/cuda/gemm_cublaslt.cu explains: a buffer
// holding a row-major (r, c) matrix is cuBLASLt's column-major (c, r) matrix, so for
// d (M, N) = a (M, K) b (N, K)^T cuBLASLt computes d^T (N, M) = b a^T with
//   cuBLASLt A = r1's b: layout (K, N) ld K, OP_T  -> op(A) = b       (N, K)
//   cuBLASLt B = r1's a: layout (K, M) ld K, OP_N  -> op(B) = a^T     (K, M)
//   cuBLASLt C = D     : layout (N, M) ld N        -> d row-major     (M, N)
// which is the "TN" form FP8 requires. So the 128x128 block scales (r1's b) go on cuBLASLt's
// A and the 1x128 scales (r1's a) on its B: the pairing PyTorch's _scaled_mm uses for the
// DeepSeek recipe (its 1x128 mat_a and 128x128 mat_b swap into cuBLASLt's B and A the same
// way). Both layouts are in the header.
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>

#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/error.h"
#include "kernels/cuda/cublaslt_check.h"
#include "kernels/cuda/fp8/gemm_fp8_cublaslt.h"

namespace r1::cuda {
namespace {

constexpr int64_t kBlock = 128;  // the scaling block edge of both modes
// NVIDIA's recommended cuBLASLt workspace on Hopper (as kernels/cuda/gemm_cublaslt.cu).
constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr uint32_t kMaxAlignment = 256;
constexpr size_t kMaxPlans = 1024;  // cleared when reached; a benchmark sees a few dozen

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

uint32_t alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  if (v == 0) return kMaxAlignment;
  return static_cast<uint32_t>(std::min<uintptr_t>(kMaxAlignment, v & (~v + 1)));
}

// Block: VEC128 x BLK128x128 (fprop, dgrad); Vec1D1D: VEC128 on both (wgrad); Tensor: one
// scale per operand.
enum class Scaling : int { Block, Vec1D1D, Tensor };

// What a plan (descriptors + algorithm) depends on. Scale pointers are set per call.
struct PlanKey {
  int device;
  Scaling scaling;
  DType out;
  int64_t m, n, k;
  uint32_t align_a, align_b, align_d;
  auto operator<=>(const PlanKey&) const = default;
};

template <class T, auto kDestroy>
struct LtDeleter {
  void operator()(T p) const { (void)kDestroy(p); }  // frees host memory; nothing to report
};
template <class T, auto kDestroy>
using LtPtr = std::unique_ptr<std::remove_pointer_t<T>, LtDeleter<T, kDestroy>>;
using MatmulDesc = LtPtr<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = LtPtr<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = LtPtr<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

struct Plan {
  MatmulDesc desc;
  MatrixLayout a, b, d;  // cuBLASLt's A (r1's b), B (r1's a), C = D
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

MatrixLayout make_layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t l = nullptr;
  R1_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&l, t, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  return MatrixLayout(l);
}

template <class V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& v) {
  R1_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof(v)));
}

// cuBLASLt's A scales are r1's b scales and its B scales r1's a scales (file comment).
void set_scale_pointers(cublasLtMatmulDesc_t desc, const float* a_scale, const float* b_scale) {
  set_desc(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(b_scale));
  set_desc(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a_scale));
}

const char* scaling_name(Scaling s) {
  return s == Scaling::Block     ? "block-scaled (VEC128 x BLK128x128)"
         : s == Scaling::Vec1D1D ? "block-scaled 1D1D (VEC128 x VEC128)"
                                 : "per-tensor";
}

std::unique_ptr<Plan> make_plan(cublasLtHandle_t h, const PlanKey& key, const float* a_scale,
                                const float* b_scale) {
  auto p = std::make_unique<Plan>();
  cublasLtMatmulDesc_t desc = nullptr;
  R1_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  p->desc.reset(desc);
  set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  if (key.scaling != Scaling::Tensor) {
    set_desc(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
             static_cast<int32_t>(key.scaling == Scaling::Block
                                      ? CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
                                      : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F));
    set_desc(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
             static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F));
  }
  set_scale_pointers(desc, a_scale, b_scale);
  const cudaDataType_t out_t = key.out == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  p->a = make_layout(CUDA_R_8F_E4M3, key.k, key.n, key.k);
  p->b = make_layout(CUDA_R_8F_E4M3, key.k, key.m, key.k);
  p->d = make_layout(out_t, key.n, key.m, key.n);

  cublasLtMatmulPreference_t pref_raw = nullptr;
  R1_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref_raw));
  Preference pref(pref_raw);
  const uint64_t ws = kWorkspaceBytes;
  R1_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
  for (const auto& [attr, bytes] : aligns)
    R1_CUBLASLT_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &bytes, sizeof(bytes)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      h, desc, p->a.get(), p->b.get(), p->d.get(), p->d.get(), pref.get(), 1, &result, &found);
  R1_CHECK(st != CUBLAS_STATUS_NOT_SUPPORTED && (st != CUBLAS_STATUS_SUCCESS || found > 0),
           "cuBLASLt FP8 {}: no algorithm for M {} N {} K {} out {} (alignment a {} b {} d {}; "
           "cuBLASLt status {})",
           scaling_name(key.scaling), key.m, key.n, key.k, dtype_name(key.out), key.align_a,
           key.align_b, key.align_d, cublasLtGetStatusName(st));
  R1_CUBLASLT_CHECK(st);
  p->algo = result.algo;
  p->workspace_bytes = result.workspaceSize;
  return p;
}

// A kWorkspaceBytes block from the caching allocator on `stream` (none when the algorithm
// needs none), returned once the matmul is queued: stream order keeps the block's next user
// behind it.
class Workspace {
 public:
  Workspace(size_t needed, int device, cudaStream_t stream) {
    if (needed > 0) p_ = CachingAllocator::instance().allocate(kWorkspaceBytes, device, stream);
  }
  ~Workspace() {
    if (p_) CachingAllocator::instance().deallocate(p_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* ptr() const { return p_; }
  size_t bytes() const { return p_ ? kWorkspaceBytes : 0; }

 private:
  void* p_ = nullptr;
};

// The process's FP8 cuBLASLt state: a handle per device and the plans. Never destroyed (as
// the caching allocator), thread-safe (one mutex, held while a matmul is enqueued, because
// the scale pointers live in the shared descriptor).
class Fp8LtContext {
 public:
  static Fp8LtContext& instance() {
    static Fp8LtContext* ctx = new Fp8LtContext;
    return *ctx;
  }

  void run(const PlanKey& key, const void* a_q, const float* a_scale, const void* b_q,
           const float* b_scale, void* d, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    const cublasLtHandle_t h = handle_locked(key.device);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      if (plans_.size() >= kMaxPlans) plans_.clear();
      it = plans_.emplace(key, make_plan(h, key, a_scale, b_scale)).first;
    }
    const Plan& p = *it->second;
    set_scale_pointers(p.desc.get(), a_scale, b_scale);
    const Workspace ws(p.workspace_bytes, key.device, stream);
    const float alpha = 1.0f, beta = 0.0f;  // beta = 0: C (= D) is not read
    R1_CUBLASLT_CHECK(cublasLtMatmul(h, p.desc.get(), &alpha, b_q, p.a.get(), a_q, p.b.get(),
                                     &beta, d, p.d.get(), d, p.d.get(), &p.algo, ws.ptr(),
                                     ws.bytes(), stream));
  }

 private:
  Fp8LtContext() = default;

  cublasLtHandle_t handle_locked(int device) {
    R1_CHECK(device >= 0 && device < kMaxDevices, "cuBLASLt FP8: device {} out of range",
             device);
    if (!handles_[static_cast<size_t>(device)]) {
      DeviceGuard g(device);
      R1_CUBLASLT_CHECK(cublasLtCreate(&handles_[static_cast<size_t>(device)]));
    }
    return handles_[static_cast<size_t>(device)];
  }

  std::mutex mu_;
  std::array<cublasLtHandle_t, kMaxDevices> handles_{};
  std::map<PlanKey, std::unique_ptr<Plan>> plans_;
};

void run_fp8(Scaling scaling, const void* a_q, const float* a_scale, const void* b_q,
             const float* b_scale, void* d, DType out, int64_t m, int64_t n, int64_t k,
             cudaStream_t stream) {
  R1_CHECK(out == DType::BF16 || out == DType::F32, "cuBLASLt FP8 {}: out must be bf16 or "
           "f32, got {}", scaling_name(scaling), dtype_name(out));
  R1_CHECK(m >= 0 && n >= 0 && k > 0 && k % 16 == 0,
           "cuBLASLt FP8 {}: M {} N {} K {} (K must be a positive multiple of 16: FP8 leading "
           "dimensions are multiples of 16 bytes)", scaling_name(scaling), m, n, k);
  // cuBLASLt's m is our N (d is N x M to it): FP8 wants its rows of C/D 16-byte multiples.
  R1_CHECK(n * static_cast<int64_t>(dtype_size(out)) % 16 == 0,
           "cuBLASLt FP8 {}: N {} with {} output: N x {} bytes is not a multiple of 16 (FP8 "
           "GEMMs need 16-byte output rows; N a multiple of {})", scaling_name(scaling), n,
           dtype_name(out), dtype_size(out), 16 / dtype_size(out));
  if (m == 0 || n == 0) return;
  int dev = 0;
  R1_CUDA_CHECK(cudaGetDevice(&dev));
  const PlanKey key{dev, scaling, out, m, n, k, alignment(a_q), alignment(b_q), alignment(d)};
  Fp8LtContext::instance().run(key, a_q, a_scale, b_q, b_scale, d, stream);
}

// a_s (m, kb) -> a_lt[kb_i * m + r]; b_s (nb, kb) -> b_lt[nb_i * kb_pad + kb_i], pad = 0.
__global__ void scales_to_lt_kernel(const float* a_s, const float* b_s, float* a_lt,
                                    float* b_lt, int64_t m, int64_t nb, int64_t kb,
                                    int64_t kb_pad) {
  const int64_t a_items = m * kb, total = a_items + nb * kb_pad;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (i < a_items) {
      const int64_t kb_i = i / m, r = i - kb_i * m;
      a_lt[i] = a_s[r * kb + kb_i];
    } else {
      const int64_t j = i - a_items, nb_i = j / kb_pad, kb_i = j - nb_i * kb_pad;
      b_lt[j] = kb_i < kb ? b_s[nb_i * kb + kb_i] : 0.0f;
    }
  }
}

}  // namespace

int64_t cublaslt_vec128_scales_size(int64_t m, int64_t k) { return ceil_div(k, kBlock) * m; }

int64_t cublaslt_blk128_scales_size(int64_t n, int64_t k) {
  return ceil_div(n, kBlock) * round_up(ceil_div(k, kBlock), 4);
}

void cublaslt_fp8_scales_from_r1(const float* a_scales, const float* b_scales, float* a_lt,
                                 float* b_lt, int64_t m, int64_t n, int64_t k,
                                 cudaStream_t stream) {
  const int64_t kb = ceil_div(k, kBlock), nb = ceil_div(n, kBlock);
  const int64_t total = m * kb + nb * round_up(kb, 4);
  if (total == 0) return;
  constexpr int kThreads = 256;
  const int grid = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  scales_to_lt_kernel<<<grid, kThreads, 0, stream>>>(a_scales, b_scales, a_lt, b_lt, m, nb, kb,
                                                     round_up(kb, 4));
  R1_CUDA_CHECK_LAUNCH();
}

void cublaslt_gemm_fp8_blockscaled(const void* a_q, const float* a_scales_lt, const void* b_q,
                                   const float* b_scales_lt, void* d, DType out, int64_t m,
                                   int64_t n, int64_t k, cudaStream_t stream) {
  run_fp8(Scaling::Block, a_q, a_scales_lt, b_q, b_scales_lt, d, out, m, n, k, stream);
}

void cublaslt_vec128_scales_from_r1(const float* scales, float* lt, int64_t rows, int64_t k,
                                    cudaStream_t stream) {
  const int64_t kb = ceil_div(k, kBlock), total = rows * kb;
  if (total == 0) return;
  constexpr int kThreads = 256;
  const int grid = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  scales_to_lt_kernel<<<grid, kThreads, 0, stream>>>(scales, nullptr, lt, nullptr, rows, 0, kb,
                                                     round_up(kb, 4));
  R1_CUDA_CHECK_LAUNCH();
}

void cublaslt_gemm_fp8_1d1d(const void* a_q, const float* a_scales_lt, const void* b_q,
                            const float* b_scales_lt, void* d, DType out, int64_t m, int64_t n,
                            int64_t k, cudaStream_t stream) {
  run_fp8(Scaling::Vec1D1D, a_q, a_scales_lt, b_q, b_scales_lt, d, out, m, n, k, stream);
}

void cublaslt_gemm_fp8_tensorwise(const void* a_q, const float* a_scale, const void* b_q,
                                  const float* b_scale, void* d, DType out, int64_t m, int64_t n,
                                  int64_t k, cudaStream_t stream) {
  run_fp8(Scaling::Tensor, a_q, a_scale, b_q, b_scale, d, out, m, n, k, stream);
}

}  // namespace r1::cuda
