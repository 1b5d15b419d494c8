// CUDA: writes into and attention over a paged KV cache, the simple version (contract in
// engine/kernels_paged.h; kernels/cpu/paged_attention.cc is the reference). One block per
// (query row, head): its threads score positions j = tid, tid + blockDim, ... (each a full
// dot product over d in ascending order), the block reduces the max and the sum in a fixed
// tree order, then thread d owns output column d and sums P_j value_j over j ascending. Every
// output depends on its own row and cache only: deterministic and batch invariant. Scores
// live in shared memory (4 bytes per position, after the block's 128 reduction slots: up to
// 12160 positions in the 48 KB a launch gets without opting in). Eagerly, the
// host reads seq, pos and the block table back to check every index and size the shared
// memory (a sync per call); under a CUDA graph capture (capturing(), engine/step_graph.h) it
// cannot, nor in a step that must not read device data (NoHostReads: the graph-safe decode
// step, also when it runs eagerly before its capture): no check, and the shared memory sized
// for the table's capacity (its width times the block size), which a replay's positions
// cannot exceed; the same launch eagerly and captured.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_paged.h"
#include "engine/step_graph.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kThreadsPerRow = 128;
// (128 + 12160) floats = 48 KiB: the dynamic shared memory a launch may ask for by default.
constexpr int64_t kMaxPositions = 48 * 1024 / sizeof(float) - kThreadsPerRow;

template <class T>
__global__ void cache_write_kernel(const T* entries, const int32_t* table, const int64_t* seq,
                                   const int64_t* pos, T* pool, int64_t N, int64_t W,
                                   int64_t max_blocks, int64_t block_size) {
  // Rows in order per slot: one block per row, rows processed in launch order are not
  // ordered across blocks, so duplicates are resolved on the host (see below).
  const int64_t n = blockIdx.x;
  if (n >= N) return;
  const int64_t p = pos[n];
  const int64_t slot = int64_t{table[seq[n] * max_blocks + p / block_size]} * block_size +
                       p % block_size;
  for (int64_t w = threadIdx.x; w < W; w += blockDim.x) pool[slot * W + w] = entries[n * W + w];
}

template <class T>
__global__ void attend_kernel(const T* q, const T* pool, const int32_t* table,
                              const int64_t* seq, const int64_t* pos, PagedLayout l, float scale,
                              T* out, int64_t H, int64_t W, int64_t max_blocks,
                              int64_t block_size) {
  extern __shared__ float smem[];  // [kThreadsPerRow] reduction scratch, then the scores
  float* red = smem;
  float* s = smem + kThreadsPerRow;
  const int64_t nh = blockIdx.x, n = nh / H, h = nh % H, g = h / (H / l.Hk);
  const int64_t len = pos[n] + 1, sq = seq[n];
  const int tid = threadIdx.x;
  const T* qr = q + nh * l.Dk;
  auto entry = [&](int64_t j) {
    return pool + (int64_t{table[sq * max_blocks + j / block_size]} * block_size +
                   j % block_size) * W;
  };
  float m = -INFINITY;
  for (int64_t j = tid; j < len; j += kThreadsPerRow) {
    const T* key = entry(j) + g * l.Dk;
    float dot = 0.f;
    for (int64_t d = 0; d < l.Dk; ++d) dot = fmaf(to_f32(qr[d]), to_f32(key[d]), dot);
    s[j] = dot * scale;
    m = fmaxf(m, s[j]);
  }
  red[tid] = m;
  __syncthreads();
  for (int k = kThreadsPerRow / 2; k > 0; k >>= 1) {
    if (tid < k) red[tid] = fmaxf(red[tid], red[tid + k]);
    __syncthreads();
  }
  m = red[0];
  __syncthreads();
  float part = 0.f;
  for (int64_t j = tid; j < len; j += kThreadsPerRow) part += (s[j] = expf(s[j] - m));
  red[tid] = part;
  __syncthreads();
  for (int k = kThreadsPerRow / 2; k > 0; k >>= 1) {
    if (tid < k) red[tid] += red[tid + k];
    __syncthreads();
  }
  const float inv = 1.f / red[0];
  for (int64_t d = tid; d < l.Dv; d += kThreadsPerRow) {
    float acc = 0.f;
    for (int64_t j = 0; j < len; ++j) acc = fmaf(s[j], to_f32(entry(j)[l.v_offset + g * l.Dv + d]), acc);
    out[nh * l.Dv + d] = from_f32<T>(acc * inv);
  }
}

// Whether this call may not read device data back: a graph capture on the current stream,
// or a NoHostReads step (run eagerly once before it is captured: the same launches).
bool no_host_reads(int dev) { return capturing(current_stream(dev)) || host_reads_forbidden(); }

