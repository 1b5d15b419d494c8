// CUDA: fill, copy_strided (any dtype pair, up to 8 dims), add_scaled and affine (f32 and
// bf16, fp32 math). Contracts in engine/kernels.h; the CPU versions (kernels/cpu/basic.cc)
// are the reference (tests/test_cuda_runtime.cc).
//
// All four are memory bound: the ceiling is HBM bandwidth (H100 SXM ~3.35 TB/s). Contiguous
// f32/bf16 data moves in 16-byte vectors when both pointers are 16-byte aligned; a view
// with an odd offset takes the scalar path. Not yet measured on a GPU.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "engine/convert.h"
#include "engine/convert_codecs.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kMaxDims = 8;

// ---- fill ------------------------------------------------------------------------------

struct Bytes16 {
  unsigned char b[16];
};

// out: `nbytes` bytes at p := the 16-byte pattern repeated (an element size divides 16, so
// the pattern lines up with elements). Aligned part as uint4, the tail byte by byte.
__global__ void fill_kernel(unsigned char* p, int64_t nbytes, Bytes16 pattern) {
  const int64_t nvec = nbytes / 16;
  uint4 v;
  memcpy(&v, pattern.b, 16);
  for (int64_t i = global_thread(); i < nvec; i += grid_threads())
    reinterpret_cast<uint4*>(p)[i] = v;
  for (int64_t i = nvec * 16 + global_thread(); i < nbytes; i += grid_threads())
    p[i] = pattern.b[i % 16];
}

// Unaligned views: one element (W = an unsigned word of the element's size) per thread.
template <class W>
__global__ void fill_words_kernel(W* p, int64_t n, W v) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) p[i] = v;
}

// out (any dtype, contiguous) := value, converted as the CPU converts it.
void fill_cuda(Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int dev = out.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const size_t es = dtype_size(out.dtype());
  unsigned char one[8] = {};
  convert_buffer(&value, DType::F64, one, out.dtype(), 1);
  void* p = out.data_ptr();
  if (aligned16(p)) {
    Bytes16 pat;
    for (size_t i = 0; i < 16; ++i) pat.b[i] = one[i % es];
    const int64_t nbytes = n * static_cast<int64_t>(es);
    fill_kernel<<<grid_for(nbytes / 16 + 16, dev), kThreads, 0, s>>>(
        static_cast<unsigned char*>(p), nbytes, pat);
    R1_CUDA_CHECK_LAUNCH();
    return;
  }
  auto launch = [&](auto word) {
    using W = decltype(word);
    W v;
    std::memcpy(&v, one, sizeof(W));
    fill_words_kernel<W><<<grid_for(n, dev), kThreads, 0, s>>>(static_cast<W*>(p), n, v);
    R1_CUDA_CHECK_LAUNCH();
  };
  switch (es) {
    case 1: launch(uint8_t{}); break;
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    case 8: launch(uint64_t{}); break;
    default: R1_CHECK(false, "fill: element size {} of {}", es, dtype_name(out.dtype()));
  }
}

// ---- copy_strided ----------------------------------------------------------------------

// Elements convert with engine/convert_codecs.h's convert_one, the function the CPU's
// convert_buffer applies: a CUDA copy equals the CPU copy bit for bit for every dtype pair
// and every value (same-dtype copies move the bits; until 2026-12-01 everything went through
// a double here, which rounded twice and lost i64 bits above 2^53, saturated instead of
// wrapping integer narrowing, and quieted NaN payloads).
template <DType T>
using Stor = typename convert_codecs::Codec<T>::Storage;

template <DType S, DType D>
__device__ inline Stor<D> convert_elem(Stor<S> x) {
  return convert_codecs::convert_one<convert_codecs::Codec<S>, convert_codecs::Codec<D>>(x);
}

// Sizes and element strides of both sides after merging dims that are contiguous in both.
struct StridedLayout {
  int ndim = 0;
  int64_t size[kMaxDims];
  int64_t src_stride[kMaxDims];
  int64_t dst_stride[kMaxDims];
};

