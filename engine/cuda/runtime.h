// The CUDA device runtime the engine uses (allocation, copies, synchronization). Registered
// with the engine by the CUDA kernel library (kernels/cuda/register_runtime.cu).
#pragma once
#include "engine/device.h"

namespace r1::cuda {

DeviceRuntime make_runtime();

}  // namespace r1::cuda
