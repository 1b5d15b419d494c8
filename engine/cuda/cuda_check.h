// R1_CUDA_CHECK(call): throws r1::Error naming the call, the location and CUDA's message.
#pragma once
#include <cuda_runtime.h>

#include "engine/error.h"

#define R1_CUDA_CHECK(call)                                                                \
  do {                                                                                     \
    const cudaError_t r1_err_ = (call);                                                    \
    if (r1_err_ != cudaSuccess) [[unlikely]]                                               \
      ::r1::detail::throw_check_failure(__FILE__, __LINE__, #call,                         \
                                        cudaGetErrorString(r1_err_));                      \
  } while (0)

// After a kernel launch: the launch error, if any.
#define R1_CUDA_CHECK_LAUNCH() R1_CUDA_CHECK(cudaGetLastError())
