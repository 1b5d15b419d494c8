// Atomic file writes: a reader sees either the old file or the complete new one, never a
// half-written file, even across a crash. The bytes go to a temp file in the target's
// directory (rename is only atomic within one file system), which is fsync'd, renamed over
// the target, and the directory fsync'd so the rename itself is durable.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace r1 {

class AtomicFile {
 public:
  // Creates "<dir>/.<name>.tmp.<pid>.<n>" next to `path`; InputError if it cannot.
  explicit AtomicFile(std::string path);
  // Without commit() (an exception mid-way), the temp file is removed and `path` untouched.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // all n bytes, or InputError (disk full, ...)
  void write(std::string_view s) { write(s.data(), s.size()); }
  // fsync, close, rename over the target, fsync the directory.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// The whole content at once.
void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace r1
