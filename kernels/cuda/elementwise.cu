// CUDA: broadcasting binary ops, reductions over (outer, R, inner) (sum; max with the first
// index of the maximum), and the f64 sum of squares. Contracts in engine/kernels.h; the CPU
// kernels (kernels/cpu/elementwise.cc) are the reference (tests/test_cuda_elementwise.cc).
// f32 and bf16 (uint16_t bits) only, computed in fp32.
//
// All three are memory bound (ceiling: HBM bandwidth, H200 ~4.8 TB/s); not yet measured.
//  - binary: same-shape operands move in 16-byte vectors when all three pointers are 16-byte
//    aligned; broadcast operands take an index walk over the dims left after merging.
//  - reduce: the summation order of one output depends on R alone, never on outer or inner
//    or the GPU (batch invariance: a row's sum does not change with the rows launched beside
//    it). Rows (inner == 1) are cut into fixed chunks of kRowChunk, one block per chunk;
//    columns (inner > 1) into chunks of kColChunk rows, one 32-column tile per block. Chunk
//    partials are reduced again the same way until one chunk is left.
//  - sum_squares: a grid fixed by n alone, f64 per thread and per block, then one block over
//    the block partials: bit-reproducible for a given n.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

// ---- launch helpers (as in basic.cu) ---------------------------------------------------
constexpr int kMaxDims = 8;

// The sum of the block's values in a fixed tree (thread t takes t + s for s = 128, 64, ...):
// the same order for every launch. All threads must call it; the result is in thread 0.
template <class Acc, class Combine>
__device__ Acc block_fold(Acc v, Combine combine) {
  __shared__ Acc sh[kThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    const int t = static_cast<int>(threadIdx.x);
    if (t < s) sh[t] = combine(sh[t], sh[t + s]);
    __syncthreads();
  }
  return sh[0];
}

// ---- binary ----------------------------------------------------------------------------

template <BinaryOp kOp>
__device__ inline float apply(float a, float b) {
  if constexpr (kOp == BinaryOp::Add) return a + b;
  else if constexpr (kOp == BinaryOp::Sub) return a - b;
  else if constexpr (kOp == BinaryOp::Mul) return a * b;
  else return a / b;
}

// a, b, out: n contiguous elements. The first nvec items are 16-byte vectors (nvec = 0 when a
// pointer is unaligned), the rest single elements.
template <BinaryOp kOp, class T>
__global__ void binary_same_shape_kernel(const T* a, const T* b, T* out, int64_t n,
                                         int64_t nvec) {
  constexpr int kVec = 16 / sizeof(T);
  const int64_t items = nvec + (n - nvec * kVec);
  for (int64_t i = global_thread(); i < items; i += grid_threads()) {
    if (i < nvec) {
      const uint4 av = reinterpret_cast<const uint4*>(a)[i];
      const uint4 bv = reinterpret_cast<const uint4*>(b)[i];
      T as[kVec], bs[kVec], os[kVec];
      memcpy(as, &av, 16);
      memcpy(bs, &bv, 16);
#pragma unroll
      for (int k = 0; k < kVec; ++k) os[k] = from_f32<T>(apply<kOp>(to_f32(as[k]), to_f32(bs[k])));
      uint4 ov;
      memcpy(&ov, os, 16);
      reinterpret_cast<uint4*>(out)[i] = ov;
    } else {
      const int64_t j = nvec * kVec + (i - nvec);
      out[j] = from_f32<T>(apply<kOp>(to_f32(a[j]), to_f32(b[j])));
    }
  }
}

// Dims of out (size-1 dims dropped, neighbours merged where both operands allow) with each
// operand's element strides (0 on broadcast dims). Idx is 32-bit when n < 2^32: the walk's
// divisions are then much cheaper.
template <class Idx>
struct BroadcastLayout {
  int ndim = 0;
  Idx size[kMaxDims];
  Idx a_stride[kMaxDims];
  Idx b_stride[kMaxDims];
};

