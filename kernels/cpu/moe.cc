// CPU: the MoE router kernels (contracts in engine/kernels_moe.h), the reference for
// kernels/cuda/moe/route.cu. Computes in the logits' dtype (f32 or f64), except the sigmoid,
// formed in f64 and rounded once so that every backend chooses the same experts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/kernels_moe.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

bool cpu_float(DType t) { return t == DType::F32 || t == DType::F64; }

// sigmoid in f64, rounded once to T (the contract's cross-backend rule).
template <class T>
T sigmoid_score(T x) {
  return static_cast<T>(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
}

// (a, ia) ranks before (b, ib): higher score first, ties by lower index.
template <class T>
bool ranks_before(T a, int64_t ia, T b, int64_t ib) {
  return a > b || (a == b && ia < ib);
}

// Per-thread scratch of one token row.
template <class T>
struct RouteScratch {
  std::vector<T> s, b, group_score;
  std::vector<int64_t> order;
  explicit RouteScratch(int64_t E, int64_t n_group)
      : s(E), b(E), group_score(n_group), order(E) {}
};

// Gate.forward for one token: x (E) -> idx (K), w (K); returns S = sum of the chosen s.
template <class T>
T route_row(const T* x, const T* bias, const MoeRouteConfig& c, int64_t E, RouteScratch<T>& r,
            int64_t* idx, T* w) {
  for (int64_t e = 0; e < E; ++e) {
    r.s[e] = sigmoid_score(x[e]);
    r.b[e] = r.s[e] + bias[e];
  }
  if (c.n_group > 1) {
    const int64_t G = E / c.n_group;
    for (int64_t g = 0; g < c.n_group; ++g) {  // top1 + top2 of the group's biased scores
      T m1 = -INFINITY, m2 = -INFINITY;
      for (int64_t e = g * G; e < g * G + G; ++e) {
        const T v = r.b[e];
        if (v > m1) m2 = m1, m1 = v;
        else if (v > m2) m2 = v;
      }
      r.group_score[g] = m1 + m2;
    }
    for (int64_t g = 0; g < c.n_group; ++g) {
      int64_t rank = 0;
      for (int64_t h = 0; h < c.n_group; ++h)
        rank += ranks_before(r.group_score[h], h, r.group_score[g], g);
      if (rank >= c.topk_group)  // a dropped group: -inf, as DeepSeek (HF fills 0.0)
        for (int64_t e = g * G; e < g * G + G; ++e) r.b[e] = -INFINITY;
    }
  }
  std::iota(r.order.begin(), r.order.end(), int64_t{0});
  const int64_t K = c.top_k;
  std::partial_sort(r.order.begin(), r.order.begin() + K, r.order.end(),
                    [&](int64_t i, int64_t j) { return ranks_before(r.b[i], i, r.b[j], j); });
  T S = 0;
  for (int64_t k = 0; k < K; ++k) S += r.s[r.order[k]];
  const T scale = static_cast<T>(c.routed_scaling_factor);
  for (int64_t k = 0; k < K; ++k) {
    idx[k] = r.order[k];
    T v = r.s[r.order[k]];
    if (c.norm_topk_prob) v = v / S;
    w[k] = v * scale;
  }
  return S;
}

// logits (N, E), bias (E) -> indices (N, K) i64, weights (N, K), denom (N), load (E) i64.
void moe_route_forward_cpu(const Tensor& logits, const Tensor& bias, const MoeRouteConfig& cfg,
                           Tensor& indices, Tensor& weights, Tensor& denom, Tensor& load) {
  check_moe_route_forward(logits, bias, cfg, indices, weights, denom, load,
                          cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), E = logits.size(1), K = cfg.top_k;
  int64_t* pi = indices.data<int64_t>();
  dispatch_float(logits.dtype(), "moe_route_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    const T* pb = bias.data<T>();
    T* pw = weights.data<T>();
    T* pd = denom.data<T>();
#pragma omp parallel if (worth_parallel(N * E * 4))
    {
      RouteScratch<T> r(E, cfg.n_group);
#pragma omp for
      for (int64_t n = 0; n < N; ++n)
        pd[n] = route_row(px + n * E, pb, cfg, E, r, pi + n * K, pw + n * K);
    }
  });
  int64_t* pl = load.data<int64_t>();
  std::fill(pl, pl + E, int64_t{0});
  for (int64_t i = 0; i < N * K; ++i) ++pl[pi[i]];
}

