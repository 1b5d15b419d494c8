// NVTX ranges: every op and stage step opens one, so Nsight timelines read like the code.
// NVTX 3 is header-only and costs a branch when no tool is attached.
#pragma once
#if defined(R1_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#endif

namespace r1 {

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
#if defined(R1_HAVE_NVTX)
    nvtxRangePushA(name);
#else
    (void)name;
#endif
  }
  ~NvtxRange() {
#if defined(R1_HAVE_NVTX)
    nvtxRangePop();
#endif
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace r1

#define R1_NVTX_CAT2(a, b) a##b
#define R1_NVTX_CAT(a, b) R1_NVTX_CAT2(a, b)
#define R1_NVTX_RANGE(name) ::r1::NvtxRange R1_NVTX_CAT(r1_nvtx_range_, __LINE__)(name)
