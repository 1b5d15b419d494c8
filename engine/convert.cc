#include "engine/convert.h"

#include "engine/error.h"

namespace r1 {
namespace {

template <class T>
double load(const void* p, size_t i) {
  return static_cast<double>(static_cast<const T*>(p)[i]);
}

double load_any(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return load<float>(p, i);
    case DType::F64: return load<double>(p, i);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::E4M3: return e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);
    case DType::E5M2: return e5m2_to_f32(static_cast<const uint8_t*>(p)[i]);
    case DType::I32: return load<int32_t>(p, i);
    case DType::I64: return load<int64_t>(p, i);
    case DType::U8: return load<uint8_t>(p, i);
    case DType::Bool: return static_cast<const uint8_t*>(p)[i] != 0 ? 1.0 : 0.0;
  }
  return 0;
}

void store_any(void* p, DType t, size_t i, double v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::F64: static_cast<double*>(p)[i] = v; break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::E4M3: static_cast<uint8_t*>(p)[i] = f32_to_e4m3(static_cast<float>(v)); break;
    case DType::E5M2: static_cast<uint8_t*>(p)[i] = f32_to_e5m2(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case DType::Bool: static_cast<uint8_t*>(p)[i] = v != 0.0 ? 1 : 0; break;
  }
}

}  // namespace

// PLACEHOLDER generic path (through double); the dtype work adds fast paths.
void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, size_t n) {
  if (src_t == dst_t) {
    std::memcpy(dst, src, n * dtype_size(src_t));
    return;
  }
  for (size_t i = 0; i < n; ++i) store_any(dst, dst_t, i, load_any(src, src_t, i));
}

}  // namespace r1
