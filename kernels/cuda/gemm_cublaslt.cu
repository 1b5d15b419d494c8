// CUDA gemm (contract in engine/kernels.h) through cuBLASLt: f32 (exact fp32 FMA, no TF32)
// and bf16 (bf16 in/out, fp32 accumulation and fp32 alpha/beta), batched through strided
// layouts, a broadcast (batch-1) operand at batch stride 0. The CPU version
// (kernels/cpu/gemm.cc) is the reference (tests/test_cuda_gemm.cc).
//
// Not batch invariant. cuBLASLt's heuristic chooses the algorithm (tile shape, split-K, the
// order of the K sum) from the whole problem, M included, so a row's result can change in its
// last bits when rows are added to or removed from the batch. DESIGN.md ("Batch invariance")
// wants every row computed in an order that does not depend on M: under batch_invariant()
// the gemm is gemm_invariant (gemm_invariant.cu) instead, once it has passed on a GPU
// (invariant_gemm_enabled). Run to run, a fixed shape is deterministic: the algorithm is cached per
// key and cuBLASLt's split-K reductions (in place with counters, or in the workspace) are
// ordered.
//
// Row-major r1 to column-major cuBLASLt. A buffer holding a row-major (r, c) matrix X is, to
// cuBLASLt, the column-major (c, r) matrix X^T with leading dimension c. r1's c (M, N) is
// therefore cuBLASLt's (N, M) matrix C^T, ld N, and
//     C^T = (op(a) op(b))^T = op(b)^T op(a)^T,
// so cuBLASLt's first operand ("A") is r1's b, its second ("B") is r1's a, with
// m_lt = N, n_lt = M, k_lt = K. Each operand's layout is its buffer as stored (rows = the
// stored row-major cols, cols = the stored rows, ld = the stored cols), and its transpose
// flag equals r1's flag for it:
//   b, !trans_b: stored (K, N) -> layout (N, K) ld N, which is op(b)^T: OP_N, (N, K).
//   b,  trans_b: stored (N, K) -> layout (K, N) ld K, which is op(b):   OP_T, (N, K).
//   a, !trans_a: stored (M, K) -> layout (K, M) ld K, which is op(a)^T: OP_N, (K, M).
//   a,  trans_a: stored (K, M) -> layout (M, K) ld M, which is op(a):   OP_T, (K, M).
//   c:           stored (M, N) -> layout (N, M) ld N; C and D share it (in place).
// Checked elementwise for all four (trans_a, trans_b): D_lt[n, m] = sum_k A_lt'[n, k]
// B_lt'[k, m] lands at m * N + n = c[m][n]; A_lt'[n, k] reads b[k * N + n] = b[k][n]
// (OP_N) or b[n * K + k] = b^T[k][n] (OP_T); B_lt'[k, m] reads a[m * K + k] = a[m][k] (OP_N)
// or a[k * M + m] = a^T[m][k] (OP_T).
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/determinism.h"
#include "engine/kernels.h"
#include "kernels/cuda/cublaslt_check.h"
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/gemm_invariant.h"

namespace r1::cuda {
namespace {

// NVIDIA's recommended cuBLASLt workspace on Hopper (cuBLAS docs, cublasSetWorkspace): split-K
// and stream-K algorithms keep partial sums there. One size for every call, so the caching
// allocator hands the same block back each time.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;
// cuBLASLt's default (and largest useful) pointer alignment preference.
constexpr uint32_t kMaxAlignment = 256;
// The algorithm cache is cleared when it reaches this many keys: training sees a few dozen
// shapes; variable-length RL batches see more, but each lookup is one heuristic call.
constexpr size_t kMaxCachedAlgos = 4096;

// One matmul in r1's row-major terms: c (batch, m, n) := alpha op(a) op(b) + beta c.
struct GemmProblem {
  cudaDataType_t dtype;  // of a, b and c alike: CUDA_R_32F or CUDA_R_16BF
  bool trans_a, trans_b;
  bool broadcast_a, broadcast_b;  // batch stride 0
  int64_t batch, m, n, k;
};

// The largest power of two (up to kMaxAlignment) that divides p's address.
uint32_t alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  if (v == 0) return kMaxAlignment;
  return static_cast<uint32_t>(std::min<uintptr_t>(kMaxAlignment, v & (~v + 1)));
}

// What the heuristic's answer depends on: the problem, the device, and the alignment of the
// pointers (algorithms that need more alignment than a buffer has are excluded).
struct AlgoKey {
  int device;
  int dtype;
  bool trans_a, trans_b, broadcast_a, broadcast_b;
  int64_t batch, m, n, k;
  uint32_t align_a, align_b, align_c;
  auto operator<=>(const AlgoKey&) const = default;
};

struct CachedAlgo {
  cublasLtMatmulAlgo_t algo;
  size_t workspace_bytes;
};

// cuBLASLt descriptors, destroyed with their scope.
template <class T, cublasStatus_t (*kDestroy)(T)>
class LtObject {
 public:
  LtObject() = default;
  ~LtObject() {
    if (p_) (void)kDestroy(p_);  // destroy only frees host memory; nothing to report
  }
  LtObject(const LtObject&) = delete;
  LtObject& operator=(const LtObject&) = delete;
  T* out() { return &p_; }
  T get() const { return p_; }

