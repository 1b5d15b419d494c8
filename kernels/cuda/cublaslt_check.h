// R1_CUBLASLT_CHECK(call): throws r1::Error naming the call, the location and cuBLAS's status
// (name and description), like R1_CUDA_CHECK for the runtime.
#pragma once
#include <cublasLt.h>
#include <fmt/format.h>

#include "engine/error.h"

#define R1_CUBLASLT_CHECK(call)                                                            \
  do {                                                                                     \
    const cublasStatus_t r1_status_ = (call);                                              \
    if (r1_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                  \
      ::r1::detail::throw_check_failure(                                                   \
          __FILE__, __LINE__, #call,                                                       \
          ::fmt::format("{} ({})", cublasLtGetStatusName(r1_status_),                      \
                        cublasLtGetStatusString(r1_status_)));                             \
  } while (0)