// logits (N, E), indices (N, K), denom (N), dweights (N, K) -> dlogits (N, E).
void moe_route_backward_cpu(const Tensor& logits, const Tensor& indices, const Tensor& denom,
                            const Tensor& dweights, const MoeRouteConfig& cfg,
                            Tensor& dlogits) {
  check_moe_route_backward(logits, indices, denom, dweights, cfg, dlogits,
                           cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), E = logits.size(1), K = cfg.top_k;
  const int64_t* pi = indices.data<int64_t>();
  dispatch_float(logits.dtype(), "moe_route_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    const T* pd = denom.data<T>();
    const T* pg = dweights.data<T>();
    T* po = dlogits.data<T>();
    const T scale = static_cast<T>(cfg.routed_scaling_factor);
#pragma omp parallel for if (worth_parallel(N * E))
    for (int64_t n = 0; n < N; ++n) {
      const T* x = px + n * E;
      const int64_t* idx = pi + n * K;
      const T* g = pg + n * K;
      T* dx = po + n * E;
      std::fill(dx, dx + E, T(0));
      const T S = pd[n];
      T dot = 0;  // sum_j g_j s_j
      for (int64_t k = 0; k < K; ++k) dot += g[k] * sigmoid_score(x[idx[k]]);
      for (int64_t k = 0; k < K; ++k) {
        const T s = sigmoid_score(x[idx[k]]);
        const T ds = cfg.norm_topk_prob ? scale * (g[k] - dot / S) / S : scale * g[k];
        dx[idx[k]] += ds * s * (1 - s);
      }
    }
  });
}

// The sequence of each row, from offsets (B + 1).
std::vector<int64_t> row_sequences(const Tensor& offsets, int64_t N) {
  const int64_t* po = offsets.data<int64_t>();
  std::vector<int64_t> seq(N);
  for (int64_t b = 0; b + 1 < offsets.size(0); ++b)
    for (int64_t t = po[b]; t < po[b + 1]; ++t) seq[t] = b;
  return seq;
}

// Per row: S = sum_j s_j and u = sum_j f_j s_j / S, with s written to `s` (E).
template <class T>
void balance_row(const T* x, const T* f, int64_t E, T* s, T& S, T& u) {
  S = 0;
  T dot = 0;
  for (int64_t e = 0; e < E; ++e) {
    s[e] = sigmoid_score(x[e]);
    S += s[e];
    dot += f[e] * s[e];
  }
  u = dot / S;
}

// logits (N, E), indices (N, K) int, offsets (B + 1) -> f (B, E), terms (N).
void moe_balance_loss_forward_cpu(const Tensor& logits, const Tensor& indices,
                                  const Tensor& offsets, double alpha, Tensor& f,
                                  Tensor& terms) {
  const char* what = "moe_balance_loss_forward";
  check_moe_balance_loss(what, logits, offsets, f, cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), E = logits.size(1), B = offsets.size(0) - 1;
  R1_CHECK(indices.dim() == 2 && indices.size(0) == N && indices.size(1) >= 1,
           "{}: indices {} must be (N = {}, K)", what, indices.str(), N);
  moe_detail::check_index(what, "indices", indices, indices.shape(), logits.device());
  moe_detail::check_tensor(what, "terms", terms, {N}, stat_dtype(logits.dtype()),
                           logits.device());
  const int64_t K = indices.size(1);
  const int64_t* po = offsets.data<int64_t>();
  const std::vector<int64_t> seq = row_sequences(offsets, N);
  dispatch_float(logits.dtype(), what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pf = f.data<T>();
    std::vector<int64_t> count(B * E, 0);
    for (int64_t t = 0; t < N; ++t)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = index_at(indices, t * K + k);
        R1_CHECK(i >= 0 && i < E, "{}: index {} outside [0, {})", what, i, E);
        ++count[seq[t] * E + i];
      }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < E; ++i)
        pf[b * E + i] = static_cast<T>(static_cast<double>(E) * count[b * E + i] /
                                       (static_cast<double>(K) * (po[b + 1] - po[b])));
    const T* px = logits.data<T>();
    T* pt = terms.data<T>();
#pragma omp parallel if (worth_parallel(N * E))
    {
      std::vector<T> s(E);
#pragma omp for
      for (int64_t t = 0; t < N; ++t) {
        const int64_t b = seq[t];
        T S, u;
        balance_row(px + t * E, pf + b * E, E, s.data(), S, u);
        pt[t] = static_cast<T>(alpha / (static_cast<double>(B) * (po[b + 1] - po[b]))) * u;
      }
    }
  });
}

