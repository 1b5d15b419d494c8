// CUDA indexing kernels: gather / scatter_add along the middle dim of (outer, D, inner),
// index_select / index_add of whole (inner) rows, embedding forward / backward (the same row
// kernels with outer = 1, inner = D). Contracts in engine/kernels.h; the CPU kernels
// (kernels/cpu/indexing.cc, embedding.cc) are the reference (tests/test_cuda_index.cc).
//
// Memory bound (ceiling: HBM bandwidth); not yet measured. One thread per element (per
// 16-byte word for row copies whose rows and pointers allow it). Index tensors are i32 or
// i64.
//
// Out-of-range indices: the CPU checks every index before writing; here the kernels check as
// they go, skip a bad element and record the smallest bad position in a device flag, which
// the host reads back after the launch (a synchronous readback per call: simple, and
// correct before anything downstream uses the result; a deferred check at the next sync
// point would avoid the stall). After an error the output may be partly written.
//
// Accumulation: f32 destinations take atomicAdd directly, so the order of the adds to one
// element (and its last bits) varies run to run. bf16 destinations accumulate into an f32
// temporary of the destination's shape, then dest = bf16(dest + acc) once: adding into bf16
// atomically would round at every add and lose the small terms.
#include <algorithm>
#include <cstdint>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "engine/step_graph.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

// ---- launch helpers (as in basic.cu) ---------------------------------------------------

void check_float(DType t, const char* op) {
  R1_CHECK(t == DType::F32 || t == DType::BF16, "{}: CUDA kernels take f32 or bf16, got {}", op,
           dtype_name(t));
}

// Calls fn(int32_t{}) or fn(int64_t{}) for the index dtype.
template <class Fn>
void dispatch_index(const Tensor& index, const char* op, Fn&& fn) {
  R1_CHECK(index.dtype() == DType::I32 || index.dtype() == DType::I64,
           "{}: index dtype must be i32 or i64, got {}", op, dtype_name(index.dtype()));
  if (index.dtype() == DType::I32) fn(int32_t{});
  else fn(int64_t{});
}

// Calls fn(W{}) with an unsigned word type of `bytes` bytes (1, 2, 4, 8 or 16).
template <class Fn>
void dispatch_word(size_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1: return fn(uint8_t{});
    case 2: return fn(uint16_t{});
    case 4: return fn(uint32_t{});
    case 8: return fn(uint64_t{});
    default: return fn(uint4{});
  }
}

// ---- bad-index flag --------------------------------------------------------------------

// The smallest flat position (in the index tensor) whose index is outside [0, bound).
// All ones means none: atomicMin keeps the first bad position whatever the thread order.
class BadIndexFlag {
 public:
  BadIndexFlag(int dev, cudaStream_t s)
      : flag_(Tensor::empty({1}, DType::I64, Device::cuda(dev))), s_(s) {
    R1_CUDA_CHECK(cudaMemsetAsync(flag_.data_ptr(), 0xFF, sizeof(int64_t), s));
  }
  unsigned long long* get() const { return static_cast<unsigned long long*>(flag_.data_ptr()); }

  // Reads the flag back (synchronizes the current stream) and throws naming the op, the
  // first bad index and its position.
  // Not while a graph is being captured (nothing can be read back then; capturing()), nor in
  // a NoHostReads step (the graph-safe decode step, also when it runs eagerly).
  void check(const Tensor& index, int64_t bound, const char* op) const {
    if (capturing(s_) || host_reads_forbidden()) return;
    const int64_t pos = flag_.to_int_vector()[0];
    if (pos < 0) return;  // all ones
    const int64_t id = index.view({-1}).narrow(0, pos, 1).to_int_vector()[0];
    R1_CHECK(id >= 0 && id < bound, "{}: index {} at position {} out of range [0, {})", op, id,
             pos, bound);
  }

 private:
  Tensor flag_;
  cudaStream_t s_;
};

// True when id is in [0, bound); else records position pos in the flag.
template <class I>
__device__ inline bool index_ok(I id, int64_t bound, int64_t pos, unsigned long long* bad) {
  if (id >= 0 && id < bound) return true;
  atomicMin(bad, static_cast<unsigned long long>(pos));
  return false;
}

