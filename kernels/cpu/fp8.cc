// CPU fp8 (DeepSeek-V3 block scaling): quantize_fp8_rows, quantize_fp8_blocks and
// gemm_fp8_blockscaled. Contracts in engine/kernels.h. These are the references: the CUDA
// quantizers must match them bit for bit (tests/test_fp8.cc), and the GEMM here computes in
// f64, so a CUDA GEMM compared with it sees its own error and nothing else.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/convert.h"
#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// Element i of a contiguous f32 or bf16 tensor, widened to f32 (exact).
inline float load_f32(const void* p, bool bf16, int64_t i) {
  return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// The contract's scale of a tile whose largest |x| is amax, in f32 as every backend does it.
// amax / 448, or 1 when that is 0 (an all-zero tile, or an f32 amax so small that the
// division underflows: x / 0 would make NaN codes of the tile's zeros); engine/kernels.h.
inline float scale_from_amax(float amax) {
  const float s = amax / kE4M3Max;
  return s == 0.0f ? 1.0f : s;
}

// 1x128 tiles along `lines` lines of `len` elements each: element e of line l is x[l * lstep
// + e * estep]; its code goes to q[l * len + e] and tile b's scale to scales[l * nb + b]. Rows
// (lstep = K, estep = 1) and x^T read in place (lstep = 1, estep = K) are the same loop, so
// the transposed quantizer gives quantize_fp8_rows(x^T)'s bits by construction.
// The amax is fmax's (a NaN is ignored): `v > amax` is false for a NaN v and amax starts at
// 0, so the comparison keeps fmax's result without its libm call per element (which made this
// loop a sixth of an fp8 training step on the CPU).
template <bool kBf16>
void quantize_lines_t(const void* xp, int64_t lines, int64_t len, int64_t lstep, int64_t estep,
                      uint8_t* qp, float* sp) {
  const int64_t nb = fp8_blocks(len);
#pragma omp parallel for schedule(static) if (worth_parallel(lines * len))
  for (int64_t l = 0; l < lines; ++l) {
    float v[kFp8Block];
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t e0 = b * kFp8Block, n = std::min(len, e0 + kFp8Block) - e0;
      // 8 running maxima (independent chains: loads and compares in flight), then their max:
      // the same value in any order, a NaN in none of them.
      float m8[8] = {};
      for (int64_t e = 0; e < n; ++e) {
        v[e] = load_f32(xp, kBf16, l * lstep + (e0 + e) * estep);
        const float a = std::fabs(v[e]);
        m8[e & 7] = a > m8[e & 7] ? a : m8[e & 7];
      }
      float amax = 0.0f;
      for (float m : m8) amax = m > amax ? m : amax;
      const float s = scale_from_amax(amax);
      sp[l * nb + b] = s;
      for (int64_t e = 0; e < n; ++e) qp[l * len + e0 + e] = f32_to_e4m3(v[e] / s);
    }
  }
}

void quantize_lines(const Tensor& x, int64_t lines, int64_t len, int64_t lstep, int64_t estep,
                    Tensor& q, Tensor& scales) {
  if (x.dtype() == DType::BF16)
    quantize_lines_t<true>(x.data_ptr(), lines, len, lstep, estep, q.data<uint8_t>(),
                           scales.data<float>());
  else
    quantize_lines_t<false>(x.data_ptr(), lines, len, lstep, estep, q.data<uint8_t>(),
                            scales.data<float>());
}

// x (M, K) f32/bf16 -> q (M, K) e4m3, scales (M, KB) f32: one scale per 1x128 tile.
void quantize_fp8_rows_cpu(const Tensor& x, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_rows", x, q, scales, 1);
  quantize_lines(x, x.size(0), x.size(1), x.size(1), 1, q, scales);
}

// x (M, K) f32/bf16 -> q (K, M) e4m3, scales (K, MB) f32: quantize_fp8_rows of x^T, reading x
// in place.
void quantize_fp8_rows_transposed_cpu(const Tensor& x, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_rows_transposed", x, q, scales, 1, /*transposed=*/true);
  quantize_lines(x, x.size(1), x.size(0), 1, x.size(1), q, scales);
}