// logits (N, E), offsets (B + 1), f (B, E), dloss () -> dlogits (N, E).
void moe_balance_loss_backward_cpu(const Tensor& logits, const Tensor& offsets, const Tensor& f,
                                   const Tensor& dloss, double alpha, Tensor& dlogits) {
  const char* what = "moe_balance_loss_backward";
  check_moe_balance_loss(what, logits, offsets, f, cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), E = logits.size(1), B = offsets.size(0) - 1;
  moe_detail::check_tensor(what, "dloss", dloss, {}, stat_dtype(logits.dtype()),
                           logits.device());
  moe_detail::check_tensor(what, "dlogits", dlogits, logits.shape(), logits.dtype(),
                           logits.device());
  const int64_t* po = offsets.data<int64_t>();
  const std::vector<int64_t> seq = row_sequences(offsets, N);
  dispatch_float(logits.dtype(), what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    const T* pf = f.data<T>();
    T* pd = dlogits.data<T>();
    const T g = *dloss.data<T>();
#pragma omp parallel if (worth_parallel(N * E))
    {
      std::vector<T> s(E);
#pragma omp for
      for (int64_t t = 0; t < N; ++t) {
        const int64_t b = seq[t];
        T S, u;
        balance_row(px + t * E, pf + b * E, E, s.data(), S, u);
        const T coef = g * static_cast<T>(alpha / (static_cast<double>(B) *
                                                   (po[b + 1] - po[b])));
        for (int64_t e = 0; e < E; ++e)
          pd[t * E + e] = coef * (pf[b * E + e] - u) / S * s[e] * (1 - s[e]);
      }
    }
  });
}

void moe_masked_slots_cpu(const Tensor& indices, int64_t cap, Tensor& dest, Tensor& counts) {
  check_moe_masked_slots(indices, cap, dest, counts);
  const int64_t P = indices.numel(), E = counts.numel();
  const int64_t* idx = indices.data<int64_t>();
  int64_t* out = dest.data<int64_t>();
  int64_t* cnt = counts.data<int64_t>();
  std::fill(cnt, cnt + E, int64_t{0});
  for (int64_t p = 0; p < P; ++p) {
    const int64_t e = idx[p];
    R1_CHECK(e >= 0 && e < E, "moe_masked_slots: pair {} chose expert {} of {}", p, e, E);
    R1_CHECK(cnt[e] < cap, "moe_masked_slots: expert {} gets more than cap = {} pairs", e, cap);
    out[p] = e * cap + cnt[e]++;
  }
}

void moe_scatter_rows_cpu(const Tensor& src, const Tensor& dest, Tensor& dst) {
  check_moe_scatter_rows(src, dest, dst);
  const int64_t N = src.size(0), P = dest.numel(), R = dst.size(0);
  if (P == 0) return;
  const int64_t K = P / N;
  const size_t row_bytes = static_cast<size_t>(src.size(1)) * dtype_size(src.dtype());
  const int64_t* d = dest.data<int64_t>();
  std::vector<char> seen(static_cast<size_t>(R), 0);
  for (int64_t p = 0; p < P; ++p) {
    R1_CHECK(d[p] >= 0 && d[p] < R && !seen[static_cast<size_t>(d[p])],
             "moe_scatter_rows: pair {} goes to row {} (of {}, each at most once)", p, d[p], R);
    seen[static_cast<size_t>(d[p])] = 1;
  }
  const char* s = static_cast<const char*>(src.data_ptr());
  char* o = static_cast<char*>(dst.data_ptr());
  for (int64_t p = 0; p < P; ++p)
    std::memcpy(o + static_cast<size_t>(d[p]) * row_bytes,
                s + static_cast<size_t>(p / K) * row_bytes, row_bytes);
}

// bias (E) += gamma * sign(sum(load) - E * load_i).
void moe_update_bias_cpu(Tensor& bias, const Tensor& load, double gamma) {
  check_moe_update_bias(bias, load, cpu_float(bias.dtype()));
  const int64_t E = bias.size(0);
  int64_t total = 0;
  for (int64_t i = 0; i < E; ++i) total += index_at(load, i);
  dispatch_float(bias.dtype(), "moe_update_bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pb = bias.data<T>();
    for (int64_t i = 0; i < E; ++i) {
      const int64_t d = total - E * index_at(load, i);
      pb[i] += static_cast<T>(gamma * ((d > 0) - (d < 0)));
    }
  });
}

// ---- moe_combine ----------------------------------------------------------------------
// Each token's output row from its K pairs (contract in engine/kernels_moe.h); tokens split
// over the threads, a row's sum always in k order, products and sums rounded apart.
void check_combine(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                   const Tensor& row, int64_t N, int64_t D, const char* op) {
  // row undefined (forward only): pair p reads row p / K, its own token's.
  R1_CHECK(!ys.empty() && w.dim() == 1 && w.is_contiguous() && part.dtype() == DType::I64 &&
               part.is_contiguous() && part.numel() == w.numel() &&
               (!row.defined() || (row.dtype() == DType::I64 && row.is_contiguous() &&
                                   row.numel() == w.numel())) &&
               N > 0 && w.numel() % N == 0,
           "{}: w {}, part {}, row {} for {} tokens", op, w.str(), part.str(), row.str(), N);
  for (const Tensor& y : ys)
    R1_CHECK(y.dim() == 2 && y.size(1) == D && y.is_contiguous() && y.dtype() == w.dtype(),
             "{}: expert output {} must be a contiguous (n, {}) {}", op, y.str(), D,
             dtype_name(w.dtype()));
}