template <class Idx>
BroadcastLayout<Idx> collapse(const Tensor& a, const Tensor& b, const Tensor& out) {
  BroadcastLayout<Idx> l;
  for (int64_t d = 0; d < out.dim(); ++d) {
    const int64_t n = out.size(d);
    if (n == 1) continue;
    const int last = l.ndim - 1;
    if (l.ndim > 0 && int64_t{l.a_stride[last]} == a.stride(d) * n &&
        int64_t{l.b_stride[last]} == b.stride(d) * n) {
      l.size[last] *= static_cast<Idx>(n);
      l.a_stride[last] = static_cast<Idx>(a.stride(d));
      l.b_stride[last] = static_cast<Idx>(b.stride(d));
      continue;
    }
    R1_CHECK(l.ndim < kMaxDims, "binary: {} and {} broadcast over more than {} dims after "
             "merging", a.str(), b.str(), kMaxDims);
    l.size[l.ndim] = static_cast<Idx>(n);
    l.a_stride[l.ndim] = static_cast<Idx>(a.stride(d));
    l.b_stride[l.ndim] = static_cast<Idx>(b.stride(d));
    ++l.ndim;
  }
  if (l.ndim == 0) {  // every dim has size 1
    l.ndim = 1;
    l.size[0] = 1;
    l.a_stride[0] = l.b_stride[0] = 0;
  }
  return l;
}

// out (contiguous, n elements) = a op b, a and b walked through the layout's strides. Each
// thread takes kBroadcastIlp elements a block apart per step (coalesced, independent loads in
// flight): with one element per step this kernel reached 0.30 of the copy bandwidth on an
// H200 for (16384, 7168) + (7168) bf16, latency-bound.
constexpr int kBroadcastIlp = 4;

template <BinaryOp kOp, class T, class Idx>
__global__ void binary_broadcast_kernel(const T* a, const T* b, T* out, Idx n,
                                        BroadcastLayout<Idx> l) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x * kBroadcastIlp;
  for (int64_t base = int64_t{blockIdx.x} * blockDim.x * kBroadcastIlp + threadIdx.x;
       base < int64_t{n}; base += step) {
    float r[kBroadcastIlp];
#pragma unroll
    for (int u = 0; u < kBroadcastIlp; ++u) {
      const int64_t i = base + int64_t{u} * blockDim.x;
      if (i >= int64_t{n}) break;
      Idx rem = static_cast<Idx>(i), oa = 0, ob = 0;
      for (int d = l.ndim - 1; d > 0; --d) {
        const Idx q = rem / l.size[d];
        const Idx rr = rem - q * l.size[d];
        oa += rr * l.a_stride[d];
        ob += rr * l.b_stride[d];
        rem = q;
      }
      oa += rem * l.a_stride[0];
      ob += rem * l.b_stride[0];
      r[u] = apply<kOp>(to_f32(a[oa]), to_f32(b[ob]));
    }
#pragma unroll
    for (int u = 0; u < kBroadcastIlp; ++u) {
      const int64_t i = base + int64_t{u} * blockDim.x;
      if (i < int64_t{n}) out[i] = from_f32<T>(r[u]);
    }
  }
}

template <class T, BinaryOp kOp>
void launch_binary(const Tensor& a, const Tensor& b, Tensor& out, int dev, cudaStream_t s) {
  const int64_t n = out.numel();
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (a.is_contiguous() && b.is_contiguous()) {
    constexpr int kVec = 16 / sizeof(T);
    const int64_t nvec = aligned16(pa) && aligned16(pb) && aligned16(po) ? n / kVec : 0;
    binary_same_shape_kernel<kOp, T><<<grid_for(nvec + n - nvec * kVec, dev), kThreads, 0, s>>>(
        pa, pb, po, n, nvec);
  } else if (n < (int64_t{1} << 32)) {
    binary_broadcast_kernel<kOp, T, uint32_t><<<grid_for(n / kBroadcastIlp + 1, dev), kThreads, 0, s>>>(
        pa, pb, po, static_cast<uint32_t>(n), collapse<uint32_t>(a, b, out));
  } else {
    binary_broadcast_kernel<kOp, T, int64_t><<<grid_for(n / kBroadcastIlp + 1, dev), kThreads, 0, s>>>(
        pa, pb, po, n, collapse<int64_t>(a, b, out));
  }
  R1_CUDA_CHECK_LAUNCH();
}

