// Probes of the Hopper building blocks (common/hopper.cuh, common/tma.cu) one at a time, for
// the tests (test_fp8: Fp8Cuda.HopperProbe*). The FP8 wgmma GEMM combines a tensor map, the
// 128-byte swizzle, mbarriers, smem descriptors, wgmma and its accumulator fragment; when its
// end-to-end test fails, these say which of them is wrong:
//  - hopper_probe_tma_box: what one TMA copy leaves in shared memory, byte for byte (where
//    the swizzle puts each byte, and the zeros past the matrix's rows and row bytes);
//  - hopper_probe_wgmma: one 64 x N x 128 product through the descriptors of the GEMM and its
//    fragment map, from operands placed in shared memory either by TMA or by plain stores at
//    the positions the swizzle is documented to use;
//  - hopper_probe_multicast: what a cluster of two CTAs holds after each multicast half of a
//    box to both, with the arrivals on each other's barriers that the "c2" GEMMs use.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace r1::cuda {

// src: (rows, pitch) u8 (or e4m3) on the GPU, contiguous, pitch a multiple of 16; the tensor
// map covers row_bytes <= pitch bytes of each row. Returns (box_rows, 128) u8 on the GPU: the
// shared memory (1024-byte aligned) after one TMA copy of the box whose first byte is
// (row0, col0).
Tensor hopper_probe_tma_box(const Tensor& src, int64_t row_bytes, int64_t row0, int64_t col0,
                            int box_rows);

// a (64, 128), b (n, 128) e4m3 on the GPU, contiguous, n = 64 or 128. Returns d (64, n) f32 on
// the GPU, d = a b^T: four m64nNk32 wgmma steps over one 128-byte k-block (descriptors from
// smem_desc_sw128 and desc_advance, as the GEMM issues them), d written through the fragment
// map hopper.cuh documents. via_tma: the operands are copied into shared memory by TMA (as in
// the GEMM); else each thread stores 16-byte chunks where the 128-byte swizzle places them.
Tensor hopper_probe_wgmma(const Tensor& a, const Tensor& b, bool via_tma);

// src: (rows, 128) u8 on the GPU, contiguous, rows <= 256 and a multiple of 16. A cluster of
// two CTAs; CTA r copies rows [r rows / 2, (r + 1) rows / 2) by one TMA multicast into both
// CTAs' shared memory (at r rows / 2 x 128 bytes), each CTA's barrier expecting all rows; each
// CTA also arrives once on its own and once on its peer's second barrier (mbar_arrive_cluster)
// and waits for both arrivals. Returns (2, rows, 128) u8: each CTA's shared memory after both,
// which must equal hopper_probe_tma_box(src, 128, 0, 0, rows) in both.
Tensor hopper_probe_multicast(const Tensor& src);

}  // namespace r1::cuda
