// Devices, memory allocators and the small per-device runtime interface the engine needs
// (allocate, copy, synchronize). The CUDA runtime lives in engine/cuda/ and registers itself
// when r1 is built with CUDA; the engine never includes a kernel header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace r1 {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;                 // "cpu", "cuda:0"
  static Device parse(const std::string&);  // "cpu", "cuda", "cuda:1"; InputError otherwise
};

// Raw memory owned by one device. Tensors share Storage; views add an offset.
class Storage {
 public:
  Storage(void* data, size_t nbytes, Device device, void (*free_fn)(void*, size_t, Device))
      : data_(data), nbytes_(nbytes), device_(device), free_fn_(free_fn) {}
  ~Storage() {
    if (data_ && free_fn_) free_fn_(data_, nbytes_, device_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  void (*free_fn_)(void*, size_t, Device);
};

// What a device backend provides to the engine. CPU is built in; CUDA registers itself.
struct DeviceRuntime {
  void* (*allocate)(size_t nbytes, Device d) = nullptr;     // stream-ordered on CUDA
  void (*deallocate)(void* p, size_t nbytes, Device d) = nullptr;
  // Copies n bytes; either side may be the host (CPU) or this device.
  void (*copy)(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) = nullptr;
  void (*synchronize)(Device d) = nullptr;
  int (*device_count)() = nullptr;
  // Graphs (engine/step_graph.h; null where the backend has none): capture records fn's
  // device work into a replayable graph (fn runs once, its kernels do not), its memory from
  // the pool of graph `share` when not null, else a new pool; replay runs it after the
  // current stream's queued work; destroy frees it (and the pool with its last graph).
  void* (*graph_capture)(Device d, const std::function<void()>& fn, void* share) = nullptr;
  void (*graph_replay)(void* graph) = nullptr;
  void (*graph_destroy)(void* graph) = nullptr;
};

void register_device_runtime(DeviceType t, const DeviceRuntime& rt);
const DeviceRuntime& device_runtime(DeviceType t);  // throws if that backend is not built
bool device_available(DeviceType t);                // built and at least one device present
// A command line's device flag (`--device cuda:1`): parsed, and present on this machine (the
// backend built, the index below its device count); otherwise InputError naming the flag and
// the value, one line, before the program has done anything.
Device device_from_flag(const std::string& value, const std::string& flag = "--device");

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device d);
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n);
void synchronize(Device d);

inline constexpr size_t kCpuAlignment = 64;  // one cache line; AVX-512 loads stay aligned

}  // namespace r1