// ---- kernels ---------------------------------------------------------------------------
// All four walk a (rows, width) view of the indexed side: `tpr` threads per row (the power of
// two >= width, at most a block), so the index arithmetic (64-bit divisions) is paid once per
// row, short rows do not leave most of a block idle, and long rows are swept by a whole block
// with coalesced accesses.

int threads_per_row(int64_t width) {
  int t = 1;
  while (t < kThreads && t < width) t *= 2;
  return t;
}

struct RowWalk {
  int tpr;  // threads per row, a power of two dividing kThreads
  __device__ int64_t first_row() const {
    return int64_t{blockIdx.x} * (kThreads / tpr) + threadIdx.x / tpr;
  }
  __device__ int64_t row_step() const { return int64_t{gridDim.x} * (kThreads / tpr); }
  __device__ int lane() const { return static_cast<int>(threadIdx.x) % tpr; }
};

// Launch size for `rows` rows of a walk.
int grid_for_rows(int64_t rows, const RowWalk& w, int dev) { return grid_for(rows * w.tpr, dev); }

// gather: x (outer, d, inner), index and out (outer, di, inner) seen as rows q = o * di + k of
// `inner` items: out[q, j] = x[o, index[q, j], j]. W: the element's word.
struct GatherDims {
  int64_t d, di, inner;
};

template <class W, class I>
__global__ void gather_kernel(const W* x, const I* index, W* out, int64_t rows, GatherDims m,
                              RowWalk w, unsigned long long* bad) {
  for (int64_t q = w.first_row(); q < rows; q += w.row_step()) {
    const W* xo = x + (q / m.di) * m.d * m.inner;
    for (int64_t j = w.lane(); j < m.inner; j += w.tpr) {
      const int64_t at = q * m.inner + j;
      const I id = index[at];
      if (index_ok(id, m.d, at, bad)) out[at] = xo[id * m.inner + j];
    }
  }
}

// scatter_add: dst[o, index[q, j], j] += dout[q, j]; dst f32 (dx itself, or the f32
// accumulator of a bf16 dx).
template <class T, class I>
__global__ void scatter_add_kernel(const T* dout, const I* index, float* dst, int64_t rows,
                                   GatherDims m, RowWalk w, unsigned long long* bad) {
  for (int64_t q = w.first_row(); q < rows; q += w.row_step()) {
    float* dso = dst + (q / m.di) * m.d * m.inner;
    for (int64_t j = w.lane(); j < m.inner; j += w.tpr) {
      const int64_t at = q * m.inner + j;
      const I id = index[at];
      if (index_ok(id, m.d, at, bad)) atomicAdd(dso + id * m.inner + j, to_f32(dout[at]));
    }
  }
}

// Row ops: the other side is (outer, d, width), the indexed side (outer, n, width) with rows
// q = o * n + k taking row index[k].
struct RowDims {
  int64_t d, n, width;
  __device__ int64_t source_row(int64_t q, int64_t id) const { return (q / n) * d + id; }
};

// out[q, :] = x[o, index[k], :], moved in words W of 1..16 bytes (select_rows picks).
template <class W, class I>
__global__ void select_rows_kernel(const W* x, const I* index, W* out, int64_t rows, RowDims r,
                                   RowWalk w, unsigned long long* bad) {
  for (int64_t q = w.first_row(); q < rows; q += w.row_step()) {
    const int64_t k = q % r.n;
    const I id = index[k];
    if (!index_ok(id, r.d, k, bad)) continue;
    const W* src = x + r.source_row(q, id) * r.width;
    W* o = out + q * r.width;
    for (int64_t j = w.lane(); j < r.width; j += w.tpr) o[j] = src[j];
  }
}

