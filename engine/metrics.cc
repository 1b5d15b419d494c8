#include "engine/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include "engine/error.h"

namespace r1 {

MetricsWriter::MetricsWriter(const std::string& path, bool resume) : path_(path) {
  f_ = std::fopen(path.c_str(), resume ? "a" : "w");
  R1_INPUT_CHECK(f_ != nullptr, "{}: cannot open for writing", path);
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!f_) return;
  // A string that is not UTF-8 (model text) gets U+FFFD rather than ending the run.
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  R1_CHECK(std::fwrite(line.data(), 1, line.size(), f_) == line.size(), "{}: write failed",
           path_);
  std::fflush(f_);
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  if (s < 60) return fmt::format("{:.1f}s", s);
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
}

Progress::Progress(std::string name, int64_t total, int64_t start, double min_interval_s)
    : name_(std::move(name)), total_(total), start_(start), min_interval_(min_interval_s),
      t0_(std::chrono::steady_clock::now()), last_(t0_), tty_(isatty(STDERR_FILENO) != 0) {}

void Progress::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (printed_ && since < min_interval_ && done < total_) return;
  last_ = now;
  printed_ = true;
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done - start_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : -1.0;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / total_ : 100.0;
  const std::string line =
      fmt::format("{}  step {}/{}  {:.1f}%  {:.2f} step/s  ETA {}  {}", name_, done, total_, pct,
                  rate, format_duration(eta), extra);
  std::fprintf(stderr, tty_ ? "\r\033[K%s" : "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_ && printed_) std::fprintf(stderr, "\n");
}

}  // namespace r1