// swiglu then quantize rows: on the CPU the composition itself (the fusion saves nothing
// here; the CUDA kernel is one pass and must equal the CUDA composition).
void swiglu_quantize_fp8_cpu(const Tensor& gate, const Tensor& up, Tensor& out, Tensor& q,
                             Tensor& scales) {
  kernels::swiglu_forward()(gate.device(), gate, up, out);
  quantize_fp8_rows_cpu(out, q, scales);
}

// rmsnorm then quantize rows: the composition, as for swiglu above.
void rmsnorm_quantize_fp8_cpu(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                              Tensor& rstd, Tensor& q, Tensor& scales) {
  kernels::rmsnorm_forward()(x.device(), x, w, eps, y, rstd);
  quantize_fp8_rows_cpu(y, q, scales);
}

// w (N, K) f32/bf16 -> q (N, K) e4m3, scales (NB, KB) f32: one scale per 128x128 block.
void quantize_fp8_blocks_cpu(const Tensor& w, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_blocks", w, q, scales, kFp8Block);
  const int64_t n = w.size(0), k = w.size(1), nb_count = fp8_blocks(n), kb_count = fp8_blocks(k);
  const void* wp = w.data_ptr();
  const bool bf16 = w.dtype() == DType::BF16;
  uint8_t* qp = q.data<uint8_t>();
  float* sp = scales.data<float>();
#pragma omp parallel for collapse(2) schedule(static) if (worth_parallel(n * k))
  for (int64_t nb = 0; nb < nb_count; ++nb) {
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const int64_t r0 = nb * kFp8Block, r1 = std::min(n, r0 + kFp8Block);
      const int64_t c0 = kb * kFp8Block, c1 = std::min(k, c0 + kFp8Block);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::max(amax, std::fabs(load_f32(wp, bf16, r * k + c)));  // NaN: as fmax
      const float s = scale_from_amax(amax);
      sp[nb * kb_count + kb] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          qp[r * k + c] = f32_to_e4m3(load_f32(wp, bf16, r * k + c) / s);
    }
  }
}