// a, b: broadcast views of out's shape (stride 0 on broadcast dims), out contiguous; all f32
// or all bf16.
void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  R1_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype() && a.shape() == out.shape() &&
               b.shape() == out.shape() && out.is_contiguous(),
           "binary: {} op {} -> {}", a.str(), b.str(), out.str());
  if (out.numel() == 0) return;
  const int dev = out.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
      case BinaryOp::Add: return launch_binary<T, BinaryOp::Add>(a, b, out, dev, s);
      case BinaryOp::Sub: return launch_binary<T, BinaryOp::Sub>(a, b, out, dev, s);
      case BinaryOp::Mul: return launch_binary<T, BinaryOp::Mul>(a, b, out, dev, s);
      case BinaryOp::Div: return launch_binary<T, BinaryOp::Div>(a, b, out, dev, s);
    }
  });
}

// ---- reduce ----------------------------------------------------------------------------

constexpr int kRowItems = 16;                      // loads in flight per thread
constexpr int64_t kRowChunk = kThreads * kRowItems;  // elements of a row per block
constexpr int kColSlices = 8;                      // blockDim.y of the column kernel
constexpr int64_t kColChunk = kColSlices * 64;     // rows of R per column block

struct SumOp {
  using Acc = float;
  __device__ static Acc identity() { return 0.0f; }
  __device__ static Acc make(float v, int64_t) { return v; }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
};

struct MaxAcc {
  float v;
  int64_t i;
};

// The CPU's sequential rule (a later element wins only when strictly greater, or the first
// NaN) is the maximum under one total order on (value, index): NaN above every number, then
// the larger value, then the smaller index. So any combining tree returns the CPU's answer.
struct MaxOp {
  using Acc = MaxAcc;
  __device__ static Acc identity() { return {-INFINITY, INT64_MAX}; }
  __device__ static Acc make(float v, int64_t r) { return {v, r}; }
  __device__ static Acc combine(Acc a, Acc b) {
    const bool an = isnan(a.v), bn = isnan(b.v);
    bool b_wins;
    if (an != bn) b_wins = bn;
    else if (!an && a.v != b.v) b_wins = b.v > a.v;
    else b_wins = b.i < a.i;
    return b_wins ? b : a;
  }
};

// Where a level reads: x itself (element r of the reduced dim is index r), or the partials
// of the previous level (which carry their own argmax indices).
template <class Op, class T>
struct ElemSrc {
  const T* p;
  __device__ typename Op::Acc load(int64_t at, int64_t r) const {
    return Op::make(to_f32(p[at]), r);
  }
};
template <class Op>
struct PartialSrc {
  const typename Op::Acc* p;
  __device__ typename Op::Acc load(int64_t at, int64_t) const { return p[at]; }
};

// Where a level writes: the outputs, or partials for the next level.
template <class T>
struct OutDst {
  T* out;
  int64_t* argmax;
  __device__ void store(int64_t at, float s) const { out[at] = from_f32<T>(s); }
  __device__ void store(int64_t at, MaxAcc m) const {
    out[at] = from_f32<T>(m.v);
    argmax[at] = m.i;
  }
};
template <class Acc>
struct PartialDst {
  Acc* p;
  __device__ void store(int64_t at, Acc a) const { p[at] = a; }
};