 private:
  T p_ = nullptr;
};
using MatmulDesc = LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using MatmulPreference = LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// The process's cuBLASLt state: one handle per device (created on first use) and the
// algorithm cache. Never destroyed, like the caching allocator, so a gemm during static
// destruction does not meet a dead handle. Thread-safe (one mutex).
class LtContext {
 public:
  static LtContext& instance() {
    static LtContext* ctx = new LtContext;
    return *ctx;
  }

  // The handle of `device` and the algorithm for `key`, asking the heuristic on a miss.
  std::pair<cublasLtHandle_t, CachedAlgo> lookup(const AlgoKey& key,
                                                 cublasLtMatmulDesc_t desc,
                                                 cublasLtMatrixLayout_t first,
                                                 cublasLtMatrixLayout_t second,
                                                 cublasLtMatrixLayout_t out) {
    std::lock_guard<std::mutex> lock(mu_);
    cublasLtHandle_t h = handle_locked(key.device);
    if (auto it = algos_.find(key); it != algos_.end()) return {h, it->second};
    const CachedAlgo algo = heuristic(h, key, desc, first, second, out);
    if (algos_.size() >= kMaxCachedAlgos) algos_.clear();
    algos_.emplace(key, algo);
    return {h, algo};
  }

 private:
  LtContext() = default;

  cublasLtHandle_t handle_locked(int device) {
    R1_CHECK(device >= 0 && device < kMaxDevices, "gemm: device {} out of range", device);
    if (!handles_[device]) {
      DeviceGuard g(device);
      R1_CUBLASLT_CHECK(cublasLtCreate(&handles_[device]));
    }
    return handles_[device];
  }

