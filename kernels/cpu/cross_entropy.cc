// CPU: cross-entropy from logits, vocabulary-chunked. Forward keeps one running (max, sum)
// per row and merges chunk by chunk (online logsumexp), so nothing of size (N, V) is ever
// allocated; backward recomputes softmax from the saved lse and writes dlogits directly.
// The chunking mirrors the CUDA kernel's schedule, so both reduce in the same order.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

constexpr int64_t kVocabChunk = 4096;  // columns per chunk: 16 KiB of f32, stays in L1/L2

void check_targets(const Tensor& targets, int64_t V, int64_t ignore_index, const char* op) {
  check_index_dtype(targets, op);
  for (int64_t n = 0; n < targets.numel(); ++n) {
    const int64_t t = index_at(targets, n);
    R1_CHECK(t == ignore_index || (t >= 0 && t < V),
             "{}: target {} at row {} outside [0, {}) and not ignore_index {}", op, t, n, V,
             ignore_index);
  }
}

// Logsumexp of one row: per chunk a local max and sum, merged into the running pair.
template <class T>
T row_logsumexp(const T* x, int64_t V) {
  T m = -INFINITY, s = 0;
  for (int64_t c0 = 0; c0 < V; c0 += kVocabChunk) {
    const int64_t c1 = std::min(V, c0 + kVocabChunk);
    T cm = -INFINITY;
    for (int64_t v = c0; v < c1; ++v) cm = std::max(cm, x[v]);
    if (cm == -INFINITY) {  // only -inf (adds nothing: skipped) or a NaN (the row is NaN)
      for (int64_t v = c0; v < c1; ++v)
        if (std::isnan(x[v])) return std::numeric_limits<T>::quiet_NaN();
      continue;  // exp(-inf - (-inf)) would make a masked chunk NaN
    }
    T cs = 0;
    for (int64_t v = c0; v < c1; ++v) cs += std::exp(x[v] - cm);
    const T nm = std::max(m, cm);
    s = (m == -INFINITY ? T(0) : s * std::exp(m - nm)) + cs * std::exp(cm - nm);
    m = nm;
  }
  return m + std::log(s);
}

// logits (N, V), targets (N) int -> loss (N), lse (N).
void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               Tensor& loss, Tensor& lse) {
  R1_CHECK(logits.dim() == 2 && targets.numel() == logits.size(0) &&
               loss.numel() == logits.size(0) && lse.numel() == logits.size(0) &&
               loss.dtype() == logits.dtype() && lse.dtype() == logits.dtype(),
           "cross_entropy_forward: logits {}, targets {}, loss {}, lse {}", logits.str(),
           targets.str(), loss.str(), lse.str());
  const int64_t N = logits.size(0), V = logits.size(1);
  check_targets(targets, V, ignore_index, "cross_entropy_forward");
  dispatch_float(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    T* pl = loss.data<T>();
    T* pz = lse.data<T>();
#pragma omp parallel for if (worth_parallel(N * V))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * V;
      const T z = row_logsumexp(xr, V);
      const int64_t t = index_at(targets, n);
      pz[n] = z;
      pl[n] = t == ignore_index ? T(0) : z - xr[t];
    }
  });
}

// dlogits (N, V) = dloss[n] * (exp(logit - lse) - onehot(target)); 0 on ignored rows.
void cross_entropy_backward_cpu(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                const Tensor& dloss, int64_t ignore_index, Tensor& dlogits) {
  R1_CHECK(logits.dim() == 2 && targets.numel() == logits.size(0) &&
               lse.numel() == logits.size(0) && dloss.numel() == logits.size(0) &&
               dlogits.shape() == logits.shape() && lse.dtype() == logits.dtype() &&
               dloss.dtype() == logits.dtype() && dlogits.dtype() == logits.dtype(),
           "cross_entropy_backward: logits {}, targets {}, lse {}, dloss {}, dlogits {}",
           logits.str(), targets.str(), lse.str(), dloss.str(), dlogits.str());
  const int64_t N = logits.size(0), V = logits.size(1);
  check_targets(targets, V, ignore_index, "cross_entropy_backward");
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    const T* pz = lse.data<T>();
    const T* pg = dloss.data<T>();
    T* pd = dlogits.data<T>();
#pragma omp parallel for if (worth_parallel(N * V))
    for (int64_t n = 0; n < N; ++n) {
      const int64_t t = index_at(targets, n);
      T* dr = pd + n * V;
      if (t == ignore_index) {
        std::fill(dr, dr + V, T(0));
        continue;
      }
      const T* xr = px + n * V;
      const T z = pz[n], g = pg[n];
      for (int64_t v = 0; v < V; ++v) dr[v] = g * std::exp(xr[v] - z);
      dr[t] -= g;
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(cross_entropy_forward, CPU, cross_entropy_forward_cpu);
R1_REGISTER_KERNEL(cross_entropy_backward, CPU, cross_entropy_backward_cpu);

}  // namespace r1::cpu
