// The Hopper FP8 block-scaled GEMM: TMA loads into a ring of shared-memory stages, wgmma on
// e4m3 (sm_90a), a producer warpgroup and one or two consumer warpgroups (warp
// specialization), a persistent grid walking output tiles in a rasterized order, and the
// DeepSeek-V3 promotion: each 128-wide k-block's fp32 tensor-core partial is scaled by
// a_scales[row, kb] * b_scales[n / 128, kb] and added to fp32 registers. The same function as
// gemm_fp8_blockscaled and its grouped forms (engine/kernels.h); the simple kernel
// (gemm_fp8_simple.cu) is its on-GPU oracle in the tests.
//
// Tile shapes come from a tuned table (bench/tuned/fp8_gemm-<gpu>.tsv, written by
// r1-fp8-tune on that GPU) or, without one, a default; the choice is logged once per process.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace r1::cuda {

// One compiled configuration: block_m = 64 x consumer warpgroups (64 or 128), block_n (64,
// 128, or 256 as two slices of 128 with block_m 128), shared-memory stages, and cluster: 1, or
// 2 CTAs that take two m tiles of the same n tile and multicast b to each other (dense only:
// the grouped forms run such a configuration's tile without the cluster).
struct Fp8WgmmaConfig {
  int block_m = 128, block_n = 128, stages = 6, cluster = 1;
  std::string name() const;  // "128x128x6", "128x256x4c2"
  bool operator==(const Fp8WgmmaConfig&) const = default;
};
const std::vector<Fp8WgmmaConfig>& fp8_wgmma_configs();

// The configuration for (m, n, k) on `device`: the tuned table's entry for (n, k) at the
// nearest m at or above, else the default rule (the largest tile that still fills the
// GPU's multiprocessors). Logs once per process where the choice comes from.
Fp8WgmmaConfig fp8_wgmma_choose(int device, int64_t m, int64_t n, int64_t k);

// Where the tuned table for `device` is read from (and r1-fp8-tune writes it): $R1_FP8_TUNED,
// else <$R1_TUNED_DIR, default bench/tuned of the source tree>/fp8_gemm-<gpu name slug>.tsv.
// Format and lookup: engine/tuned_table.h (for (n, k), the entry with the smallest m at or
// above the call's m, else the largest m); a malformed table throws InputError naming the
// file and line.
std::string fp8_wgmma_table_path(int device);

// Operands as gemm_fp8_blockscaled (engine/kernels.h), plus: K a multiple of 16, a_q and b_q
// 16-byte aligned (the TMA's row pitch and base). b_scales per 128x128 block, or per 1x128
// row tile (1D1D, wgrad: each output column scaled by its own b scale per k-block, from a
// transposed copy of the scales; its own instantiations, so the block-scaled code is as
// before). config = nullptr: fp8_wgmma_choose.
void gemm_fp8_blockscaled_wgmma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                const Tensor& b_scales, Tensor& d,
                                const Fp8WgmmaConfig* config = nullptr);
// As gemm_fp8_grouped_contiguous / _masked, one launch for all groups (offsets or counts
// read on the device; no host sync). At most kFp8WgmmaMaxGroups groups.
inline constexpr int kFp8WgmmaMaxGroups = 256;
void gemm_fp8_grouped_contiguous_wgmma(const Tensor& a_q, const Tensor& a_scales,
                                       const Tensor& b_q, const Tensor& b_scales,
                                       const Tensor& offsets, Tensor& d,
                                       const Fp8WgmmaConfig* config = nullptr);
void gemm_fp8_grouped_masked_wgmma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                   const Tensor& b_scales, const Tensor& counts, Tensor& d,
                                   const Fp8WgmmaConfig* config = nullptr);

// Whether this device can run the kernel (compute capability 9.0: wgmma is sm_90a only).
bool fp8_wgmma_supported(int device);

}  // namespace r1::cuda
