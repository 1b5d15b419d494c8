// R1_ROW_VARIANT: which compile-time shape the single-pass row kernels run (launch.cuh).
#include <cstdlib>

#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {

int row_variant() {
  static const int v = [] {
    const char* e = std::getenv("R1_ROW_VARIANT");
    const int i = e != nullptr ? std::atoi(e) : 0;
    return i >= 0 && i < kNumRowVariants ? i : 0;
  }();
  return v;
}

}  // namespace r1::cuda
