// CPU: rotary position embedding (forward, and the inverse rotation that is its backward).
#include <algorithm>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// The D = 2 half features at x rotated into y: pair j lives at (j step, j step + other),
// interleaved (2j, 2j+1) or halves (j, j + half), and is the complex number a + ib multiplied
// by c[j] + i sgn s[j] (sgn -1: the inverse rotation).
template <class T>
inline void rotate(const T* x, const T* c, const T* s, T sgn, int64_t half, int64_t step,
                   int64_t other, T* y) {
  for (int64_t j = 0; j < half; ++j) {
    const T a = x[j * step], b = x[j * step + other];
    const T cj = c[j], sj = sgn * s[j];
    y[j * step] = a * cj - b * sj;
    y[j * step + other] = a * sj + b * cj;
  }
}

// Every position in [0, P) of the table: an error names the op otherwise.
void check_positions(const Tensor& positions, int64_t BT, int64_t P, const char* op) {
  check_index_dtype(positions, op);
  for (int64_t i = 0; i < BT; ++i) {
    const int64_t p = index_at(positions, i);
    R1_CHECK(p >= 0 && p < P, "{}: position {} outside the table's {} positions", op, p, P);
  }
}

// x (B, T, H, D), positions (B, T) int, cos/sin (P, D/2) -> y (B, T, H, D).
// Pair j of a head, (a, b) = (x[2j], x[2j+1]) interleaved or (x[j], x[j + D/2]) halves, is the
// complex number a + ib multiplied by cos + i sin (sin negated when inverse).
void rope_cpu(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
              bool interleaved, bool inverse, Tensor& y) {
  R1_CHECK(x.dim() == 4 && x.size(3) % 2 == 0 && positions.dim() == 2 &&
               positions.size(0) == x.size(0) && positions.size(1) == x.size(1) &&
               cos.dim() == 2 && cos.shape() == sin.shape() && cos.size(1) * 2 == x.size(3) &&
               cos.dtype() == x.dtype() && sin.dtype() == x.dtype() && y.shape() == x.shape(),
           "rope: x {}, positions {}, cos {}, sin {}, y {}", x.str(), positions.str(), cos.str(),
           sin.str(), y.str());
  const int64_t BT = x.size(0) * x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  check_positions(positions, BT, cos.size(0), "rope");
  const int64_t step = interleaved ? 2 : 1, other = interleaved ? 1 : half;
  dispatch_float(x.dtype(), "rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    const T* pc = cos.data<T>();
    const T* ps = sin.data<T>();
    T* py = y.data<T>();
    const T sgn = inverse ? T(-1) : T(1);
#pragma omp parallel for if (worth_parallel(BT * H * D))
    for (int64_t i = 0; i < BT; ++i) {
      const T* c = pc + index_at(positions, i) * half;
      const T* s = ps + index_at(positions, i) * half;
      for (int64_t h = 0; h < H; ++h)
        rotate(px + (i * H + h) * D, c, s, sgn, half, step, other, py + (i * H + h) * D);
    }
  });
}

void check_mla_table(const Tensor& positions, const Tensor& cos, const Tensor& sin, int64_t BT,
                     int64_t r, DType dt) {
  R1_CHECK(positions.dim() == 2 && positions.numel() == BT && cos.dim() == 2 &&
               cos.shape() == sin.shape() && cos.size(1) * 2 == r && r % 2 == 0 && r <= 256 &&
               cos.dtype() == dt && sin.dtype() == dt && cos.is_contiguous() && sin.is_contiguous(),
           "mla_qkv: positions {}, cos {}, sin {} for {} tokens of RoPE dim {} (even, <= 256)", positions.str(),
           cos.str(), sin.str(), BT, r);
  check_positions(positions, BT, cos.size(0), "mla_qkv");
}

