#include "engine/error.h"

namespace r1::detail {

void throw_check_failure(const char* file, int line, const char* cond, const std::string& msg) {
  throw Error(fmt::format("{}:{}: check `{}` failed: {}", file, line, cond, msg));
}

}  // namespace r1::detail
