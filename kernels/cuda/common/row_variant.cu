// R1_ROW_VARIANT: a compile-time shape for every row kernel with a reduction, in place of
// each kernel's tuned default (launch.cuh).
#include <cstdlib>

#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {

int row_variant() {
  static const int v = [] {
    const char* e = std::getenv("R1_ROW_VARIANT");
    const int i = e != nullptr && *e != '\0' ? std::atoi(e) : -1;
    return i >= 0 && i < kNumRowVariants ? i : -1;
  }();
  return v;
}

}  // namespace r1::cuda