// src (outer, R) -> dst (outer, nchunks): block b folds chunk b % nchunks of row b / nchunks.
// Thread t takes elements t, t + kThreads, ... of the chunk (coalesced; kRowItems loads
// unrolled and in flight at once), then the block folds the 256 values in a fixed tree.
template <class Op, class Src, class Dst>
__global__ void reduce_rows_kernel(Src src, Dst dst, int64_t R, int64_t nchunks) {
  const int64_t o = blockIdx.x / nchunks, c = blockIdx.x % nchunks;
  const int64_t r0 = c * kRowChunk, r1 = std::min(R, r0 + kRowChunk);
  typename Op::Acc acc = Op::identity();
#pragma unroll
  for (int k = 0; k < kRowItems; ++k) {
    const int64_t r = r0 + k * kThreads + threadIdx.x;
    if (r < r1) acc = Op::combine(acc, src.load(o * R + r, r));
  }
  acc = block_fold(acc, [](auto x, auto y) { return Op::combine(x, y); });
  if (threadIdx.x == 0) dst.store(blockIdx.x, acc);
}

// src (outer, R, inner) -> dst (outer, nchunks, inner). Block: 32 adjacent columns (lanes:
// coalesced) by kColSlices slices; one block per (o, chunk of kColChunk rows, column tile).
// Thread (x, y) folds rows y, y + kColSlices, ... of the chunk; then the slices are folded
// in order 0, 1, ... .
template <class Op, class Src, class Dst>
__global__ void reduce_cols_kernel(Src src, Dst dst, int64_t R, int64_t inner, int64_t nchunks,
                                   int64_t ntiles) {
  using Acc = typename Op::Acc;
  const int64_t tile = blockIdx.x % ntiles, oc = blockIdx.x / ntiles;  // oc = o * nchunks + c
  const int64_t o = oc / nchunks, c = oc % nchunks;
  const int64_t j = tile * 32 + threadIdx.x;
  const int64_t r0 = c * kColChunk, r1 = std::min(R, r0 + kColChunk);
  Acc acc = Op::identity();
  if (j < inner)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColSlices)
      acc = Op::combine(acc, src.load((o * R + r) * inner + j, r));
  __shared__ Acc sh[kColSlices][32];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < inner) {
    for (int y = 1; y < kColSlices; ++y) acc = Op::combine(acc, sh[y][threadIdx.x]);
    dst.store(oc * inner + j, acc);
  }
}

struct ReduceShape {
  int64_t outer, R, inner;
};

// One level: src (outer, R, inner) -> dst (outer, nchunks, inner).
template <class Op, class Src, class Dst>
void launch_reduce_level(Src src, Dst dst, ReduceShape x, int64_t nchunks, cudaStream_t s) {
  const int64_t ntiles = (x.inner + 31) / 32;
  const int64_t blocks = x.outer * nchunks * (x.inner == 1 ? 1 : ntiles);
  R1_CHECK(blocks < (int64_t{1} << 31), "reduce: ({}, {}, {}) needs too many blocks", x.outer,
           x.R, x.inner);
  if (x.inner == 1) {
    reduce_rows_kernel<Op><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(src, dst, x.R,
                                                                            nchunks);
  } else {
    reduce_cols_kernel<Op><<<static_cast<unsigned>(blocks), dim3(32, kColSlices), 0, s>>>(
        src, dst, x.R, x.inner, nchunks, ntiles);
  }
  R1_CUDA_CHECK_LAUNCH();
}

// Reduces src (outer, R, inner) into out, through chunk partials while R spans more than one
// chunk. The chunking depends on R (and on inner == 1) only. The partials live in a
// workspace from the caching allocator, freed (stream-ordered) when the level returns.
template <class Op, class Src, class T>
void reduce_levels(Src src, ReduceShape x, OutDst<T> out, int dev, cudaStream_t s) {
  using Acc = typename Op::Acc;
  const int64_t chunk = x.inner == 1 ? kRowChunk : kColChunk;
  const int64_t nchunks = std::max<int64_t>(1, (x.R + chunk - 1) / chunk);  // R = 0: one
  if (nchunks == 1) return launch_reduce_level<Op>(src, out, x, 1, s);
  const int64_t count = x.outer * nchunks * x.inner;
  Tensor ws = Tensor::empty({count * static_cast<int64_t>(sizeof(Acc))}, DType::U8,
                            Device::cuda(dev));
  Acc* partial = static_cast<Acc*>(ws.data_ptr());
  launch_reduce_level<Op>(src, PartialDst<Acc>{partial}, x, nchunks, s);
  reduce_levels<Op>(PartialSrc<Op>{partial}, ReduceShape{x.outer, nchunks, x.inner}, out, dev,
                    s);
}

