#include "engine/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace r1 {
namespace {

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A directory entry survives a crash only once the directory itself is fsync'd.
void fsync_dir(const std::string& dir, const std::string& path) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  R1_INPUT_CHECK(fd >= 0, "{}: cannot open directory {} to sync it: {}", path, dir,
                 std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  R1_INPUT_CHECK(rc == 0, "{}: fsync of directory {} failed: {}", path, dir,
                 std::strerror(err));
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  R1_INPUT_CHECK(!path_.empty() && path_.back() != '/', "'{}': not a file path", path_);
  static std::atomic<uint64_t> counter{0};
  const std::string dir = dir_of(path_);
  temp_path_ = (dir == "/" ? "" : dir) + "/." + base_of(path_) + ".tmp." +
               std::to_string(::getpid()) + "." + std::to_string(counter++);
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  R1_INPUT_CHECK(fd_ >= 0, "{}: cannot create temp file {}: {}", path_, temp_path_,
                 std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(temp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  R1_CHECK(fd_ >= 0 && !committed_, "AtomicFile::write after commit ({})", path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    R1_INPUT_CHECK(w > 0, "{}: write failed: {}", path_, w < 0 ? std::strerror(errno) : "no progress");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  R1_CHECK(fd_ >= 0 && !committed_, "AtomicFile::commit twice ({})", path_);
  R1_INPUT_CHECK(::fsync(fd_) == 0, "{}: fsync failed: {}", path_, std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  R1_INPUT_CHECK(rc == 0, "{}: close failed: {}", path_, std::strerror(errno));
  R1_INPUT_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0,
                 "{}: rename from {} failed: {}", path_, temp_path_, std::strerror(errno));
  committed_ = true;
  fsync_dir(dir_of(path_), path_);
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

}  // namespace r1