void moe_combine_forward_cpu(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                             const Tensor& row, Tensor& y) {
  const int64_t N = y.size(0), D = y.size(1), P = w.numel(), K = P / N;
  check_combine(ys, w, part, row, N, D, "moe_combine");
  dispatch_float(y.dtype(), "moe_combine", [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<const T*> base(ys.size());
    for (size_t j = 0; j < ys.size(); ++j) base[j] = ys[j].template data<T>();
    const T* pw = w.data<T>();
    const int64_t* pp = part.data<int64_t>();
    const int64_t* pr = row.defined() ? row.data<int64_t>() : nullptr;
    const int64_t E = static_cast<int64_t>(ys.size());
    for (int64_t p = 0; p < P; ++p)
      R1_CHECK(pp[p] >= 0 && pp[p] < E && (pr ? pr[p] : p / K) < ys[pp[p]].size(0),
               "moe_combine: pair {} reads row {} of expert output {} (of {})", p,
               pr ? pr[p] : p / K, pp[p], E);
    T* out = y.data<T>();
#pragma omp parallel for schedule(static) if (N * D * K >= (1 << 16))
    for (int64_t t = 0; t < N; ++t) {
      T* o = out + t * D;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t p = t * K + k;
        const T wk = pw[p];
        const T* src = base[pp[p]] + (pr ? pr[p] : t) * D;
        if (k == 0) {
          for (int64_t d = 0; d < D; ++d) o[d] = wk * src[d];
        } else {
          for (int64_t d = 0; d < D; ++d) {
            const T prod = wk * src[d];  // rounded: the contract has no FMA
            o[d] = o[d] + prod;
          }
        }
      }
    }
  });
}

void moe_combine_backward_cpu(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                              const Tensor& row, const Tensor& dy, std::vector<Tensor>& dys,
                              Tensor& dw) {
  const int64_t N = dy.size(0), D = dy.size(1), P = w.numel(), K = P / N;
  check_combine(ys, w, part, row, N, D, "moe_combine backward");
  R1_CHECK(row.defined(), "moe_combine backward: needs the rows of the pairs");
  R1_CHECK(dy.is_contiguous() && dys.size() == ys.size(),
           "moe_combine backward: dy {} and {} grads for {} experts", dy.str(), dys.size(),
           ys.size());
  dispatch_float(dy.dtype(), "moe_combine backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<const T*> base(ys.size());
    std::vector<T*> dbase(ys.size());
    for (size_t j = 0; j < ys.size(); ++j) {
      base[j] = ys[j].template data<T>();
      dbase[j] = dys[j].template data<T>();
    }
    const T* pw = w.data<T>();
    const int64_t* pp = part.data<int64_t>();
    const int64_t* pr = row.data<int64_t>();
    const T* g = dy.data<T>();
    T* pdw = dw.defined() ? dw.data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (N * D * K >= (1 << 16))
    for (int64_t t = 0; t < N; ++t) {
      const T* gt = g + t * D;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t p = t * K + k;
        const T wk = pw[p];
        T* dst = dbase[pp[p]] + pr[p] * D;
        for (int64_t d = 0; d < D; ++d) dst[d] = wk * gt[d];
        if (pdw) {
          const T* src = base[pp[p]] + pr[p] * D;
          T s = 0;
          for (int64_t d = 0; d < D; ++d) {
            const T prod = gt[d] * src[d];
            s = s + prod;
          }
          pdw[p] = s;
        }
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(moe_combine_forward, CPU, moe_combine_forward_cpu);
R1_REGISTER_KERNEL(moe_combine_backward, CPU, moe_combine_backward_cpu);

R1_REGISTER_KERNEL(moe_route_forward, CPU, moe_route_forward_cpu);
R1_REGISTER_KERNEL(moe_route_backward, CPU, moe_route_backward_cpu);
R1_REGISTER_KERNEL(moe_balance_loss_forward, CPU, moe_balance_loss_forward_cpu);
R1_REGISTER_KERNEL(moe_balance_loss_backward, CPU, moe_balance_loss_backward_cpu);
R1_REGISTER_KERNEL(moe_update_bias, CPU, moe_update_bias_cpu);
R1_REGISTER_KERNEL(moe_masked_slots, CPU, moe_masked_slots_cpu);
R1_REGISTER_KERNEL(moe_scatter_rows, CPU, moe_scatter_rows_cpu);

}  // namespace r1::cpu