// x (outer, R, inner) -> out (outer, inner) in x's dtype; argmax (outer, inner) i64 for Max.
void reduce_cuda(ReduceOp op, const Tensor& x, Tensor& out, Tensor& argmax) {
  R1_CHECK(x.dim() == 3 && out.numel() == x.size(0) * x.size(2) && out.dtype() == x.dtype(),
           "reduce: {} -> {}", x.str(), out.str());
  const ReduceShape shape{x.size(0), x.size(1), x.size(2)};
  R1_CHECK(op != ReduceOp::Max || shape.R > 0, "max over an empty dim");
  R1_CHECK(op != ReduceOp::Max || (argmax.dtype() == DType::I64 && argmax.numel() == out.numel()),
           "reduce: argmax {} for out {}", argmax.str(), out.str());
  if (out.numel() == 0) return;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    if (op == ReduceOp::Sum) {
      reduce_levels<SumOp>(ElemSrc<SumOp, T>{px}, shape, OutDst<T>{po, nullptr}, dev, s);
    } else {
      reduce_levels<MaxOp>(ElemSrc<MaxOp, T>{px}, shape,
                           OutDst<T>{po, argmax.data<int64_t>()}, dev, s);
    }
  });
}

// ---- sum_squares -----------------------------------------------------------------------

// Grid cap: one wave on an H200 (132 SMs x 8 blocks), fixed so that results are the same on
// every GPU.
constexpr int kSumSquaresMaxBlocks = 1024;

// Thread g folds x[g]^2, x[g + G]^2, ... in f64 (a square of an fp32 value is exact in f64),
// the block folds its threads into partial[blockIdx.x]. Scalar loads so that which thread
// reads which element does not depend on the pointer's alignment.
template <class T>
__global__ void sum_squares_kernel(const T* x, int64_t n, double* partial) {
  double acc = 0;
#pragma unroll 4
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const double v = to_f32(x[i]);
    acc = fma(v, v, acc);
  }
  acc = block_fold(acc, [](double a, double b) { return a + b; });
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: the nblocks partials in the same fixed order.
__global__ void sum_partials_kernel(const double* partial, int nblocks, double* out) {
  double acc = 0;
  for (int i = threadIdx.x; i < nblocks; i += kThreads) acc += partial[i];
  acc = block_fold(acc, [](double a, double b) { return a + b; });
  if (threadIdx.x == 0) *out = acc;
}

// x: any shape, f32 or bf16 -> sum(x^2) in f64. Reads the result back (synchronizes the
// current stream): the caller needs the number on the host (grad-norm clipping).
double sum_squares_cuda(const Tensor& x) {
  const int64_t n = x.numel();
  double result = 0;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(x.dtype(), "sum_squares", [&](auto tag) {
    using T = decltype(tag);
    if (n == 0) return;
    const int blocks = static_cast<int>(
        std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kSumSquaresMaxBlocks));
    Tensor partial = Tensor::empty({blocks + 1}, DType::F64, Device::cuda(dev));
    double* p = partial.data<double>();
    sum_squares_kernel<T><<<blocks, kThreads, 0, s>>>(static_cast<const T*>(x.data_ptr()), n, p);
    R1_CUDA_CHECK_LAUNCH();
    sum_partials_kernel<<<1, kThreads, 0, s>>>(p, blocks, p + blocks);
    R1_CUDA_CHECK_LAUNCH();
    result = partial.narrow(0, blocks, 1).item();
  });
  return result;
}

}  // namespace

R1_REGISTER_KERNEL(binary, CUDA, binary_cuda);
R1_REGISTER_KERNEL(reduce, CUDA, reduce_cuda);
R1_REGISTER_KERNEL(sum_squares, CUDA, sum_squares_cuda);

}  // namespace r1::cuda
