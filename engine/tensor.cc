#include "engine/tensor.h"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "engine/autograd.h"
#include "engine/convert.h"
#include "engine/kernels.h"
#include "engine/rng.h"
#include "engine/step_graph.h"

namespace r1 {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  if (s.size() == 1) out += ",";
  return out + ")";
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* what) {
  const int64_t w = d < 0 ? d + ndim : d;
  R1_CHECK(w >= 0 && w < ndim, "{}: dim {} out of range for a {}-d tensor", what, d, ndim);
  return w;
}

namespace {

void check_shape(const Shape& s) {
  for (int64_t d : s) R1_CHECK(d >= 0, "negative size in shape {}", shape_str(s));
}

}  // namespace

// ---- factories ----------------------------------------------------------------------------

Tensor Tensor::make_view(std::shared_ptr<Storage> storage, const Shape& shape,
                         const Shape& strides, int64_t offset, DType dtype) {
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  check_shape(shape);
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return make_view(allocate_storage(bytes, dev), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) {
  return full(shape, 0.0, dtype, dev);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device dev) {
  return full(shape, 1.0, dtype, dev);
}
Tensor Tensor::scalar(double value, DType dtype, Device dev) { return full({}, value, dtype, dev); }

namespace {
template <class T>
Tensor from_host(const std::vector<T>& v, const Shape& shape, DType host_t, DType dtype,
                 Device dev) {
  R1_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape),
           "from_vector: {} values for shape {}", v.size(), shape_str(shape));
  Tensor host = Tensor::empty(shape, dtype, Device::cpu());
  convert_buffer(v.data(), host_t, host.data_ptr(), dtype, v.size());
  return dev.is_cpu() ? host : host.to(dev);
}
}  // namespace

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s, DType t, Device d) {
  return from_host(v, s, DType::F32, t, d);
}
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s, DType t, Device d) {
  return from_host(v, s, DType::F64, t, d);
}
Tensor Tensor::from_vector(const std::vector<int32_t>& v, const Shape& s, DType t, Device d) {
  return from_host(v, s, DType::I32, t, d);
}
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s, DType t, Device d) {
  return from_host(v, s, DType::I64, t, d);
}

// Random tensors are generated on the host in f64 from the Philox stream and converted, so
// the values do not depend on the device (the seed is the stream key; element i uses the
// counter i / 2 and the half i % 2 of its Box-Muller pair).
Tensor Tensor::randn(const Shape& shape, uint64_t seed, DType dtype, Device dev, double stddev) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); i += 2) {
    const Philox4x32 b = philox_bits(seed, 0, i / 2);
    double z0, z1;
    box_muller(b.v[0], b.v[1], b.v[2], b.v[3], &z0, &z1);
    v[i] = z0 * stddev;
    if (i + 1 < v.size()) v[i + 1] = z1 * stddev;
  }
  return from_vector(v, shape, dtype, dev);
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype,
                    Device dev) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) {
    const Philox4x32 b = philox_bits(seed, 1, i);
    v[i] = lo + (hi - lo) * uniform01_f64(b.v[0], b.v[1]);
  }
  return from_vector(v, shape, dtype, dev);
}

Tensor Tensor::randint(const Shape& shape, uint64_t seed, int64_t lo, int64_t hi, DType dtype,
                       Device dev) {
  R1_CHECK(hi > lo, "randint: empty range [{}, {})", lo, hi);
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  for (size_t i = 0; i < v.size(); ++i) {
    const Philox4x32 b = philox_bits(seed, 2, i);
    const uint64_t r = (static_cast<uint64_t>(b.v[1]) << 32) | b.v[0];
    v[i] = lo + static_cast<int64_t>(r % span);
  }
  return from_vector(v, shape, dtype, dev);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device dev) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return from_vector(v, {n}, dtype, dev);
}

// ---- properties ---------------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, dim(), "stride")]; }
Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return fmt::format("Tensor({}, {}, {})", dtype_name(dtype_), device().str(), shape_str(shape_));
}

