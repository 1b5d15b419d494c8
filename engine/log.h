// Logging to stderr with a level filter (R1_LOG_LEVEL=debug|info|warn|error, default info).
#pragma once
#include <fmt/format.h>

#include <string>

namespace r1 {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_write(LogLevel level, const std::string& msg);

template <class... A>
void log_debug(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Debug) log_write(LogLevel::Debug, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_info(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Info) log_write(LogLevel::Info, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_warn(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LogLevel::Warn) log_write(LogLevel::Warn, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_error(fmt::format_string<A...> f, A&&... a) {
  log_write(LogLevel::Error, fmt::format(f, std::forward<A>(a)...));
}

// Logs `msg` the first time a given `key` is seen, never again (for "fast path not taken").
void log_once(const std::string& key, const std::string& msg);

}  // namespace r1