// e4m3 codes -> their exact values in f64 (a 256-entry table: decoding once per element of
// the GEMM's inner loop would dominate it).
std::vector<double> decode_e4m3(const Tensor& q) {
  double table[256];
  for (int b = 0; b < 256; ++b) table[b] = e4m3_to_f32(static_cast<uint8_t>(b));
  const uint8_t* p = q.data<uint8_t>();
  std::vector<double> out(static_cast<size_t>(q.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = table[p[i]];
  return out;
}

// a_q (M, K) e4m3, a_scales (M, KB), b_q (N, K) e4m3, b_scales (NB, KB) or (N, KB) (1D1D)
// -> d (M, N) f64,
// f32 or bf16. Each k-block's sum is exact in f64 (an e4m3 value is a multiple of 2^-9
// below 2^9, so a product is a multiple of 2^-18 below 2^18 and a sum of 128 of them a
// multiple of 2^-18 below 2^25: 43 bits), then scaled and
// accumulated in f64; each row is rounded once into d (convert_buffer rounds f64 -> bf16
// through round-to-odd, so there is no double rounding).
void gemm_fp8_blockscaled_cpu(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                              const Tensor& b_scales, Tensor& d) {
  const DType dt = d.dtype();
  check_gemm_fp8_blockscaled(a_q, a_scales, b_q, b_scales, d,
                             dt == DType::F64 || dt == DType::F32 || dt == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), n = b_q.size(0), kb_count = fp8_blocks(k);
  if (m == 0 || n == 0) return;
  const std::vector<double> a = decode_e4m3(a_q), b = decode_e4m3(b_q);
  const float* sa = a_scales.data<float>();
  const float* sb = b_scales.data<float>();
  const int64_t b_rows_per_scale = fp8_b_row_scales(b_q, b_scales) ? 1 : kFp8Block;
  // Each k-block's (M, N) partial products through OpenBLAS's dgemm: exact in any summation
  // order (see above), so the same bits as the plain loop, at BLAS speed (the plain loop made
  // FP8 training of the toy LM 2 s a step).
  std::vector<double> acc(static_cast<size_t>(m * n), 0.0);
  const std::unique_ptr<double[]> part(new double[static_cast<size_t>(m * n)]);  // dgemm writes it
  std::vector<double> sbk(static_cast<size_t>(n));  // this k-block's scale of each column
  for (int64_t kb = 0; kb < kb_count; ++kb) {
    const int64_t k0 = kb * kFp8Block, kw = std::min(k, k0 + kFp8Block) - k0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(kw), 1.0, a.data() + k0, static_cast<int>(k), b.data() + k0,
                static_cast<int>(k), 0.0, part.get(), static_cast<int>(n));
    for (int64_t c = 0; c < n; ++c)
      sbk[static_cast<size_t>(c)] = static_cast<double>(sb[(c / b_rows_per_scale) * kb_count + kb]);
    for (int64_t r = 0; r < m; ++r) {  // serial: a few flops per element, cheaper than a fork
      const double s_a = static_cast<double>(sa[r * kb_count + kb]);
      double* ar = acc.data() + r * n;
      const double* pr = part.get() + r * n;
      for (int64_t c = 0; c < n; ++c) ar[c] += pr[c] * s_a * sbk[static_cast<size_t>(c)];
    }
  }
  char* dp = static_cast<char*>(d.data_ptr());
  const size_t row_bytes = static_cast<size_t>(n) * dtype_size(dt);
  for (int64_t r = 0; r < m; ++r)
    convert_buffer(acc.data() + r * n, DType::F64, dp + static_cast<size_t>(r) * row_bytes, dt,
                   static_cast<size_t>(n));
}

// A CPU index tensor's values (i32 or i64), read in place: not through to_int_vector, which
// a static decode step refuses (NoHostReads, engine/step_graph.h) because on a device it
// would be a read-back; here the kernel reads its own operand, as the CUDA kernel does on the
// device.
std::vector<int64_t> index_values(const Tensor& t) {
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = t.dtype() == DType::I32 ? t.data<int32_t>()[i] : t.data<int64_t>()[i];
  return v;
}

// The grouped GEMMs: each group's rows through the dense reference above (row ranges of
// contiguous tensors are contiguous views), after checking offsets / counts.
void gemm_fp8_grouped_contiguous_cpu(const Tensor& a_q, const Tensor& a_scales,
                                     const Tensor& b_q, const Tensor& b_scales,
                                     const Tensor& offsets, Tensor& d) {
  const DType dt = d.dtype();
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, offsets, d, /*masked=*/false,
                         dt == DType::F64 || dt == DType::F32 || dt == DType::BF16);
  const int64_t m = a_q.size(0), groups = b_q.size(0);
  const std::vector<int64_t> off = index_values(offsets);
  R1_CHECK(off[0] == 0 && off[groups] == m,
           "gemm_fp8_grouped_contiguous: offsets run from {} to {}, not 0 to M = {}", off[0],
           off[groups], m);
  for (int64_t g = 0; g < groups; ++g) {
    R1_CHECK(off[g + 1] >= off[g], "gemm_fp8_grouped_contiguous: offsets[{}] = {} < "
             "offsets[{}] = {}", g + 1, off[g + 1], g, off[g]);
    const int64_t rows = off[g + 1] - off[g];
    if (rows == 0) continue;
    Tensor dg = d.narrow(0, off[g], rows);
    gemm_fp8_blockscaled_cpu(a_q.narrow(0, off[g], rows), a_scales.narrow(0, off[g], rows),
                             b_q.select(0, g), b_scales.select(0, g), dg);
  }
}

void gemm_fp8_grouped_masked_cpu(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                 const Tensor& b_scales, const Tensor& counts, Tensor& d) {
  const DType dt = d.dtype();
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, counts, d, /*masked=*/true,
                         dt == DType::F64 || dt == DType::F32 || dt == DType::BF16);
  const int64_t groups = a_q.size(0), mmax = a_q.size(1);
  const std::vector<int64_t> cnt = index_values(counts);
  for (int64_t g = 0; g < groups; ++g) {
    R1_CHECK(cnt[g] >= 0 && cnt[g] <= mmax, "gemm_fp8_grouped_masked: counts[{}] = {} outside "
             "[0, Mmax = {}]", g, cnt[g], mmax);
    if (cnt[g] == 0) continue;
    Tensor dg = d.select(0, g).narrow(0, 0, cnt[g]);
    gemm_fp8_blockscaled_cpu(a_q.select(0, g).narrow(0, 0, cnt[g]),
                             a_scales.select(0, g).narrow(0, 0, cnt[g]), b_q.select(0, g),
                             b_scales.select(0, g), dg);
  }
}