StridedLayout collapse(const Tensor& src, const Tensor& dst) {
  StridedLayout l;
  for (int64_t d = 0; d < src.dim(); ++d) {
    if (src.size(d) == 1) continue;  // a size-1 dim moves nothing
    if (l.ndim > 0 && l.src_stride[l.ndim - 1] == src.stride(d) * src.size(d) &&
        l.dst_stride[l.ndim - 1] == dst.stride(d) * src.size(d)) {
      const int last = l.ndim - 1;  // merge into the previous (outer) dim
      l.size[last] *= src.size(d);
      l.src_stride[last] = src.stride(d);
      l.dst_stride[last] = dst.stride(d);
      continue;
    }
    R1_CHECK(l.ndim < kMaxDims, "copy_strided: {} -> {} needs more than {} dims after merging",
             src.str(), dst.str(), kMaxDims);
    l.size[l.ndim] = src.size(d);
    l.src_stride[l.ndim] = src.stride(d);
    l.dst_stride[l.ndim] = dst.stride(d);
    ++l.ndim;
  }
  if (l.ndim == 0) {  // a scalar, or all dims of size 1
    l.ndim = 1;
    l.size[0] = 1;
    l.src_stride[0] = l.dst_stride[0] = 1;
  }
  return l;
}

// Each thread takes kCopyIlp elements a block apart per step (coalesced on the destination,
// independent loads in flight). With one element per step the f32 -> bf16 conversion of 2^27
// elements ran at 0.41 of the copy bandwidth on an H200 and a bf16 transpose at 0.10:
// latency-bound, a few bytes in flight per thread.
constexpr int kCopyIlp = 4;

template <DType S, DType D>
__global__ void copy_strided_kernel(const void* src, void* dst, int64_t n, StridedLayout l) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x * kCopyIlp;
  for (int64_t base = int64_t{blockIdx.x} * blockDim.x * kCopyIlp + threadIdx.x; base < n;
       base += step) {
    Stor<S> v[kCopyIlp];
    int64_t doff[kCopyIlp];
#pragma unroll
    for (int u = 0; u < kCopyIlp; ++u) {
      const int64_t i = base + int64_t{u} * blockDim.x;
      if (i >= n) break;
      int64_t rem = i, so = 0, dof = 0;
      for (int d = l.ndim - 1; d > 0; --d) {
        const int64_t q = rem / l.size[d];
        const int64_t r = rem - q * l.size[d];
        so += r * l.src_stride[d];
        dof += r * l.dst_stride[d];
        rem = q;
      }
      so += rem * l.src_stride[0];
      doff[u] = dof + rem * l.dst_stride[0];
      v[u] = static_cast<const Stor<S>*>(src)[so];
    }
#pragma unroll
    for (int u = 0; u < kCopyIlp; ++u)
      if (base + int64_t{u} * blockDim.x < n)
        static_cast<Stor<D>*>(dst)[doff[u]] = convert_elem<S, D>(v[u]);
  }
}

// Contiguous conversions (src and dst dense, dtypes differ): chunks of kConvElems elements
// moved as whole vectors (up to 16 bytes per access) and converted in registers with the
// element-wise kernel's conversions (the same bits); the element-wise kernel moved one
// element per access (a contiguous f32 -> bf16 at 0.41 of the copy bandwidth on an H200).
constexpr int kConvElems = 8;

constexpr int elem_bytes(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::BF16:
    case DType::F16: return 2;
    default: return 1;
  }
}

// kBytes (8, 16, 32 or 64) of elements as whole words: one 8-byte or one to four 16-byte
// vector accesses (a struct of bytes compiled to byte loads for the 64-byte chunks).
template <int kBytes> struct Chunk;
template <> struct Chunk<8> { uint2 w[1]; };
template <> struct Chunk<16> { uint4 w[1]; };
template <> struct Chunk<32> { uint4 w[2]; };
template <> struct Chunk<64> { uint4 w[4]; };