void* Tensor::data_ptr() const {
  R1_CHECK(defined(), "data_ptr() of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

// ---- views --------------------------------------------------------------------------------

Tensor Tensor::view_unrecorded(const Shape& shape, const Shape& strides, int64_t offset) const {
  return make_view(storage_, shape, strides, offset, dtype_);
}

namespace {

Shape infer_shape(const Shape& shape, int64_t numel) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      R1_CHECK(infer < 0, "view: more than one -1 in {}", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      R1_CHECK(out[i] >= 0, "view: bad size in {}", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    R1_CHECK(known > 0 && numel % known == 0, "view: cannot infer {} from {} elements",
             shape_str(shape), numel);
    out[infer] = numel / known;
  }
  R1_CHECK(shape_numel(out) == numel, "view: shape {} does not hold {} elements",
           shape_str(shape), numel);
  return out;
}

// Records a view op whose backward maps the view's grad back to the source's shape.
void record_view(const char* name, const Tensor& src, Tensor* out,
                 std::function<Tensor(const Tensor&)> back) {
  record(name, {src}, {out},
         [back = std::move(back)](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           return {back(g[0])};
         });
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  R1_CHECK(is_contiguous(), "view{} of a non-contiguous tensor {}: use reshape",
           shape_str(shape), str());
  const Shape s = infer_shape(shape, numel());
  Tensor out = view_unrecorded(s, contiguous_strides(s), offset_);
  const Shape in = shape_;
  record_view("view", *this, &out, [in](const Tensor& g) { return g.reshape(in); });
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (is_contiguous()) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape s(shape_.begin(), shape_.begin() + start);
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= shape_[i];
  s.push_back(n);
  s.insert(s.end(), shape_.begin() + end + 1, shape_.end());
  return reshape(s);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Shape s = shape_, st = strides_;
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  Tensor out = view_unrecorded(s, st, offset_);
  record_view("transpose", *this, &out, [d0, d1](const Tensor& g) { return g.transpose(d0, d1); });
  return out;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  R1_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: {} dims for a {}-d tensor",
           dims.size(), dim());
  Shape s(dims.size()), st(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    R1_CHECK(inverse[d] < 0, "permute: dim {} repeated", d);
    inverse[d] = static_cast<int64_t>(i);
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  Tensor out = view_unrecorded(s, st, offset_);
  record_view("permute", *this, &out, [inverse](const Tensor& g) { return g.permute(inverse); });
  return out;
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  R1_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d],
           "narrow: [{}, {}) out of range for size {} of dim {}", start, start + length,
           shape_[d], d);
  Shape s = shape_;
  s[d] = length;
  Tensor out = view_unrecorded(s, strides_, offset_ + start * strides_[d]);
  const Shape in = shape_;
  record_view("narrow", *this, &out, [in, d, start, length](const Tensor& g) {
    Tensor full = Tensor::zeros(in, g.dtype(), g.device());
    Tensor part = full.narrow(d, start, length);
    part.copy_(g);
    return full;
  });
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = shape_[d];
  if (index < 0) index += n;
  R1_CHECK(index >= 0 && index < n, "select: index {} out of range for size {}", index, n);
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape_, st = strides_;
  const int64_t stride = d < dim() ? shape_[d] * strides_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  Tensor out = view_unrecorded(s, st, offset_);
  record_view("unsqueeze", *this, &out, [d](const Tensor& g) { return g.squeeze(d); });
  return out;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  R1_CHECK(shape_[d] == 1, "squeeze: dim {} has size {}", d, shape_[d]);
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = view_unrecorded(s, st, offset_);
  record_view("squeeze", *this, &out, [d](const Tensor& g) { return g.unsqueeze(d); });
  return out;
}

Tensor Tensor::expand(const Shape& shape) const {
  R1_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "expand: {} to {}", shape_str(shape_),
           shape_str(shape));
  const size_t lead = shape.size() - shape_.size();
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    const int64_t want = shape[lead + i];
    if (shape_[i] == want) {
      st[lead + i] = strides_[i];
    } else {
      R1_CHECK(shape_[i] == 1, "expand: {} to {}", shape_str(shape_), shape_str(shape));
      st[lead + i] = 0;
    }
  }
  return view_unrecorded(shape, st, offset_);
}

