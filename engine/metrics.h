// Training telemetry: metrics.jsonl (one JSON object per step, flushed per line so a crash
// keeps everything before it) and a progress line with rate and ETA.
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <string>

namespace r1 {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Appends to path (creating directories is the caller's job). resume=false truncates.
  MetricsWriter(const std::string& path, bool resume);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const nlohmann::json& record);
  bool is_open() const { return f_ != nullptr; }

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

// "name  step 120/1000  12.0%  3.41 step/s  ETA 4m18s  loss 2.3104 ..." on stderr, at most
// every `min_interval_s` (always on the last step). Rewrites one line on a terminal,
// prints one line per update otherwise (logs, CI).
class Progress {
 public:
  Progress(std::string name, int64_t total, int64_t start = 0, double min_interval_s = 1.0);
  void update(int64_t done, const std::string& extra = "");
  void finish();

 private:
  std::string name_;
  int64_t total_, start_;
  double min_interval_;
  std::chrono::steady_clock::time_point t0_, last_;
  bool printed_ = false, tty_ = false;
};

std::string format_duration(double seconds);  // "4m18s", "1h02m", "12.3s"

}  // namespace r1
