#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"

namespace r1 {
namespace {

using json = nlohmann::ordered_json;  // keeps the file's key order, so names() reads naturally

constexpr size_t kHeaderAlign = 8;  // the HF writer pads the header so data starts 8-aligned

void unmap(void* p, size_t n, Device) { ::munmap(p, n); }

// Maps the whole file copy-on-write: loaded tensors stay writable (an optimizer may update a
// loaded weight in place) without the writes reaching the file.
std::shared_ptr<Storage> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  R1_INPUT_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw InputError(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw InputError(fmt::format("{}: file is {} bytes, shorter than the 8-byte header length",
                                 path, size));
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping outlives the descriptor
  R1_INPUT_CHECK(p != MAP_FAILED, "{}: mmap failed: {}", path, std::strerror(err));
  return std::make_shared<Storage>(p, size, Device::cpu(), &unmap);
}

uint64_t read_le64(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

int64_t json_int(const json& v, const std::string& path, const std::string& name,
                 const char* field) {
  R1_INPUT_CHECK(v.is_number_integer(), "{}: tensor '{}': {} holds {}, not an integer", path,
                 name, field, v.dump());
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    R1_INPUT_CHECK(u <= static_cast<uint64_t>(INT64_MAX), "{}: tensor '{}': {} value {} too large",
                   path, name, field, u);
    return static_cast<int64_t>(u);
  }
  return v.get<int64_t>();
}

SafetensorsFile::Entry parse_entry(const json& e, const std::string& path,
                                   const std::string& name, int64_t data_size) {
  R1_INPUT_CHECK(e.is_object(), "{}: tensor '{}': header entry is not an object", path, name);
  for (const char* f : {"dtype", "shape", "data_offsets"})
    R1_INPUT_CHECK(e.contains(f), "{}: tensor '{}': missing field '{}'", path, name, f);
  SafetensorsFile::Entry out{};
  const json& dt = e["dtype"];
  R1_INPUT_CHECK(dt.is_string(), "{}: tensor '{}': dtype is not a string", path, name);
  const std::optional<DType> dtype = dtype_from_name(dt.get<std::string>());
  R1_INPUT_CHECK(dtype.has_value(), "{}: tensor '{}': unknown dtype '{}'", path, name,
                 dt.get<std::string>());
  out.dtype = *dtype;

  const json& sh = e["shape"];
  R1_INPUT_CHECK(sh.is_array(), "{}: tensor '{}': shape is not a list", path, name);
  uint64_t bytes = dtype_size(out.dtype);
  bool overflow = false;
  for (const json& d : sh) {
    const int64_t n = json_int(d, path, name, "shape");
    R1_INPUT_CHECK(n >= 0, "{}: tensor '{}': negative dim {} in shape {}", path, name, n,
                   sh.dump());
    out.shape.push_back(n);
    overflow |= __builtin_mul_overflow(bytes, static_cast<uint64_t>(n), &bytes);
  }

  const json& off = e["data_offsets"];
  R1_INPUT_CHECK(off.is_array() && off.size() == 2, "{}: tensor '{}': data_offsets {} is not "
                 "[begin, end]", path, name, off.dump());
  out.begin = json_int(off[0], path, name, "data_offsets");
  out.end = json_int(off[1], path, name, "data_offsets");
  R1_INPUT_CHECK(0 <= out.begin && out.begin <= out.end, "{}: tensor '{}': data_offsets [{}, {}] "
                 "out of order", path, name, out.begin, out.end);
  R1_INPUT_CHECK(out.end <= data_size, "{}: tensor '{}': data_offsets [{}, {}] beyond the data "
                 "buffer of {} bytes", path, name, out.begin, out.end, data_size);
  R1_INPUT_CHECK(!overflow && bytes == static_cast<uint64_t>(out.end - out.begin),
                 "{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets span {}", path,
                 name, shape_str(out.shape), dtype_safetensors_name(out.dtype),
                 overflow ? std::string("too many") : std::to_string(bytes), out.end - out.begin);
  return out;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const auto* base = static_cast<const unsigned char*>(f.mapping_->data());
  const uint64_t file_size = f.mapping_->nbytes();
  const uint64_t n = read_le64(base);
  R1_INPUT_CHECK(n <= file_size - 8, "{}: header length {} goes beyond the file of {} bytes",
                 path, n, file_size);
  f.data_start_ = static_cast<int64_t>(8 + n);
  const int64_t data_size = static_cast<int64_t>(file_size) - f.data_start_;

  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(base + 8),
                         reinterpret_cast<const char*>(base + 8 + n));
  } catch (const json::parse_error& e) {
    throw InputError(fmt::format("{}: bad JSON header: {}", path, e.what()));
  }
  R1_INPUT_CHECK(header.is_object(), "{}: header is not a JSON object", path);

  std::vector<std::pair<std::string, Entry>> by_offset;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      R1_INPUT_CHECK(e.is_object(), "{}: __metadata__ is not an object", path);
      for (const auto& [k, v] : e.items()) {
        R1_INPUT_CHECK(v.is_string(), "{}: __metadata__ value of '{}' is not a string", path, k);
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    by_offset.emplace_back(name, parse_entry(e, path, name, data_size));
  }
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return a.second.begin < b.second.begin;
  });
  // Two tensors sharing bytes would alias each other's views: reject (empty ones own nothing).
  const std::string* prev = nullptr;
  int64_t prev_end = 0;
  for (const auto& [name, e] : by_offset) {
    if (e.begin == e.end) continue;
    R1_INPUT_CHECK(prev == nullptr || e.begin >= prev_end, "{}: tensor '{}': data_offsets [{}, "
                   "{}] overlap tensor '{}' ending at {}", path, name, e.begin, e.end, *prev,
                   prev_end);
    prev = &name;
    prev_end = e.end;
  }
  for (auto& [name, e] : by_offset) {
    f.names_.push_back(name);
    f.entries_.emplace(name, std::move(e));
  }
  return f;
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  R1_INPUT_CHECK(it != entries_.end(), "{}: no tensor named '{}'", path_, name);
  return it->second;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const Entry& e = entry(name);
  const int64_t elem = static_cast<int64_t>(dtype_size(e.dtype));
  const int64_t at = data_start_ + e.begin;  // the mapping itself is page-aligned
  if (at % elem == 0)
    return Tensor::make_view(mapping_, e.shape, contiguous_strides(e.shape), at / elem, e.dtype);
  Tensor out = Tensor::empty(e.shape, e.dtype);
  std::memcpy(out.data_ptr(), static_cast<const char*>(mapping_->data()) + at,
              static_cast<size_t>(e.end - e.begin));
  return out;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Larger elements first (stable), as the HF writer orders them, so every tensor's offset is
  // a multiple of its element size and the reader can hand out views.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  int64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    R1_CHECK(name != "__metadata__", "save_safetensors({}): reserved tensor name", path);
    R1_CHECK(!header.contains(name), "save_safetensors({}): duplicate tensor name '{}'", path,
             name);
    const int64_t nbytes = static_cast<int64_t>(t.nbytes());
    header[name] = {{"dtype", dtype_safetensors_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((kHeaderAlign - text.size() % kHeaderAlign) % kHeaderAlign, ' ');

  AtomicFile file(path);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  file.write(len, 8);
  file.write(text);
  // One tensor at a time, so peak host memory is the largest tensor, not the whole file.
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    R1_CHECK(t.defined(), "save_safetensors({}): tensor '{}' is undefined", path, name);
    const Tensor host = t.detach().to(Device::cpu()).contiguous();
    file.write(host.data_ptr(), host.nbytes());
  }
  file.commit();
}

}  // namespace r1