// The k-grouped GEMM: each group's K columns (contiguous copies of the slices) through the
// dense reference, zeros for an empty range.
void gemm_fp8_kgrouped_cpu(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                           const Tensor& b_scales, const Tensor& k_offsets, Tensor& d) {
  check_gemm_fp8_kgrouped(a_q, a_scales, b_q, b_scales, k_offsets, d);
  const int64_t g = d.size(0), kt = a_q.size(1);
  const std::vector<int64_t> off = index_values(k_offsets);
  R1_CHECK(off[0] == 0 && off[static_cast<size_t>(g)] == kt,
           "gemm_fp8_kgrouped: k_offsets run from {} to {}, not 0 to Kt = {}", off[0],
           off[static_cast<size_t>(g)], kt);
  for (int64_t e = 0; e < g; ++e) {
    const int64_t k0 = off[static_cast<size_t>(e)], k1 = off[static_cast<size_t>(e) + 1];
    R1_CHECK(k1 >= k0 && k0 % kFp8Block == 0 && k1 % kFp8Block == 0,
             "gemm_fp8_kgrouped: k_offsets[{}] = {}, k_offsets[{}] = {}: rising multiples of 128",
             e, k0, e + 1, k1);
    Tensor de = d.select(0, e);
    if (k1 == k0) {
      de.zero_();
      continue;
    }
    const int64_t kb0 = k0 / kFp8Block, kbs = (k1 - k0) / kFp8Block;
    gemm_fp8_blockscaled_cpu(a_q.narrow(1, k0, k1 - k0).contiguous(),
                             a_scales.narrow(1, kb0, kbs).contiguous(),
                             b_q.narrow(1, k0, k1 - k0).contiguous(),
                             b_scales.narrow(1, kb0, kbs).contiguous(), de);
  }
}

// The masked form: swiglu_quantize_fp8_cpu on each group's counted rows (row slices: a row's
// bits do not depend on its neighbours).
void swiglu_quantize_fp8_masked_cpu(const Tensor& gate, const Tensor& up, const Tensor& counts,
                                    Tensor& out, Tensor& q, Tensor& scales) {
  check_swiglu_quantize_fp8_masked(gate, up, counts, out, q, scales);
  const int64_t g = gate.size(0), mmax = gate.size(1);
  const std::vector<int64_t> cnt = index_values(counts);
  for (int64_t e = 0; e < g; ++e) {
    const int64_t c = cnt[static_cast<size_t>(e)];
    R1_CHECK(c >= 0 && c <= mmax, "swiglu_quantize_fp8_masked: counts[{}] = {} outside 0..{}", e,
             c, mmax);
    if (c == 0) continue;
    Tensor o = out.select(0, e).narrow(0, 0, c), qe = q.select(0, e).narrow(0, 0, c);
    Tensor se = scales.select(0, e).narrow(0, 0, c);
    swiglu_quantize_fp8_cpu(gate.select(0, e).narrow(0, 0, c), up.select(0, e).narrow(0, 0, c),
                            o, qe, se);
  }
}

}  // namespace

R1_REGISTER_KERNEL(gemm_fp8_grouped_contiguous, CPU, gemm_fp8_grouped_contiguous_cpu);
R1_REGISTER_KERNEL(gemm_fp8_grouped_masked, CPU, gemm_fp8_grouped_masked_cpu);
R1_REGISTER_KERNEL(gemm_fp8_grouped_preferred, CPU, [] { return true; });
R1_REGISTER_KERNEL(gemm_fp8_kgrouped, CPU, gemm_fp8_kgrouped_cpu);
R1_REGISTER_KERNEL(quantize_fp8_rows, CPU, quantize_fp8_rows_cpu);
R1_REGISTER_KERNEL(quantize_fp8_blocks, CPU, quantize_fp8_blocks_cpu);
R1_REGISTER_KERNEL(quantize_fp8_rows_transposed, CPU, quantize_fp8_rows_transposed_cpu);
R1_REGISTER_KERNEL(swiglu_quantize_fp8, CPU, swiglu_quantize_fp8_cpu);
R1_REGISTER_KERNEL(swiglu_quantize_fp8_masked, CPU, swiglu_quantize_fp8_masked_cpu);
R1_REGISTER_KERNEL(rmsnorm_quantize_fp8, CPU, rmsnorm_quantize_fp8_cpu);
R1_REGISTER_KERNEL(gemm_fp8_blockscaled, CPU, gemm_fp8_blockscaled_cpu);

}  // namespace r1::cpu