template <DType S, DType D>
__global__ void convert_contiguous_kernel(const void* src, void* dst, int64_t n) {
  using SC = Chunk<kConvElems * elem_bytes(S)>;
  using DC = Chunk<kConvElems * elem_bytes(D)>;
  static_assert(sizeof(SC) == kConvElems * sizeof(Stor<S>) &&
                sizeof(DC) == kConvElems * sizeof(Stor<D>), "a chunk is kConvElems elements");
  const int64_t chunks = n / kConvElems;
  for (int64_t i = global_thread(); i < chunks; i += grid_threads()) {
    const SC in = static_cast<const SC*>(src)[i];
    Stor<S> x[kConvElems];
    Stor<D> y[kConvElems];
    memcpy(x, &in, sizeof(in));
#pragma unroll
    for (int k = 0; k < kConvElems; ++k) y[k] = convert_elem<S, D>(x[k]);
    DC out;
    memcpy(&out, y, sizeof(out));
    static_cast<DC*>(dst)[i] = out;
  }
  for (int64_t i = chunks * kConvElems + global_thread(); i < n; i += grid_threads())
    static_cast<Stor<D>*>(dst)[i] = convert_elem<S, D>(static_cast<const Stor<S>*>(src)[i]);
}

// The transposes (a layout whose two innermost dims are contiguous in opposite tensors:
// src along dim i = ndim - 2, dst along dim j = ndim - 1; any outer dims are a batch) go
// through shared-memory tiles, so both the loads and the stores of a warp are consecutive
// elements; the element-wise kernel above reads one side at a stride of the row (0.10 of the
// copy bandwidth for a bf16 8192^2 transpose on an H200). One kTile x kTile tile per block
// per step (grid-stride over batch x tiles), kTile x kTileRows threads, each moving
// kTile / kTileRows elements each way; the values wait in shared memory as the source's
// storage and are converted on the way out (the element-wise kernel's conversions).
constexpr int kTile = 32, kTileRows = 8;

// Skinny ones (a side under 16: few lanes of a 32-wide tile busy between two barriers) stay
// element-wise.
bool is_transpose(const StridedLayout& l) {
  return l.ndim >= 2 && l.src_stride[l.ndim - 2] == 1 && l.dst_stride[l.ndim - 1] == 1 &&
         l.size[l.ndim - 2] >= 16 && l.size[l.ndim - 1] >= 16;
}

template <DType S, DType D>
__global__ void __launch_bounds__(kTile * kTileRows)
    transpose_tiles_kernel(const void* src, void* dst, StridedLayout l, int64_t tiles_i,
                           int64_t tiles_j, int64_t total) {
  __shared__ Stor<S> tile[kTile][kTile + 1];  // [j][i]; the pad staggers the column reads
  const int nd = l.ndim;
  const int64_t si = l.size[nd - 2], sj = l.size[nd - 1];
  const int64_t src_sj = l.src_stride[nd - 1], dst_si = l.dst_stride[nd - 2];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {  // uniform over the block
    const int64_t per_batch = tiles_i * tiles_j;
    int64_t b = t / per_batch;
    const int64_t r = t - b * per_batch, ti = r / tiles_j, tj = r - ti * tiles_j;
    int64_t so = 0, dof = 0;
    for (int d = nd - 3; d >= 0; --d) {  // the batch index over the outer dims
      const int64_t q = b / l.size[d];
      so += (b - q * l.size[d]) * l.src_stride[d];
      dof += (b - q * l.size[d]) * l.dst_stride[d];
      b = q;
    }
    const int64_t i0 = ti * kTile, j0 = tj * kTile;
#pragma unroll
    for (int jj = ty; jj < kTile; jj += kTileRows) {  // a warp reads along i: contiguous
      const int64_t i = i0 + tx, j = j0 + jj;
      if (i < si && j < sj) tile[jj][tx] = static_cast<const Stor<S>*>(src)[so + i + j * src_sj];
    }
    __syncthreads();
#pragma unroll
    for (int ii = ty; ii < kTile; ii += kTileRows) {  // a warp writes along j: contiguous
      const int64_t i = i0 + ii, j = j0 + tx;
      if (i < si && j < sj)
        static_cast<Stor<D>*>(dst)[dof + i * dst_si + j] = convert_elem<S, D>(tile[tx][ii]);
    }
    __syncthreads();  // the tile is reused by the next step
  }
}

