// Device inputs for the GPU benchmarks and the FP8 tile sweep (bench_cuda_kernels,
// bench_fp8_gemm, r1-fp8-tune): random numbers made on the host for a large tensor would
// dominate the run, so 1M values are made once and tiled on the device.
#pragma once
#include <algorithm>
#include <cstdint>

#include "engine/dtype.h"
#include "engine/tensor.h"

namespace r1::bench {

// A device-0 tensor of N(0, stddev) values in dtype dt (1M host values, repeated).
inline Tensor dev_randn(const Shape& shape, DType dt, uint64_t seed, double stddev = 1.0) {
  const Device gpu = Device::cuda(0);
  Tensor t = Tensor::empty(shape, dt, gpu);
  const int64_t n = t.numel();
  const int64_t chunk = std::min<int64_t>(n, int64_t{1} << 20);
  const Tensor src = Tensor::randn({chunk}, seed, dt, Device::cpu(), stddev).to(gpu);
  const size_t es = dtype_size(dt);
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    copy_bytes(static_cast<char*>(t.data_ptr()) + off * es, gpu, src.data_ptr(), gpu,
               static_cast<size_t>(len) * es);
  }
  return t;
}

}  // namespace r1::bench
