// convert_buffer: one tight loop per (source, destination) dtype pair, instantiated from
// per-dtype codecs, so f32 <-> bf16/f16/e4m3/e5m2 and f32 <-> f64 compile to straight loops
// over the scalar conversions of engine/convert_inl.h.
#include <cstring>

#include "engine/convert.h"
#include "engine/convert_codecs.h"
#include "engine/error.h"

namespace r1 {
namespace {

// Below this many elements a parallel region costs more than the conversion.
constexpr size_t kParallelMinElements = size_t{1} << 15;

using namespace convert_codecs;

template <class S, class D>
void convert_loop(const void* src, void* dst, size_t n) {
  const auto* s = static_cast<const typename S::Storage*>(src);
  auto* d = static_cast<typename D::Storage*>(dst);
  const int64_t count = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) d[i] = convert_one<S, D>(s[i]);
}

// Calls f.template operator()<Codec>() for the codec of t.
template <class F>
void with_codec(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<F32C>();
    case DType::F64: return f.template operator()<F64C>();
    case DType::BF16: return f.template operator()<BF16C>();
    case DType::F16: return f.template operator()<F16C>();
    case DType::E4M3: return f.template operator()<E4M3C>();
    case DType::E5M2: return f.template operator()<E5M2C>();
    case DType::I32: return f.template operator()<IntC<int32_t>>();
    case DType::I64: return f.template operator()<IntC<int64_t>>();
    case DType::U8: return f.template operator()<IntC<uint8_t>>();
    case DType::Bool: return f.template operator()<BoolC>();
  }
  R1_CHECK(false, "convert_buffer: unknown dtype {}", static_cast<int>(t));
}

}  // namespace

void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, size_t n) {
  if (n == 0) return;
  if (src_t == dst_t) {
    std::memcpy(dst, src, n * dtype_size(src_t));
    return;
  }
  with_codec(src_t, [&]<class S>() {
    with_codec(dst_t, [&]<class D>() { convert_loop<S, D>(src, dst, n); });
  });
}

}  // namespace r1