// Calls fn(std::integral_constant<DType, t>{}) for the runtime dtype t.
template <class Fn>
void dispatch_dtype(DType t, Fn&& fn) {
  using std::integral_constant;
  switch (t) {
    case DType::F32: return fn(integral_constant<DType, DType::F32>{});
    case DType::F64: return fn(integral_constant<DType, DType::F64>{});
    case DType::BF16: return fn(integral_constant<DType, DType::BF16>{});
    case DType::F16: return fn(integral_constant<DType, DType::F16>{});
    case DType::E4M3: return fn(integral_constant<DType, DType::E4M3>{});
    case DType::E5M2: return fn(integral_constant<DType, DType::E5M2>{});
    case DType::I32: return fn(integral_constant<DType, DType::I32>{});
    case DType::I64: return fn(integral_constant<DType, DType::I64>{});
    case DType::U8: return fn(integral_constant<DType, DType::U8>{});
    case DType::Bool: return fn(integral_constant<DType, DType::Bool>{});
  }
}

// src, dst: same shape, any strides, any dtypes, both on one CUDA device.
void copy_strided_cuda(const Tensor& src, Tensor& dst) {
  R1_CHECK(src.shape() == dst.shape(), "copy_strided: {} -> {}", src.str(), dst.str());
  const int64_t n = src.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    R1_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(),
                                  cudaMemcpyDeviceToDevice, s));
    return;
  }
  const StridedLayout l = collapse(src, dst);
  const void* sp = src.data_ptr();
  void* dp = dst.data_ptr();
  if (src.is_contiguous() && dst.is_contiguous()) {  // dtypes differ (same: cudaMemcpy above)
    const auto aligned = [](const void* p, DType t) {
      const int a = std::min(16, kConvElems * elem_bytes(t));
      return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(a) == 0;
    };
    if (aligned(sp, src.dtype()) && aligned(dp, dst.dtype())) {
      dispatch_dtype(src.dtype(), [&](auto st) {
        dispatch_dtype(dst.dtype(), [&](auto dt) {
          convert_contiguous_kernel<decltype(st)::value, decltype(dt)::value>
              <<<grid_for(n / kConvElems + 1, dev), kThreads, 0, s>>>(sp, dp, n);
          R1_CUDA_CHECK_LAUNCH();
        });
      });
      return;
    }
  }
  const bool tiles = is_transpose(l);
  const int64_t tiles_i = tiles ? (l.size[l.ndim - 2] + kTile - 1) / kTile : 0;
  const int64_t tiles_j = tiles ? (l.size[l.ndim - 1] + kTile - 1) / kTile : 0;
  const int64_t total_tiles = tiles ? n / (l.size[l.ndim - 2] * l.size[l.ndim - 1]) * tiles_i *
                                          tiles_j
                                    : 0;
  dispatch_dtype(src.dtype(), [&](auto st) {
    dispatch_dtype(dst.dtype(), [&](auto dt) {
      if (tiles) {
        const int grid = static_cast<int>(
            std::min<int64_t>(total_tiles, int64_t{sm_count(dev)} * kBlocksPerSm));
        transpose_tiles_kernel<decltype(st)::value, decltype(dt)::value>
            <<<grid, dim3(kTile, kTileRows), 0, s>>>(sp, dp, l, tiles_i, tiles_j, total_tiles);
      } else {
        copy_strided_kernel<decltype(st)::value, decltype(dt)::value>
            <<<grid_for(n / kCopyIlp + 1, dev), kThreads, 0, s>>>(sp, dp, n, l);
      }
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

// ---- add_scaled, affine ----------------------------------------------------------------

struct AddScaledFn {  // y + alpha * x
  float alpha;
  __device__ float operator()(float x, float y) const { return fmaf(alpha, x, y); }
};
struct AffineFn {  // s * x + b
  float s, b;
  __device__ float operator()(float x, float) const { return fmaf(s, x, b); }
};

// out[i] := f(x[i], out[i]) in fp32 (out read only when kReadOut). The first nvec items are
// 16-byte vectors (nvec = 0 when a pointer is unaligned), the rest single elements.
template <class T, bool kReadOut, class F>
__global__ void map_kernel(const T* x, T* out, int64_t n, int64_t nvec, F f) {
  constexpr int kVec = 16 / sizeof(T);
  const int64_t items = nvec + (n - nvec * kVec);
  for (int64_t i = global_thread(); i < items; i += grid_threads()) {
    if (i < nvec) {
      const uint4 xv = reinterpret_cast<const uint4*>(x)[i];
      uint4 ov{};
      if constexpr (kReadOut) ov = reinterpret_cast<const uint4*>(out)[i];
      T xs[kVec], os[kVec];
      memcpy(xs, &xv, 16);
      memcpy(os, &ov, 16);
#pragma unroll
      for (int k = 0; k < kVec; ++k) os[k] = from_f32<T>(f(to_f32(xs[k]), to_f32(os[k])));
      memcpy(&ov, os, 16);
      reinterpret_cast<uint4*>(out)[i] = ov;
    } else {
      const int64_t j = nvec * kVec + (i - nvec);
      const float o = kReadOut ? to_f32(out[j]) : 0.0f;
      out[j] = from_f32<T>(f(to_f32(x[j]), o));
    }
  }
}

template <bool kReadOut, class F>
void launch_map(const char* what, const Tensor& x, Tensor& out, F f) {
  R1_CHECK(x.shape() == out.shape() && x.dtype() == out.dtype(), "{}: x {} and out {}", what,
           x.str(), out.str());
  const int64_t n = x.numel();
  if (n == 0) return;
  const int dev = out.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    const int64_t nvec = aligned16(x.data_ptr()) && aligned16(out.data_ptr()) ? n / kVec : 0;
    const int64_t items = nvec + (n - nvec * kVec);
    map_kernel<T, kReadOut><<<grid_for(items, dev), kThreads, 0, s>>>(
        static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()), n, nvec, f);
    R1_CUDA_CHECK_LAUNCH();
  };
  switch (x.dtype()) {
    case DType::F32: run(float{}); break;
    case DType::BF16: run(uint16_t{}); break;
    default:
      R1_CHECK(false, "{}: CUDA kernels take f32 or bf16, got {}", what, dtype_name(x.dtype()));
  }
}

// y, x: same shape, f32 or bf16. y += alpha * x.
void add_scaled_cuda(Tensor& y, const Tensor& x, double alpha) {
  launch_map<true>("add_scaled", x, y, AddScaledFn{static_cast<float>(alpha)});
}

// x, out: same shape, f32 or bf16. out := s * x + b.
void affine_cuda(const Tensor& x, double s, double b, Tensor& out) {
  launch_map<false>("affine", x, out, AffineFn{static_cast<float>(s), static_cast<float>(b)});
}

}  // namespace

R1_REGISTER_KERNEL(fill, CUDA, fill_cuda);
R1_REGISTER_KERNEL(copy_strided, CUDA, copy_strided_cuda);
R1_REGISTER_KERNEL(add_scaled, CUDA, add_scaled_cuda);
R1_REGISTER_KERNEL(affine, CUDA, affine_cuda);

}  // namespace r1::cuda
