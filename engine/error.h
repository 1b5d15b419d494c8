// Errors. Two kinds, both exceptions:
//  - Error: a broken invariant or a failed call inside r1 (a bug, or a device failure).
//  - InputError: the user's input is wrong (a file, a flag, a config). Stage mains catch it,
//    print its one line and exit with code 2; nothing partial is left behind.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace r1 {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InputError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void throw_check_failure(const char* file, int line, const char* cond,
                                      const std::string& msg);
}  // namespace detail

}  // namespace r1

// R1_CHECK(cond, "fmt {}", args...): throws r1::Error "file:line: check `cond` failed: msg".
#define R1_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::r1::detail::throw_check_failure(__FILE__, __LINE__, #cond,                       \
                                        ::fmt::format(__VA_ARGS__));                     \
  } while (0)

// R1_INPUT_CHECK(cond, "file {}: problem"): throws r1::InputError with exactly the message.
#define R1_INPUT_CHECK(cond, ...)                                                        \
  do {                                                                                   \
    if (!(cond)) [[unlikely]] throw ::r1::InputError(::fmt::format(__VA_ARGS__));        \
  } while (0)