// Host copies of the index operands, every index checked; returns the longest row.
int64_t check_indices(const Tensor& block_table, const Tensor& seq, const Tensor& pos,
                      int64_t num_blocks, int64_t block_size, const char* what,
                      std::vector<int64_t>* slots) {
  const std::vector<int64_t> t = block_table.to(Device::cpu()).to_int_vector();
  const std::vector<int64_t> s = seq.to(Device::cpu()).to_int_vector();
  const std::vector<int64_t> p = pos.to(Device::cpu()).to_int_vector();
  const int64_t S = block_table.size(0), M = block_table.size(1);
  int64_t longest = 0;
  for (size_t n = 0; n < s.size(); ++n) {
    R1_CHECK(s[n] >= 0 && s[n] < S, "{}: sequence {} outside [0, {})", what, s[n], S);
    R1_CHECK(p[n] >= 0 && p[n] / block_size < M, "{}: position {} beyond the block table",
             what, p[n]);
    for (int64_t j = 0; j <= p[n]; j += block_size) {
      const int64_t b = t[s[n] * M + j / block_size];
      R1_CHECK(b >= 0 && b < num_blocks, "{}: sequence {} position {} maps to block {} of {}",
               what, s[n], j, b, num_blocks);
    }
    if (slots) slots->push_back(t[s[n] * M + p[n] / block_size] * block_size + p[n] % block_size);
    longest = std::max(longest, p[n] + 1);
  }
  return longest;
}

void paged_cache_write_cuda(const Tensor& entries, const Tensor& block_table, const Tensor& seq,
                            const Tensor& pos, Tensor& pool) {
  check_paged("paged_cache_write", entries, Tensor(), pool, block_table, seq, pos, nullptr,
              Tensor());
  const int dev = pool.device().index;
  DeviceGuard guard(dev);
  if (!no_host_reads(dev)) {
    std::vector<int64_t> slots;
    check_indices(block_table, seq, pos, pool.size(0), pool.size(1), "paged_cache_write",
                  &slots);
    std::vector<int64_t> sorted = slots;
    std::sort(sorted.begin(), sorted.end());
    R1_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
             "paged_cache_write: two rows name one slot (the CUDA kernel writes rows in no "
             "order)");
  }
  const int64_t N = entries.size(0);
  if (N == 0) return;
  dispatch_float(pool.dtype(), "paged_cache_write", [&](auto tag) {
    using T = decltype(tag);
    cache_write_kernel<T><<<static_cast<unsigned>(N), 128, 0, current_stream(dev)>>>(
        static_cast<const T*>(entries.data_ptr()),
        static_cast<const int32_t*>(block_table.data_ptr()),
        static_cast<const int64_t*>(seq.data_ptr()), static_cast<const int64_t*>(pos.data_ptr()),
        static_cast<T*>(pool.data_ptr()), N, pool.size(2), block_table.size(1), pool.size(1));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void paged_attention_cuda(const Tensor& q, const Tensor& pool, const Tensor& block_table,
                          const Tensor& seq, const Tensor& pos, const PagedLayout& layout,
                          double scale, Tensor& out) {
  check_paged("paged_attention", Tensor(), q, pool, block_table, seq, pos, &layout, out);
  const int dev = pool.device().index;
  DeviceGuard guard(dev);
  const int64_t longest =
      no_host_reads(dev)
          ? block_table.size(1) * pool.size(1)
          : check_indices(block_table, seq, pos, pool.size(0), pool.size(1), "paged_attention",
                          nullptr);
  R1_CHECK(longest <= kMaxPositions, "paged_attention: {} positions exceed the simple CUDA "
           "kernel's {}", longest, kMaxPositions);
  const int64_t N = q.size(0), H = q.size(1);
  if (N == 0) return;
  const size_t bytes = sizeof(float) * static_cast<size_t>(kThreadsPerRow + longest);
  dispatch_float(q.dtype(), "paged_attention", [&](auto tag) {
    using T = decltype(tag);
    attend_kernel<T><<<static_cast<unsigned>(N * H), kThreadsPerRow, bytes, current_stream(dev)>>>(
        static_cast<const T*>(q.data_ptr()), static_cast<const T*>(pool.data_ptr()),
        static_cast<const int32_t*>(block_table.data_ptr()),
        static_cast<const int64_t*>(seq.data_ptr()), static_cast<const int64_t*>(pos.data_ptr()),
        layout, static_cast<float>(scale), static_cast<T*>(out.data_ptr()), H, pool.size(2),
        block_table.size(1), pool.size(1));
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

R1_REGISTER_KERNEL(paged_cache_write, CUDA, paged_cache_write_cuda);
R1_REGISTER_KERNEL(paged_attention, CUDA, paged_attention_cuda);

}  // namespace r1::cuda