// dst[o, index[k], :] += dout[q, :]; dst f32 as in scatter_add_kernel. With vec4 (the row
// width a multiple of 4, dst and dout aligned for it) each thread adds 4 floats with one
// float4 atomic (sm_90): a quarter of the atomic instructions of the scalar walk, which held
// the embedding backward at 0.69 of the copy bandwidth on the H200 (ee1d294).
template <class T, class I>
__global__ void add_rows_kernel(const T* dout, const I* index, float* dst, int64_t rows,
                                RowDims r, RowWalk w, unsigned long long* bad, bool vec4) {
  for (int64_t q = w.first_row(); q < rows; q += w.row_step()) {
    const int64_t k = q % r.n;
    const I id = index[k];
    if (!index_ok(id, r.d, k, bad)) continue;
    float* d = dst + r.source_row(q, id) * r.width;
    const T* g = dout + q * r.width;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (vec4) {
      for (int64_t j = int64_t{w.lane()} * 4; j < r.width; j += int64_t{w.tpr} * 4) {
        float4 v;
        if constexpr (std::is_same_v<T, float>) {
          v = *reinterpret_cast<const float4*>(g + j);
        } else {
          const uint2 u = *reinterpret_cast<const uint2*>(g + j);
          v = make_float4(bf16_to_f32(static_cast<uint16_t>(u.x & 0xffffu)),
                          bf16_to_f32(static_cast<uint16_t>(u.x >> 16)),
                          bf16_to_f32(static_cast<uint16_t>(u.y & 0xffffu)),
                          bf16_to_f32(static_cast<uint16_t>(u.y >> 16)));
        }
        atomicAdd(reinterpret_cast<float4*>(d + j), v);
      }
      continue;
    }
#endif
    for (int64_t j = w.lane(); j < r.width; j += w.tpr) atomicAdd(d + j, to_f32(g[j]));
  }
}

// dx[i] = bf16(dx[i] + acc[i]). Elements no index reached (acc exactly 0) are left as they
// are, bit for bit, and cost no write.
__global__ void add_f32_into_bf16_kernel(uint16_t* dx, const float* acc, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float a = acc[i];
    if (a != 0.0f) dx[i] = f32_to_bf16(bf16_to_f32(dx[i]) + a);
  }
}

// Runs an accumulating launch(float* dst) into dx (f32 or bf16): straight into an f32 dx,
// or into a zeroed f32 temporary then added into a bf16 dx once. The flag is checked before
// a bf16 dx is touched, so a bad index leaves it unchanged.
template <class Launch>
void accumulate(Tensor& dx, const char* op, const BadIndexFlag& flag, const Tensor& index,
                int64_t bound, Launch launch) {
  const int dev = dx.device().index;
  const cudaStream_t s = current_stream(dev);
  if (dx.dtype() == DType::F32) {
    launch(dx.data<float>());
    flag.check(index, bound, op);
    return;
  }
  Tensor acc = Tensor::empty(dx.shape(), DType::F32, dx.device());
  R1_CUDA_CHECK(cudaMemsetAsync(acc.data_ptr(), 0, acc.nbytes(), s));
  launch(acc.data<float>());
  flag.check(index, bound, op);
  add_f32_into_bf16_kernel<<<grid_for(dx.numel(), dev), kThreads, 0, s>>>(
      dx.data<uint16_t>(), acc.data<float>(), dx.numel());
  R1_CUDA_CHECK_LAUNCH();
}

// ---- the kernels' host sides -----------------------------------------------------------

void check_3d(const Tensor& t, const char* op, const char* what) {
  R1_CHECK(t.dim() == 3 && t.is_contiguous(), "{}: {} must be contiguous (outer, D, inner), "
           "got {}", op, what, shape_str(t.shape()));
}

// x (O, Dx, I) any dtype, index (O, Di, I) int -> out (O, Di, I): out = x[o, index, n].
void gather_cuda(const Tensor& x, const Tensor& index, Tensor& out) {
  check_3d(x, "gather", "x");
  check_3d(index, "gather", "index");
  R1_CHECK(out.shape() == index.shape() && x.size(0) == index.size(0) &&
               x.size(2) == index.size(2) && out.dtype() == x.dtype() && out.is_contiguous(),
           "gather: x {} index {} out {}", x.str(), index.str(), out.str());
  if (index.numel() == 0) return;
  const int dev = out.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const BadIndexFlag flag(dev, s);
  const GatherDims m{x.size(1), index.size(1), index.size(2)};
  const int64_t rows = index.size(0) * m.di;
  const RowWalk w{threads_per_row(m.inner)};
  dispatch_index(index, "gather", [&](auto itag) {
    using I = decltype(itag);
    dispatch_word(dtype_size(x.dtype()), [&](auto wtag) {
      using W = decltype(wtag);
      gather_kernel<W, I><<<grid_for_rows(rows, w, dev), kThreads, 0, s>>>(
          static_cast<const W*>(x.data_ptr()), static_cast<const I*>(index.data_ptr()),
          static_cast<W*>(out.data_ptr()), rows, m, w, flag.get());
      R1_CUDA_CHECK_LAUNCH();
    });
  });
  flag.check(index, m.d, "gather");
}

