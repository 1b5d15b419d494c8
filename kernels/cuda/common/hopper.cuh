// Hopper (sm_90a) building blocks for the warp-specialized GEMMs: shared-memory addresses,
// mbarriers, the bulk tensor copy (TMA) and warpgroup MMA (wgmma) with shared-memory matrix
// descriptors for the 128-byte swizzled K-major layout. PTX ISA references: "Parallel
// Synchronization and Communication Instructions: mbarrier", "cp.async.bulk.tensor",
// "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions".
//
// The layout: a tile of R rows x 128 bytes (one 128-wide k-block of e4m3) written by TMA with
// CU_TENSOR_MAP_SWIZZLE_128B, the tile 1024-byte aligned. Row r sits at byte 128 r with its
// 16-byte chunks permuted (chunk c at c ^ (r % 8)); 8 rows form a 1024-byte swizzle atom.
// wgmma reads it through a descriptor: start address, stride byte offset = 1024 (one atom
// to the next 8 rows), layout type 128B swizzle; the leading byte offset is unused for a
// K-major swizzled operand whose k extent (32 bytes per wgmma) lies inside one atom row. The
// k-th 32-byte step of a k-block starts 32 k bytes further: the hardware applies the swizzle
// to the computed address, so advancing the start address is enough (the atom stays aligned).
#pragma once
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>

#include <cstdint>

namespace r1::cuda::hopper {

__device__ inline uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----------------------------------------------------------------------------
__device__ inline void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// Makes the initialized barriers visible to the async proxy (the TMA unit completes
// transactions on them) and, with the barrier that follows, to the other threads.
__device__ inline void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ inline void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// One arrival that also announces `bytes` of transactions (the TMA copies completing on it).
__device__ inline void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
__device__ inline uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Waits until the barrier's phase with parity `parity` has completed. A wait longer than
// kMbarTimeoutNs (a pipeline bug: an arrival or a transaction that never comes) traps, so the
// launch fails with an error instead of hanging the GPU check until its timeout kills every
// later test. Built with -DR1_MBAR_DEBUG=1 it first prints which block and thread waited; not
// by default: printf is a function call, and a call anywhere in a kernel makes ptxas serialize
// every wgmma in it ("wgmma pipeline crossing function boundary", ptxas info C7510), which
// the FP8 wgmma kernel's build printed until 2026-11-30.
// kClusterScope: acquire at cluster scope, for a barrier that peer CTAs of a cluster arrive
// on (mbar_arrive_cluster).
inline constexpr uint64_t kMbarTimeoutNs = 10'000'000'000ull;
template <bool kClusterScope = false>
__device__ inline void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_u32(bar);
  uint32_t done = 0;
  uint32_t spins = 0;
  uint64_t t0 = 0;
  do {
    if constexpr (kClusterScope) {
      asm volatile(
          "{\n.reg .pred p;\n"
          "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n}\n"
          : "=r"(done)
          : "r"(addr), "r"(parity)
          : "memory");
    } else {
      asm volatile(
          "{\n.reg .pred p;\n"
          "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n}\n"
          : "=r"(done)
          : "r"(addr), "r"(parity)
          : "memory");
    }
    if (!done && (++spins & 0xfffu) == 0) {  // rare: look at the clock every 4096 polls
      const uint64_t now = global_timer_ns();
      if (t0 == 0) {
        t0 = now;
      } else if (now - t0 > kMbarTimeoutNs) {
#if defined(R1_MBAR_DEBUG) && R1_MBAR_DEBUG
        printf("r1: mbarrier wait timed out (block %d, thread %d, parity %u)\n",
               static_cast<int>(blockIdx.x), static_cast<int>(threadIdx.x), parity);
#endif
        __trap();
      }
    }
  } while (!done);
}

