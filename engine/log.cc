#include "engine/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

namespace r1 {
namespace {

LogLevel level_from_env() {
  const char* e = std::getenv("R1_LOG_LEVEL");
  if (!e) return LogLevel::Info;
  if (!std::strcmp(e, "debug")) return LogLevel::Debug;
  if (!std::strcmp(e, "warn")) return LogLevel::Warn;
  if (!std::strcmp(e, "error")) return LogLevel::Error;
  return LogLevel::Info;
}

LogLevel& level_ref() {
  static LogLevel level = level_from_env();
  return level;
}

std::mutex& log_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

LogLevel log_level() { return level_ref(); }
void set_log_level(LogLevel level) { level_ref() = level; }

void log_write(LogLevel level, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(log_mutex());
  std::fprintf(stderr, "[r1 %s] %s\n", names[static_cast<int>(level)], msg.c_str());
  std::fflush(stderr);
}

void log_once(const std::string& key, const std::string& msg) {
  static std::set<std::string> seen;
  {
    std::lock_guard<std::mutex> lock(log_mutex());
    if (!seen.insert(key).second) return;
  }
  log_write(LogLevel::Info, msg);
}

}  // namespace r1
