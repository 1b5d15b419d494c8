#include "engine/dtype.h"

#include "engine/error.h"

namespace r1 {
namespace {
struct Info {
  DType t;
  size_t size;
  const char* name;
  const char* st_name;
  bool floating;
};
constexpr Info kInfo[kNumDTypes] = {
    {DType::F32, 4, "f32", "F32", true},       {DType::F64, 8, "f64", "F64", true},
    {DType::BF16, 2, "bf16", "BF16", true},    {DType::F16, 2, "f16", "F16", true},
    {DType::E4M3, 1, "e4m3", "F8_E4M3", true}, {DType::E5M2, 1, "e5m2", "F8_E5M2", true},
    {DType::I32, 4, "i32", "I32", false},      {DType::I64, 8, "i64", "I64", false},
    {DType::U8, 1, "u8", "U8", false},         {DType::Bool, 1, "bool", "BOOL", false},
};
const Info& info(DType t) {
  const int i = static_cast<int>(t);
  R1_CHECK(i >= 0 && i < kNumDTypes, "bad dtype {}", i);
  return kInfo[i];
}
}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
const char* dtype_name(DType t) { return info(t).name; }
const char* dtype_safetensors_name(DType t) { return info(t).st_name; }
bool dtype_is_floating(DType t) { return info(t).floating; }
bool dtype_is_integer(DType t) { return !info(t).floating; }

std::optional<DType> dtype_from_name(std::string_view s) {
  for (const Info& i : kInfo)
    if (s == i.name || s == i.st_name) return i.t;
  return std::nullopt;
}

}  // namespace r1
