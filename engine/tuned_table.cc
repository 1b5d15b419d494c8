// Tuned tables (engine/tuned_table.h).
#include "engine/tuned_table.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "engine/error.h"

namespace r1 {
namespace {

bool parse_size(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  *v = std::strtoll(s.c_str(), nullptr, 10);
  return *v > 0;
}

}  // namespace

std::optional<std::pair<int64_t, std::string>> TunedTable::lookup(int64_t m, int64_t n,
                                                                  int64_t k) const {
  const auto it = entries.find({n, k});
  if (it == entries.end() || it->second.empty()) return std::nullopt;
  const auto at = it->second.lower_bound(m);
  const auto& e = at != it->second.end() ? *at : *it->second.rbegin();
  return std::pair<int64_t, std::string>{e.first, e.second};
}

TunedTable parse_tuned_table(const std::string& text, const std::string& path,
                             const std::function<bool(const std::string&)>& valid) {
  TunedTable t;
  t.path = path;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (const auto h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    if (f.empty()) continue;
    int64_t m = 0, n = 0, k = 0;
    if (f.size() < 4 || !parse_size(f[0], &m) || !parse_size(f[1], &n) || !parse_size(f[2], &k))
      throw InputError(fmt::format("{}:{}: want 'm n k config' with positive sizes, got '{}'",
                                   path, lineno, line));
    if (!valid(f[3]))
      throw InputError(fmt::format("{}:{}: unknown configuration '{}'", path, lineno, f[3]));
    auto& by_m = t.entries[{n, k}];
    if (!by_m.emplace(m, f[3]).second)
      throw InputError(fmt::format("{}:{}: m {} n {} k {} given twice", path, lineno, m, n, k));
  }
  return t;
}

std::optional<TunedTable> load_tuned_table(const std::string& path,
                                           const std::function<bool(const std::string&)>& valid) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::nullopt;
    throw InputError(fmt::format("{}: cannot read the tuned table ({})", path, std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InputError(fmt::format("{}: read error", path));
  return parse_tuned_table(ss.str(), path, valid);
}

}  // namespace r1