  // first = cuBLASLt's A (r1's b), second = its B (r1's a); see the file comment.
  static CachedAlgo heuristic(cublasLtHandle_t h, const AlgoKey& key, cublasLtMatmulDesc_t desc,
                              cublasLtMatrixLayout_t first, cublasLtMatrixLayout_t second,
                              cublasLtMatrixLayout_t out) {
    MatmulPreference pref;
    R1_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
    const uint64_t ws = kWorkspaceBytes;
    R1_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
    for (const auto& [attr, bytes] : aligns)
      R1_CUBLASLT_CHECK(
          cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &bytes, sizeof(bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, desc, first, second, out, out,
                                                             pref.get(), 1, &result, &found);
    R1_CHECK(st != CUBLAS_STATUS_NOT_SUPPORTED && (st != CUBLAS_STATUS_SUCCESS || found > 0),
             "gemm: cuBLASLt has no algorithm for {} batch {} M {} N {} K {} trans_a {} "
             "trans_b {} (alignment a {} b {} c {})",
             key.dtype == CUDA_R_16BF ? "bf16" : "f32", key.batch, key.m, key.n, key.k,
             key.trans_a, key.trans_b, key.align_a, key.align_b, key.align_c);
    R1_CUBLASLT_CHECK(st);
    return {result.algo, result.workspaceSize};
  }

  std::mutex mu_;
  std::array<cublasLtHandle_t, kMaxDevices> handles_{};
  std::map<AlgoKey, CachedAlgo> algos_;
};

// A column-major (rows, cols) layout with leading dimension ld; `batch` matrices `stride`
// elements apart (0: one matrix shared by the batch).
void make_layout(MatrixLayout& l, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld,
                 int64_t batch, int64_t stride) {
  R1_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(l.out(), t, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batch == 1) return;
  const int32_t count = static_cast<int32_t>(batch);
  R1_CUBLASLT_CHECK(cublasLtMatrixLayoutSetAttribute(l.get(), CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                     &count, sizeof(count)));
  R1_CUBLASLT_CHECK(cublasLtMatrixLayoutSetAttribute(
      l.get(), CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

// A 32 MiB workspace from the caching allocator on `stream`, returned after the matmul is
// queued (stream order keeps later users of the block behind it).
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

// a, b, c: device pointers on `device` (current) laid out as p says; c is read only when
// beta != 0 (cuBLASLt's rule). m, n, k > 0.
void run_matmul(const GemmProblem& p, const void* a, const void* b, void* c, float alpha,
                float beta, int device, cudaStream_t stream) {
  R1_CHECK(p.batch <= std::numeric_limits<int32_t>::max(),
           "gemm: batch {} exceeds cuBLASLt's int32 batch count", p.batch);
  // Stored row-major shapes of a and b.
  const int64_t a_rows = p.trans_a ? p.k : p.m, a_cols = p.trans_a ? p.m : p.k;
  const int64_t b_rows = p.trans_b ? p.n : p.k, b_cols = p.trans_b ? p.k : p.n;
  MatrixLayout first, second, out;  // cuBLASLt's A (r1's b), B (r1's a), C = D (r1's c)
  make_layout(first, p.dtype, b_cols, b_rows, b_cols, p.batch, p.broadcast_b ? 0 : p.k * p.n);
  make_layout(second, p.dtype, a_cols, a_rows, a_cols, p.batch, p.broadcast_a ? 0 : p.m * p.k);
  make_layout(out, p.dtype, p.n, p.m, p.n, p.batch, p.m * p.n);

  // CUBLAS_COMPUTE_32F is plain fp32 FMA (TF32 would be CUBLAS_COMPUTE_32F_FAST_TF32); with
  // bf16 operands it is the fp32 accumulation. alpha and beta are fp32 on the host.
  MatmulDesc desc;
  R1_CUBLASLT_CHECK(cublasLtMatmulDescCreate(desc.out(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_first = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  R1_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA,
                                                   &op_first, sizeof(op_first)));
  R1_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB,
                                                   &op_second, sizeof(op_second)));

  const AlgoKey key{device, static_cast<int>(p.dtype), p.trans_a, p.trans_b, p.broadcast_a,
                    p.broadcast_b, p.batch, p.m, p.n, p.k, alignment(a), alignment(b),
                    alignment(c)};
  const auto [handle, algo] =
      LtContext::instance().lookup(key, desc.get(), first.get(), second.get(), out.get());
  Workspace ws(algo.workspace_bytes, device, stream);
  R1_CUBLASLT_CHECK(cublasLtMatmul(handle, desc.get(), &alpha, b, first.get(), a, second.get(),
                                   &beta, c, out.get(), c, out.get(), &algo.algo, ws.ptr(),
                                   ws.bytes(), stream));
}

cudaDataType_t cuda_dtype(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: R1_CHECK(false, "gemm: CUDA takes f32 or bf16, got {}", dtype_name(t));
  }
  return CUDA_R_32F;  // unreachable
}

// The contract's check (engine/kernels.h) as the problem cuBLASLt is given.
GemmProblem check_gemm(const Tensor& a, const Tensor& b, const Tensor& c, bool ta, bool tb) {
  const GemmDims d = check_gemm_operands(a, b, c, ta, tb);
  return {cuda_dtype(c.dtype()), ta, tb, d.batch_a == 1, d.batch_b == 1, d.batch, d.m, d.n, d.k};
}

// a (Ba, M, K) or (Ba, K, M), b (Bb, K, N) or (Bb, N, K), c (B, M, N); f32 or bf16.
void gemm_cuda(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
               double alpha, double beta) {
  GemmProblem p = check_gemm(a, b, c, trans_a, trans_b);
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  // No product term (an empty sum, or alpha == 0, where BLAS reads neither a nor b, as the
  // CPU's gemm does): c := beta * c, and beta == 0 must not read c (maybe NaN).
  if (p.k == 0 || alpha == 0.0) {
    if (beta == 0.0) kernels::fill()(c.device(), c, 0.0);
    else kernels::affine()(c.device(), c, beta, 0.0, c);
    return;
  }
  if (batch_invariant() && invariant_gemm_enabled()) {
    gemm_invariant(a, b, c, trans_a, trans_b, alpha, beta);
    return;
  }
  // One b for the whole batch and a's rows stacked in memory: the batch folds into M, one
  // (B*M, K) @ op(b) product that tiles better than B small ones (kernels/cpu/gemm.cc does
  // the same; see there why the other broadcast layouts do not fold).
  if (p.batch > 1 && p.broadcast_b && !p.broadcast_a && !trans_a) {
    p.m *= p.batch;
    p.batch = 1;
    p.broadcast_b = false;
  }
  if (p.batch == 1) p.broadcast_a = p.broadcast_b = false;  // one matrix: no stride to share
  const int dev = c.device().index;
  DeviceGuard g(dev);
  run_matmul(p, a.data_ptr(), b.data_ptr(), c.data_ptr(), static_cast<float>(alpha),
             static_cast<float>(beta), dev, current_stream(dev));
}

}  // namespace

void cublaslt_gemm_bf16_bench(const void* a, const void* b, void* d, int64_t m, int64_t n,
                              int64_t k, cudaStream_t stream) {
  R1_CHECK(m >= 0 && n >= 0 && k > 0, "cublaslt_gemm_bf16_bench: M {} N {} K {}", m, n, k);
  if (m == 0 || n == 0) return;
  int dev = 0;
  R1_CUDA_CHECK(cudaGetDevice(&dev));
  const GemmProblem p{CUDA_R_16BF, false, true, false, false, 1, m, n, k};
  run_matmul(p, a, b, d, 1.0f, 0.0f, dev, stream);
}

R1_REGISTER_KERNEL(gemm, CUDA, gemm_cuda);

}  // namespace r1::cuda
