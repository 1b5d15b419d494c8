// The op table: one slot per (kernel, device type). Kernel libraries fill the slots at
// static-initialization time (R1_REGISTER_KERNEL); the engine's ops call through them, so
// the engine never includes a kernel header. Asking for a missing slot throws an error that
// names the kernel and the device.
#pragma once
#include <utility>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/nvtx.h"

namespace r1 {

template <class Sig>
class Kernel;

template <class R, class... A>
class Kernel<R(A...)> {
 public:
  using Fn = R (*)(A...);
  explicit constexpr Kernel(const char* name) : name_(name) {}

  void set(DeviceType d, Fn fn) { fns_[static_cast<int>(d)] = fn; }
  bool has(DeviceType d) const { return fns_[static_cast<int>(d)] != nullptr; }
  Fn get(DeviceType d) const {
    Fn fn = fns_[static_cast<int>(d)];
    R1_CHECK(fn != nullptr, "kernel '{}' has no {} implementation", name_,
             d == DeviceType::CUDA ? "CUDA" : "CPU");
    return fn;
  }
  // Every kernel call opens an NVTX range named after the kernel, so an Nsight timeline
  // shows each launch under the op that made it (a branch when no tool is attached).
  template <class... B>
  R operator()(Device d, B&&... args) const {
    R1_NVTX_RANGE(name_);
    return get(d.type)(std::forward<B>(args)...);
  }
  const char* name() const { return name_; }

 private:
  const char* name_;
  Fn fns_[kNumDeviceTypes] = {};
};

}  // namespace r1

// Declares kernel slot `name` with C function type `sig` in namespace r1::kernels.
#define R1_KERNEL(name, sig)                     \
  namespace kernels {                            \
  inline ::r1::Kernel<sig>& name() {             \
    static ::r1::Kernel<sig> k(#name);           \
    return k;                                    \
  }                                              \
  }

// Fills slot `name` for device type `dev` (CPU or CUDA) with function `fn`.
#define R1_REGISTER_KERNEL(name, dev, fn)                                   \
  static const bool r1_registered_##name##_##dev = [] {                     \
    ::r1::kernels::name().set(::r1::DeviceType::dev, fn);                   \
    return true;                                                            \
  }()
