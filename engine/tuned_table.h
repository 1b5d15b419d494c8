// Tuned tables: per-GPU kernel configurations chosen by a sweep (r1-fp8-tune writes the FP8
// GEMM's) and read by the kernel at run time. Text, one entry per line:
//
//   m n k config [anything after the config: timings, a '#' comment]
//
// '#' starts a comment; blank lines are skipped. For a call of shape (m, n, k) the entry for
// (n, k) with the smallest m at or above the call's m wins, else the one with the largest m.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

namespace r1 {

struct TunedTable {
  std::string path;
  // (n, k) -> m -> configuration name
  std::map<std::pair<int64_t, int64_t>, std::map<int64_t, std::string>> entries;

  // The configuration for (m, n, k) and the m of the entry it came from; nullopt when the
  // table has no entry for (n, k).
  std::optional<std::pair<int64_t, std::string>> lookup(int64_t m, int64_t n, int64_t k) const;
};

// Parses a table's text (`path` names it in messages); valid(name) says which configuration
// names exist. A malformed line (not four fields, sizes not positive integers, an unknown
// configuration, an (m, n, k) given twice) throws InputError "path:line: problem": a table
// half read would mix tuned and default choices without a word.
TunedTable parse_tuned_table(const std::string& text, const std::string& path,
                             const std::function<bool(const std::string&)>& valid);

// The table at `path`: nullopt when there is no such file; InputError as above, or when the
// file cannot be read.
std::optional<TunedTable> load_tuned_table(const std::string& path,
                                           const std::function<bool(const std::string&)>& valid);

}  // namespace r1
