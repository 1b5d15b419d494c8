// Host side of the bulk tensor copy (TMA): tensor maps for 2-d byte matrices. The driver's
// cuTensorMapEncodeTiled is reached through the runtime's entry-point query, so nothing
// links against libcuda (CI builds without a driver).
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

namespace r1::cuda {

// A tensor map over `rows` rows of `row_bytes` bytes (row pitch `pitch` bytes, a multiple of
// 16; base 16-byte aligned) of 1-byte elements, copied in boxes of box_rows x box_bytes with
// the 128-byte swizzle (box_bytes = 128). Out-of-range box elements read as zeros. Throws
// r1::Error naming the problem when the driver refuses the map.
CUtensorMap make_tma_map_u8(const void* base, uint64_t rows, uint64_t row_bytes, uint64_t pitch,
                            uint32_t box_rows, uint32_t box_bytes);

}  // namespace r1::cuda