// ---- copies -------------------------------------------------------------------------------

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape_, dtype_, device());
  {
    NoGrad ng;
    out.copy_(*this);
  }
  record("clone", {*this}, {&out}, [](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {g[0]};
  });
  return out;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return detach();
  Tensor out = Tensor::empty(shape_, dtype, device());
  out.copy_(detach());
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return detach();
  const Tensor src = contiguous().detach();
  Tensor out = Tensor::empty(shape_, dtype_, dev);
  copy_bytes(out.data_ptr(), dev, src.data_ptr(), src.device(), src.nbytes());
  return out;
}

void Tensor::copy_(const Tensor& src) {
  R1_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  R1_CHECK(shape_ == src.shape_, "copy_: shape {} into {}", shape_str(src.shape_),
           shape_str(shape_));
  R1_CHECK(!(grad_enabled() && requires_grad()), "copy_: in-place write into a tensor that "
           "requires grad");
  if (src.device() == device()) {
    kernels::copy_strided()(device(), src, *this);
    return;
  }
  const Tensor moved = src.to(device());
  kernels::copy_strided()(device(), moved, *this);
}

void Tensor::fill_(double value) {
  R1_CHECK(defined(), "fill_: undefined tensor");
  if (is_contiguous()) {
    kernels::fill()(device(), *this, value);
  } else {
    Tensor tmp = Tensor::empty(shape_, dtype_, device());
    kernels::fill()(device(), tmp, value);
    copy_(tmp);
  }
}

void Tensor::check_host_read(const char* what) const {
  R1_CHECK(!host_reads_forbidden(), "{}() of {} inside a step that must not read device data "
           "on the host (a CUDA graph capture or its CPU proof, engine/step_graph.h)", what,
           str());
}

std::vector<double> Tensor::to_double_vector() const {
  check_host_read("to_double_vector");
  const Tensor host = to(Device::cpu()).contiguous().detach();
  std::vector<double> v(static_cast<size_t>(numel()));
  convert_buffer(host.data_ptr(), dtype_, v.data(), DType::F64, v.size());
  return v;
}

std::vector<float> Tensor::to_float_vector() const {
  check_host_read("to_float_vector");
  const Tensor host = to(Device::cpu()).contiguous().detach();
  std::vector<float> v(static_cast<size_t>(numel()));
  convert_buffer(host.data_ptr(), dtype_, v.data(), DType::F32, v.size());
  return v;
}

std::vector<int64_t> Tensor::to_int_vector() const {
  check_host_read("to_int_vector");
  const Tensor host = to(Device::cpu()).contiguous().detach();
  std::vector<int64_t> v(static_cast<size_t>(numel()));
  convert_buffer(host.data_ptr(), dtype_, v.data(), DType::I64, v.size());
  return v;
}

double Tensor::item() const {
  R1_CHECK(numel() == 1, "item() of a tensor with {} elements", numel());
  return to_double_vector()[0];
}

// ---- autograd handle ----------------------------------------------------------------------

bool Tensor::requires_grad() const { return meta_ && meta_->requires_grad; }
bool Tensor::is_leaf() const { return !meta_ || meta_->is_leaf; }

Tensor& Tensor::set_requires_grad(bool on) {
  R1_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor");
  R1_CHECK(!on || dtype_is_floating(dtype_), "only floating tensors can require grad, not {}",
           dtype_name(dtype_));
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  meta_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return meta_ ? meta_->grad : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  R1_CHECK(!g.defined() || g.shape() == shape_, "set_grad: grad shape {} for tensor {}",
           shape_str(g.shape()), shape_str(shape_));
  meta_->grad = g;
}

void Tensor::zero_grad() {
  if (meta_) meta_->grad = Tensor();
}

Tensor Tensor::detach() const {
  Tensor t = *this;
  t.meta_.reset();
  return t;
}

}  // namespace r1
