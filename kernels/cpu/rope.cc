// CPU: rotary position embedding (forward, and the inverse rotation that is its backward).
#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

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
  check_index_dtype(positions, "rope");
  const int64_t BT = x.size(0) * x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const int64_t P = cos.size(0);
  for (int64_t i = 0; i < BT; ++i) {
    const int64_t p = index_at(positions, i);
    R1_CHECK(p >= 0 && p < P, "rope: position {} outside the table's {} positions", p, P);
  }
  // Pair j lives at (j * step, j * step + other): interleaved (2j, 2j+1), halves (j, j+D/2).
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
      for (int64_t h = 0; h < H; ++h) {
        const T* xr = px + (i * H + h) * D;
        T* yr = py + (i * H + h) * D;
        for (int64_t j = 0; j < half; ++j) {
          const T a = xr[j * step], b = xr[j * step + other];
          const T cj = c[j], sj = sgn * s[j];
          yr[j * step] = a * cj - b * sj;
          yr[j * step + other] = a * sj + b * cj;
        }
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(rope, CPU, rope_cpu);

}  // namespace r1::cpu
