// Element types. Storage types (bf16, f16, e4m3, e5m2) are converted to f32 on load by the
// CPU backend; f64 exists for the CPU reference and finite-difference gradient checks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace r1 {

enum class DType : uint8_t { F32, F64, BF16, F16, E4M3, E5M2, I32, I64, U8, Bool };
inline constexpr int kNumDTypes = 10;

size_t dtype_size(DType t);
const char* dtype_name(DType t);                        // "f32", "bf16", "e4m3", ...
const char* dtype_safetensors_name(DType t);            // "F32", "BF16", "F8_E4M3", ...
std::optional<DType> dtype_from_name(std::string_view);  // accepts both spellings
bool dtype_is_floating(DType t);
bool dtype_is_integer(DType t);  // i32, i64, u8, bool

}  // namespace r1
