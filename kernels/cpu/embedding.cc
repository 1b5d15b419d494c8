// CPU: embedding forward (row gather) and backward (row scatter-add).
#include <cstring>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// Ids are validated serially before any parallel loop: an exception must not leave an
// OpenMP region.
void check_ids(const Tensor& ids, int64_t V, const char* op) {
  check_index_dtype(ids, op);
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t id = index_at(ids, n);
    R1_CHECK(id >= 0 && id < V, "{}: id {} at position {} outside the table's {} rows", op, id,
             n, V);
  }
}

// ids (N) int, table (V, D) float -> out (N, D).
void embedding_forward_cpu(const Tensor& ids, const Tensor& table, Tensor& out) {
  R1_CHECK(table.dim() == 2 && out.dim() == 2 && out.size(0) == ids.numel() &&
               out.size(1) == table.size(1),
           "embedding_forward: ids {}, table {}, out {}", shape_str(ids.shape()),
           shape_str(table.shape()), shape_str(out.shape()));
  const int64_t N = ids.numel(), V = table.size(0), D = table.size(1);
  check_ids(ids, V, "embedding_forward");
  dispatch_float(table.dtype(), "embedding_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* tab = table.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for if (worth_parallel(N * D))
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(o + n * D, tab + index_at(ids, n) * D, sizeof(T) * D);
  });
}

// Accumulates dtable[ids[n], :] += dout[n, :]; ids (N), dout (N, D), dtable (V, D).
// Repeated ids make a parallel loop over n race, so threads split the D columns instead:
// each thread walks all rows in order, so sums are deterministic for any thread count.
void embedding_backward_cpu(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  R1_CHECK(dtable.dim() == 2 && dout.dim() == 2 && dout.size(0) == ids.numel() &&
               dout.size(1) == dtable.size(1) && dout.dtype() == dtable.dtype(),
           "embedding_backward: ids {}, dout {}, dtable {}", shape_str(ids.shape()),
           dout.str(), dtable.str());
  const int64_t N = ids.numel(), V = dtable.size(0), D = dtable.size(1);
  check_ids(ids, V, "embedding_backward");
  dispatch_float(dtable.dtype(), "embedding_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = dout.data<T>();
    T* dt = dtable.data<T>();
    constexpr int64_t kColBlock = 64;  // one thread's column slice: a few cache lines
    const int64_t nblocks = (D + kColBlock - 1) / kColBlock;
#pragma omp parallel for if (worth_parallel(N * D) && nblocks > 1)
    for (int64_t cb = 0; cb < nblocks; ++cb) {
      const int64_t c0 = cb * kColBlock, c1 = std::min(D, c0 + kColBlock);
      for (int64_t n = 0; n < N; ++n) {
        T* dst = dt + index_at(ids, n) * D;
        const T* src = g + n * D;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(embedding_forward, CPU, embedding_forward_cpu);
R1_REGISTER_KERNEL(embedding_backward, CPU, embedding_backward_cpu);

}  // namespace r1::cpu
