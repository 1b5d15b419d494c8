#include "engine/device.h"

#include <cstdlib>
#include <cstring>

#include "engine/error.h"
#include "engine/host_allocator.h"

namespace r1 {
namespace {

// Host memory comes from the caching allocator (engine/host_allocator.h): a training step's
// buffers are reused across steps instead of being faulted in and zeroed afresh each time.
void* cpu_allocate(size_t nbytes, Device) {
  return HostCachingAllocator::instance().allocate(nbytes);
}
void cpu_deallocate(void* p, size_t nbytes, Device) {
  HostCachingAllocator::instance().deallocate(p, nbytes);
}
void cpu_copy(void* dst, Device, const void* src, Device, size_t n) {
  if (n) std::memcpy(dst, src, n);
}
void cpu_synchronize(Device) {}
int cpu_count() { return 1; }

DeviceRuntime* runtimes() {
  static DeviceRuntime rts[kNumDeviceTypes] = {
      {cpu_allocate, cpu_deallocate, cpu_copy, cpu_synchronize, cpu_count, nullptr, nullptr,
       nullptr},
      {}};
  return rts;
}

void storage_free(void* p, size_t n, Device d) { device_runtime(d.type).deallocate(p, n, d); }

}  // namespace

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    const long i = std::strtol(s.c_str() + 5, &end, 10);
    if (end && *end == '\0' && end != s.c_str() + 5 && i >= 0 && i < 1024)
      return cuda(static_cast<int>(i));
  }
  throw InputError("bad device '" + s + "': expected cpu, cuda or cuda:N");
}

void register_device_runtime(DeviceType t, const DeviceRuntime& rt) {
  runtimes()[static_cast<int>(t)] = rt;
}

const DeviceRuntime& device_runtime(DeviceType t) {
  const DeviceRuntime& rt = runtimes()[static_cast<int>(t)];
  R1_CHECK(rt.allocate != nullptr, "device type {} is not available: r1 was built without it",
           t == DeviceType::CUDA ? "cuda" : "cpu");
  return rt;
}

bool device_available(DeviceType t) {
  const DeviceRuntime& rt = runtimes()[static_cast<int>(t)];
  return rt.allocate != nullptr && rt.device_count() > 0;
}

Device device_from_flag(const std::string& value, const std::string& flag) {
  Device d;
  try {
    d = Device::parse(value);
  } catch (const InputError&) {
    throw InputError(fmt::format("{} {}: expected cpu, cuda or cuda:N", flag, value));
  }
  const DeviceRuntime& rt = runtimes()[static_cast<int>(d.type)];
  R1_INPUT_CHECK(rt.allocate != nullptr, "{} {}: not available here (r1 was built without CUDA)",
                 flag, value);
  const int count = rt.device_count();
  R1_INPUT_CHECK(d.index < count, "{} {}: not available here ({} {} device{})", flag, value,
                 count, d.is_cuda() ? "CUDA" : "CPU", count == 1 ? "" : "s");
  return d;
}

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device d) {
  void* p = device_runtime(d.type).allocate(nbytes, d);
  return std::make_shared<Storage>(p, nbytes, d, &storage_free);
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  // A host<->device copy goes through the device's runtime.
  const DeviceType t = dst_dev.is_cuda() || src_dev.is_cuda() ? DeviceType::CUDA : DeviceType::CPU;
  device_runtime(t).copy(dst, dst_dev, src, src_dev, n);
}

void synchronize(Device d) { device_runtime(d.type).synchronize(d); }

}  // namespace r1
