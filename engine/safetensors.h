// safetensors I/O (the Hugging Face format): an 8-byte little-endian header length N, N bytes
// of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data buffer; offsets are relative to the buffer's start, tensors row-major.
//
// Reading maps the whole file once (MAP_PRIVATE: copy-on-write, so a write into a loaded
// tensor never reaches the file) and returns tensors as views that keep the mapping alive.
// Every malformed file is an InputError naming the file, the problem and the tensor.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

class SafetensorsFile {
 public:
  struct Entry {
    DType dtype;
    Shape shape;
    int64_t begin;  // byte offsets in the data buffer
    int64_t end;
  };

  // Maps and validates the header of `path` (the data itself is not read until used).
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // in data order
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const;  // InputError if absent
  // A CPU view over the mapping (copied out when the offset is not aligned to the element
  // size, which the format allows but a typed view cannot express). InputError if absent.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  std::shared_ptr<Storage> mapping_;  // the whole file
  int64_t data_start_ = 0;            // 8 + N
  std::map<std::string, Entry> entries_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device, dtype, strides; converted to contiguous host bytes) in the
// order given, atomically (engine/atomic_file.h). The header is padded with spaces so the
// data buffer starts 8-byte aligned, as the HF writer does. Names must be unique and not
// "__metadata__"; every tensor must be defined.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace r1
