// Registers the CUDA device runtime with the engine when the CUDA kernels are linked.
#include "engine/cuda/runtime.h"

namespace r1::cuda {
namespace {
const bool registered = [] {
  register_device_runtime(DeviceType::CUDA, make_runtime());
  return true;
}();
}  // namespace
}  // namespace r1::cuda
