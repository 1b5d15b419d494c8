// Tensor maps for the TMA (see tma.h).
#include "kernels/cuda/common/tma.h"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>


#include "engine/error.h"

namespace r1::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    const cudaError_t e =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    R1_CHECK(e == cudaSuccess && q == cudaDriverEntryPointSuccess && p != nullptr,
             "TMA: the driver has no cuTensorMapEncodeTiled ({})", cudaGetErrorString(e));
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

CUtensorMap make_tma_map_u8(const void* base, uint64_t rows, uint64_t row_bytes, uint64_t pitch,
                            uint32_t box_rows, uint32_t box_bytes) {
  R1_CHECK(reinterpret_cast<uintptr_t>(base) % 16 == 0 && pitch % 16 == 0 && rows > 0 &&
               row_bytes > 0 && box_bytes == 128 && box_rows >= 1 && box_rows <= 256,
           "TMA: unsupported map (base {} rows {} row_bytes {} pitch {} box {}x{})", base, rows,
           row_bytes, pitch, box_rows, box_bytes);
  CUtensorMap map{};
  const cuuint64_t dims[2] = {row_bytes, rows};
  const cuuint64_t strides[1] = {pitch};
  const cuuint32_t box[2] = {box_bytes, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base),
                                 dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  R1_CHECK(r == CUDA_SUCCESS, "TMA: cuTensorMapEncodeTiled failed (error {}) for rows {} "
           "row_bytes {} pitch {} box {}x{}", static_cast<int>(r), rows, row_bytes, pitch,
           box_rows, box_bytes);
  return map;
}

}  // namespace r1::cuda
