// Tensor: shared storage + shape + strides + offset + dtype + device, plus an optional
// autograd handle. Copying a Tensor copies the handle (like a shared_ptr); views share
// storage. New tensors are contiguous (row-major).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"

namespace r1 {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
std::string shape_str(const Shape& s);  // "(2, 3, 4)"
// A dim index in [-ndim, ndim) made non-negative; out of range throws naming `what`.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* what);

struct AutogradMeta;

class Tensor {
 public:
  Tensor() = default;

  // ---- factories ------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device dev = Device::cpu());
  // Host data copied in, converted from the element type given (float/double/int32/int64).
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape,
                            DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape,
                            DType dtype = DType::F64, Device dev = Device::cpu());
  static Tensor from_vector(const std::vector<int32_t>& v, const Shape& shape,
                            DType dtype = DType::I32, Device dev = Device::cpu());
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape,
                            DType dtype = DType::I64, Device dev = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::F32, Device dev = Device::cpu());
  // Random tensors from the counter-based Philox stream (seed, offset): the same seed gives
  // the same numbers on every device and every thread count.
  static Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::F32,
                      Device dev = Device::cpu(), double stddev = 1.0);
  static Tensor rand(const Shape& shape, uint64_t seed, double lo, double hi,
                     DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor randint(const Shape& shape, uint64_t seed, int64_t lo, int64_t hi,
                        DType dtype = DType::I64, Device dev = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::I64, Device dev = Device::cpu());

  // ---- properties -------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::string str() const;  // "Tensor(f32, cpu, (2, 3))"

  // Pointer to the first element (offset applied). data<T>() checks T against dtype.
  void* data_ptr() const;
  template <class T>
  T* data() const;

  // ---- views (share storage; recorded by autograd when the source requires grad) ------
  Tensor view(const Shape& shape) const;     // needs contiguous; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view if possible, else a contiguous copy
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops dim
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  // Broadcast view (stride 0 on expanded dims). Not differentiable; ops broadcast themselves.
  Tensor expand(const Shape& shape) const;

  // ---- copies -------------------------------------------------------------------------
  Tensor contiguous() const;  // itself if already contiguous (differentiable)
  Tensor clone() const;       // always a fresh contiguous copy (differentiable)
  Tensor to(DType dtype) const;  // not differentiable
  Tensor to(Device dev) const;   // not differentiable
  void copy_(const Tensor& src);  // in place; same shape, any dtype/device/strides
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // Host readback, converted to the requested type (any dtype, any device, any strides).
  std::vector<float> to_float_vector() const;
  std::vector<double> to_double_vector() const;
  std::vector<int64_t> to_int_vector() const;
  double item() const;  // numel() must be 1

  // ---- autograd -----------------------------------------------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on = true);  // only on leaves
  bool is_leaf() const;
  Tensor grad() const;   // undefined until a backward pass reached this tensor
  void set_grad(const Tensor& g);
  void zero_grad();      // drops the gradient (next backward writes a fresh one)
  Tensor detach() const;  // same storage, no autograd history
  const std::shared_ptr<AutogradMeta>& autograd_meta() const { return meta_; }
  std::shared_ptr<AutogradMeta>& mutable_autograd_meta() { return meta_; }

  // Low-level: a tensor over existing storage (no checks beyond bounds).
  static Tensor make_view(std::shared_ptr<Storage> storage, const Shape& shape,
                          const Shape& strides, int64_t offset, DType dtype);

 private:
  // Throws inside a NoHostReads scope (engine/step_graph.h).
  void check_host_read(const char* what) const;
  Tensor view_unrecorded(const Shape& shape, const Shape& strides, int64_t offset) const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::F32;
  std::shared_ptr<AutogradMeta> meta_;
};

// C++ element type of a dtype, for data<T>() checks.
template <class T>
constexpr bool dtype_matches(DType t) {
  if constexpr (std::is_same_v<T, float>) return t == DType::F32;
  else if constexpr (std::is_same_v<T, double>) return t == DType::F64;
  else if constexpr (std::is_same_v<T, int32_t>) return t == DType::I32;
  else if constexpr (std::is_same_v<T, int64_t>) return t == DType::I64;
  else if constexpr (std::is_same_v<T, uint16_t>) return t == DType::BF16 || t == DType::F16;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return t == DType::U8 || t == DType::Bool || t == DType::E4M3 || t == DType::E5M2;
  else if constexpr (std::is_same_v<T, void>) return true;
  else return false;
}

template <class T>
T* Tensor::data() const {
  R1_CHECK(defined(), "data() of an undefined tensor");
  R1_CHECK(dtype_matches<T>(dtype_), "data<T>() does not match dtype {}", dtype_name(dtype_));
  return static_cast<T*>(data_ptr());
}

}  // namespace r1