void mla_qkv_forward_cpu(const Tensor& q, const Tensor& kv, const Tensor& k_rope,
                         const Tensor& positions, const Tensor& cos, const Tensor& sin,
                         bool interleaved, Tensor& qo, Tensor& ko, Tensor& vo) {
  R1_CHECK(q.dim() == 4 && kv.dim() == 4 && k_rope.dim() == 3 && qo.shape() == q.shape() &&
               ko.shape() == q.shape() && vo.dim() == 4 && q.size(0) == kv.size(0) &&
               q.size(1) == kv.size(1) && q.size(2) == kv.size(2) && k_rope.size(0) == q.size(0) &&
               k_rope.size(1) == q.size(1) && q.size(3) > k_rope.size(2) &&
               vo.shape() == Shape({q.size(0), q.size(1), q.size(2), kv.size(3) - (q.size(3) - k_rope.size(2))}) &&
               q.is_contiguous() && kv.is_contiguous() && k_rope.is_contiguous() &&
               kv.dtype() == q.dtype() && k_rope.dtype() == q.dtype() && qo.dtype() == q.dtype() &&
               ko.dtype() == q.dtype() && vo.dtype() == q.dtype(),
           "mla_qkv: q {}, kv {}, k_rope {}, qo {}, ko {}, vo {}", q.str(), kv.str(), k_rope.str(),
           qo.str(), ko.str(), vo.str());
  const int64_t BT = q.size(0) * q.size(1), H = q.size(2), Dq = q.size(3), r = k_rope.size(2);
  const int64_t n = Dq - r, Dkv = kv.size(3), vd = Dkv - n, half = r / 2;
  check_mla_table(positions, cos, sin, BT, r, q.dtype());
  const int64_t step = interleaved ? 2 : 1, other = interleaved ? 1 : half;
  dispatch_float(q.dtype(), "mla_qkv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pq = q.data<T>();
    const T* pkv = kv.data<T>();
    const T* pkr = k_rope.data<T>();
    T* pqo = qo.data<T>();
    T* pko = ko.data<T>();
    T* pvo = vo.data<T>();
#pragma omp parallel for if (worth_parallel(BT * H * (2 * Dq + vd)))
    for (int64_t i = 0; i < BT; ++i) {
      const int64_t p = index_at(positions, i);
      const T* c = cos.data<T>() + p * half;
      const T* s = sin.data<T>() + p * half;
      // The shared RoPE key, rotated once, written to every head.
      T kr[256];
      rotate(pkr + i * r, c, s, T(1), half, step, other, kr);
      for (int64_t h = 0; h < H; ++h) {
        const T* qr = pq + (i * H + h) * Dq;
        const T* kvr = pkv + (i * H + h) * Dkv;
        T* qor = pqo + (i * H + h) * Dq;
        T* kor = pko + (i * H + h) * Dq;
        std::copy(qr, qr + n, qor);
        rotate(qr + n, c, s, T(1), half, step, other, qor + n);
        std::copy(kvr, kvr + n, kor);
        std::copy(kr, kr + r, kor + n);
        std::copy(kvr + n, kvr + Dkv, pvo + (i * H + h) * vd);
      }
    }
  });
}

void mla_qkv_backward_cpu(const Tensor& dqo, const Tensor& dko, const Tensor& dvo,
                          const Tensor& positions, const Tensor& cos, const Tensor& sin,
                          bool interleaved, Tensor& dq, Tensor& dkv, Tensor& dk_rope) {
  R1_CHECK(dqo.dim() == 4 && dko.shape() == dqo.shape() && dvo.dim() == 4 &&
               dq.shape() == dqo.shape() && dk_rope.dim() == 3 && dkv.dim() == 4 &&
               dvo.size(0) == dqo.size(0) && dvo.size(1) == dqo.size(1) && dvo.size(2) == dqo.size(2) &&
               dk_rope.size(0) == dqo.size(0) && dk_rope.size(1) == dqo.size(1) &&
               dqo.size(3) > dk_rope.size(2) &&
               dkv.shape() == Shape({dqo.size(0), dqo.size(1), dqo.size(2), dqo.size(3) - dk_rope.size(2) + dvo.size(3)}) &&
               dqo.is_contiguous() && dko.is_contiguous() && dvo.is_contiguous() &&
               dko.dtype() == dqo.dtype() && dvo.dtype() == dqo.dtype() && dq.dtype() == dqo.dtype() &&
               dkv.dtype() == dqo.dtype() && dk_rope.dtype() == dqo.dtype(),
           "mla_qkv backward: dqo {}, dko {}, dvo {}, dq {}, dkv {}, dk_rope {}", dqo.str(),
           dko.str(), dvo.str(), dq.str(), dkv.str(), dk_rope.str());
  const int64_t BT = dqo.size(0) * dqo.size(1), H = dqo.size(2), Dq = dqo.size(3), r = dk_rope.size(2);
  const int64_t n = Dq - r, vd = dvo.size(3), Dkv = n + vd, half = r / 2;
  check_mla_table(positions, cos, sin, BT, r, dqo.dtype());
  const int64_t step = interleaved ? 2 : 1, other = interleaved ? 1 : half;
  dispatch_float(dqo.dtype(), "mla_qkv backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdqo = dqo.data<T>();
    const T* pdko = dko.data<T>();
    const T* pdvo = dvo.data<T>();
    T* pdq = dq.data<T>();
    T* pdkv = dkv.data<T>();
    T* pdkr = dk_rope.data<T>();
#pragma omp parallel for if (worth_parallel(BT * H * (2 * Dq + vd)))
    for (int64_t i = 0; i < BT; ++i) {
      const int64_t p = index_at(positions, i);
      const T* c = cos.data<T>() + p * half;
      const T* s = sin.data<T>() + p * half;
      T acc[256];
      std::fill(acc, acc + r, T(0));
      for (int64_t h = 0; h < H; ++h) {
        const T* gq = pdqo + (i * H + h) * Dq;
        const T* gk = pdko + (i * H + h) * Dq;
        T* oq = pdq + (i * H + h) * Dq;
        T* okv = pdkv + (i * H + h) * Dkv;
        std::copy(gq, gq + n, oq);
        rotate(gq + n, c, s, T(-1), half, step, other, oq + n);
        std::copy(gk, gk + n, okv);
        std::copy(pdvo + (i * H + h) * vd, pdvo + (i * H + h + 1) * vd, okv + n);
        for (int64_t j = 0; j < r; ++j) acc[j] += gk[n + j];
      }
      rotate(acc, c, s, T(-1), half, step, other, pdkr + i * r);
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(rope, CPU, rope_cpu);
R1_REGISTER_KERNEL(mla_qkv_forward, CPU, mla_qkv_forward_cpu);
R1_REGISTER_KERNEL(mla_qkv_backward, CPU, mla_qkv_backward_cpu);

}  // namespace r1::cpu