// Accumulates dx[o, index[o, i, n], n] += dout[o, i, n]. dout, index (O, Di, I); dx (O, Dx, I)
// f32 or bf16.
void scatter_add_cuda(const Tensor& dout, const Tensor& index, Tensor& dx) {
  check_3d(dout, "scatter_add", "dout");
  check_3d(index, "scatter_add", "index");
  check_3d(dx, "scatter_add", "dx");
  R1_CHECK(dout.shape() == index.shape() && dx.size(0) == dout.size(0) &&
               dx.size(2) == dout.size(2) && dx.dtype() == dout.dtype(),
           "scatter_add: dout {} index {} dx {}", dout.str(), index.str(), dx.str());
  const int dev = dx.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(dx.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    if (index.numel() == 0) return;
    const BadIndexFlag flag(dev, s);
    const GatherDims m{dx.size(1), index.size(1), index.size(2)};
    const int64_t rows = index.size(0) * m.di;
    const RowWalk w{threads_per_row(m.inner)};
    dispatch_index(index, "scatter_add", [&](auto itag) {
      using I = decltype(itag);
      accumulate(dx, "scatter_add", flag, index, m.d, [&](float* dst) {
        scatter_add_kernel<T, I><<<grid_for_rows(rows, w, dev), kThreads, 0, s>>>(
            static_cast<const T*>(dout.data_ptr()), static_cast<const I*>(index.data_ptr()),
            dst, rows, m, w, flag.get());
        R1_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

// out (O, n, I) = x (O, Dx, I)[:, index, :]; any dtype, rows moved in the widest word (up to
// 16 bytes) that divides the row size and both pointers' alignment.
void select_rows(const Tensor& x, const Tensor& index, Tensor& out, const char* op) {
  const int64_t rows = out.size(0) * index.numel();
  const int64_t row_bytes = x.size(2) * static_cast<int64_t>(dtype_size(x.dtype()));
  if (rows * row_bytes == 0) return;
  const auto bits = static_cast<uint64_t>(row_bytes) |
                    reinterpret_cast<uintptr_t>(x.data_ptr()) |
                    reinterpret_cast<uintptr_t>(out.data_ptr());
  size_t word = 16;
  while (bits % word != 0) word /= 2;
  const int dev = out.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const BadIndexFlag flag(dev, s);
  const RowDims r{x.size(1), index.numel(), row_bytes / static_cast<int64_t>(word)};
  const RowWalk w{threads_per_row(r.width)};
  dispatch_index(index, op, [&](auto itag) {
    using I = decltype(itag);
    dispatch_word(word, [&](auto wtag) {
      using W = decltype(wtag);
      select_rows_kernel<W, I><<<grid_for_rows(rows, w, dev), kThreads, 0, s>>>(
          static_cast<const W*>(x.data_ptr()), static_cast<const I*>(index.data_ptr()),
          static_cast<W*>(out.data_ptr()), rows, r, w, flag.get());
      R1_CUDA_CHECK_LAUNCH();
    });
  });
  flag.check(index, r.d, op);
}

// Accumulates dx (O, Dx, I)[:, index, :] += dout (O, n, I); f32 or bf16.
void add_rows(const Tensor& dout, const Tensor& index, Tensor& dx, const char* op) {
  const int dev = dx.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(dx.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (dout.numel() == 0) return;
    const BadIndexFlag flag(dev, s);
    const RowDims r{dx.size(1), index.numel(), dx.size(2)};
    const int64_t rows = dout.size(0) * r.n;
    const RowWalk w{threads_per_row(r.width)};
    // 4 elements of dout per load: 16 bytes of f32, 8 of bf16.
    const bool vec4 = r.width % 4 == 0 &&
                      reinterpret_cast<uintptr_t>(dout.data_ptr()) % (4 * sizeof(T)) == 0;
    dispatch_index(index, op, [&](auto itag) {
      using I = decltype(itag);
      accumulate(dx, op, flag, index, r.d, [&](float* dst) {
        add_rows_kernel<T, I><<<grid_for_rows(rows, w, dev), kThreads, 0, s>>>(
            static_cast<const T*>(dout.data_ptr()), static_cast<const I*>(index.data_ptr()),
            dst, rows, r, w, flag.get(), vec4 && aligned16(dst));
        R1_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

// x (O, Dx, I), index (n) int -> out (O, n, I).
void index_select_cuda(const Tensor& x, const Tensor& index, Tensor& out) {
  check_3d(x, "index_select", "x");
  check_3d(out, "index_select", "out");
  R1_CHECK(index.dim() == 1 && index.is_contiguous() && out.size(0) == x.size(0) &&
               out.size(1) == index.size(0) && out.size(2) == x.size(2) &&
               out.dtype() == x.dtype(),
           "index_select: x {} index {} out {}", x.str(), index.str(), out.str());
  select_rows(x, index, out, "index_select");
}

// Accumulates dx[o, index[i], :] += dout[o, i, :]. dout (O, n, I), index (n), dx (O, Dx, I).
void index_add_cuda(const Tensor& dout, const Tensor& index, Tensor& dx) {
  check_3d(dout, "index_add", "dout");
  check_3d(dx, "index_add", "dx");
  R1_CHECK(index.dim() == 1 && index.is_contiguous() && dx.size(0) == dout.size(0) &&
               dout.size(1) == index.size(0) && dx.size(2) == dout.size(2) &&
               dx.dtype() == dout.dtype(),
           "index_add: dout {} index {} dx {}", dout.str(), index.str(), dx.str());
  add_rows(dout, index, dx, "index_add");
}

// ids (N) int, table (V, D) f32/bf16 -> out (N, D): index_select with outer = 1.
void embedding_forward_cuda(const Tensor& ids, const Tensor& table, Tensor& out) {
  R1_CHECK(table.dim() == 2 && out.dim() == 2 && out.size(0) == ids.numel() &&
               out.size(1) == table.size(1) && out.dtype() == table.dtype() &&
               ids.is_contiguous(),
           "embedding_forward: ids {}, table {}, out {}", ids.str(), table.str(), out.str());
  check_float(table.dtype(), "embedding_forward");
  Tensor out3 = out.view({1, out.size(0), out.size(1)});
  select_rows(table.view({1, table.size(0), table.size(1)}), ids.view({-1}), out3,
              "embedding_forward");
}

// Accumulates dtable[ids[n], :] += dout[n, :]; ids (N), dout (N, D), dtable (V, D) f32/bf16.
// For bf16 the f32 temporary is (V, D): 4 bytes per table element for the call's duration.
void embedding_backward_cuda(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  R1_CHECK(dtable.dim() == 2 && dout.dim() == 2 && dout.size(0) == ids.numel() &&
               dout.size(1) == dtable.size(1) && dout.dtype() == dtable.dtype() &&
               ids.is_contiguous(),
           "embedding_backward: ids {}, dout {}, dtable {}", ids.str(), dout.str(),
           dtable.str());
  Tensor dtable3 = dtable.view({1, dtable.size(0), dtable.size(1)});
  add_rows(dout.view({1, dout.size(0), dout.size(1)}), ids.view({-1}), dtable3,
           "embedding_backward");
}

}  // namespace

R1_REGISTER_KERNEL(gather, CUDA, gather_cuda);
R1_REGISTER_KERNEL(scatter_add, CUDA, scatter_add_cuda);
R1_REGISTER_KERNEL(index_select, CUDA, index_select_cuda);
R1_REGISTER_KERNEL(index_add, CUDA, index_add_cuda);
R1_REGISTER_KERNEL(embedding_forward, CUDA, embedding_forward_cuda);
R1_REGISTER_KERNEL(embedding_backward, CUDA, embedding_backward_cuda);

}  // namespace r1::cuda