// ---- clusters (thread block clusters of 2+ CTAs: TMA multicast, remote arrivals) ----------
__device__ inline uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ inline uint32_t cluster_id_x() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%clusterid.x;\n" : "=r"(r));
  return r;
}
__device__ inline uint32_t cluster_count_x() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%nclusterid.x;\n" : "=r"(r));
  return r;
}
// Host side: a launch of `grid` blocks in clusters of `cluster` along x (cudaLaunchKernelEx;
// grid a multiple of cluster). attr holds the cluster attribute the config points to.
inline cudaLaunchConfig_t cluster_launch_config(unsigned grid, unsigned block, size_t smem,
                                                cudaStream_t s, unsigned cluster,
                                                cudaLaunchAttribute& attr) {
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = cluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Every thread of every CTA of the cluster: what each did to shared memory (its own or a
// peer's: barrier inits, arrivals) before it is visible to all after. Not .aligned: the
// threads of a warp may reach it apart (the producer warp's idle lanes).
__device__ inline void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
}
// One arrival on the barrier at the same offset as `bar` in the shared memory of CTA `cta` of
// the cluster (mapa: the peer's address of a shared variable). Release at cluster scope:
// this thread's earlier accesses are ordered before whatever the peer does after the phase
// completes (its producer refills a stage this CTA has read).
__device__ inline void mbar_arrive_cluster(uint64_t* bar, uint32_t cta) {
  asm volatile(
      "{\n.reg .b32 ra;\n"
      "mapa.shared::cluster.u32 ra, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(smem_u32(bar)),
      "r"(cta)
      : "memory");
}
// ---- TMA ---------------------------------------------------------------------------------
// Box (c0, c1) of the 2-d tensor map -> shared memory at dst, completing `bar`'s transaction
// count by the box's bytes (out-of-range elements are written as zeros and counted too).
__device__ inline void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0,
                                   int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
      : "memory");
}
// tma_load_2d into every CTA of the cluster in cta_mask (bit i: CTA rank i): the box lands at
// dst's offset in each one's shared memory and completes the transactions of the barrier at
// bar's offset in each (PTX ISA "cp.async.bulk.tensor", .multicast::cluster).
__device__ inline void tma_load_2d_multicast(void* dst, const CUtensorMap* map, uint64_t* bar,
                                             int c0, int c1, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%3, %4}], [%2], %5;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "h"(cta_mask)
      : "memory");
}
// Orders this thread's generic-proxy accesses of shared memory before later async-proxy ones
// (a bulk copy into bytes it has just read): each reader runs it before the barrier after
// which the copy is issued (PTX ISA "Memory consistency model: proxies").
__device__ inline void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// `bytes` contiguous bytes at global src -> shared memory at dst by the copy engine (the 1-d
// bulk copy: no tensor map), completing `bar`'s transaction count by `bytes`. src and dst
// 16-byte aligned, bytes a multiple of 16 (PTX ISA "cp.async.bulk").
__device__ inline void bulk_load_1d(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(src)), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
__device__ inline void tma_prefetch_descriptor(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// ---- registers ---------------------------------------------------------------------------
template <int kRegs>
__device__ inline void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ inline void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ---- wgmma -------------------------------------------------------------------------------
// Descriptor of a K-major operand tile in the 128-byte swizzled layout (see the top).
__device__ inline uint64_t smem_desc_sw128(const void* p) {
  const uint64_t addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4)          // start address, 16-byte units, bits 0-13
         | (uint64_t{1} << 16)            // leading byte offset (unused here), bits 16-29
         | (uint64_t{1024 >> 4} << 32)    // stride byte offset: 8 rows of 128 bytes
         | (uint64_t{1} << 62);           // layout type: 128-byte swizzle
}
// A descriptor advanced by `bytes` along K inside the swizzle atom (a multiple of 16).
__device__ inline uint64_t desc_advance(uint64_t desc, int bytes) {
  return desc + static_cast<uint64_t>(bytes >> 4);
}

__device__ inline void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ inline void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ inline void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving reads or writes of an accumulator register across the
// asynchronous wgmma (an empty asm that "modifies" the register, ordered with the fences).
template <int kN>
__device__ inline void fence_operands(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// D (64 x kN, f32) = A (64 x 32 e4m3) B^T (kN x 32 e4m3) (+ D when accumulate != 0), issued
// by one warpgroup; both operands from shared memory through descriptors. D's fragment:
// thread (warp w of the group, lane = 4 g + t) holds, for c = 0 .. kN/8 - 1, d[4c + 0, 1] =
// D[16 w + g][8 c + 2 t + 0, 1] and d[4c + 2, 3] = D[16 w + g + 8][8 c + 2 t + 0, 1].
template <int kN>
struct WgmmaE4M3;

template <>
struct WgmmaE4M3<64> {
  __device__ static void mma(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
  }
};

template <>
struct WgmmaE4M3<128> {
  __device__ static void mma(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
  }
};

}  // namespace r1::cuda::hopper
