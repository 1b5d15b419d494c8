// Tuned tables (engine/tuned_table.h): the format r1-fp8-tune writes and the FP8 GEMM reads,
// the lookup rule (smallest m at or above, else the largest), and bad tables refused with the
// file and line named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/error.h"
#include "engine/tuned_table.h"

namespace r1 {
namespace {

bool known(const std::string& name) {
  return name == "128x128x6" || name == "64x64x8" || name == "64x128x8";
}

TEST(TunedTable, ParsesAndLooksUpByTheNearestMAtOrAbove) {
  const std::string text =
      "# Tuned tile shapes of the wgmma FP8 GEMM on NVIDIA H200 (132 SMs)\n"
      "# m n k config tflops\n"
      "64 2112 7168 64x64x8 101.5  # 64x64x8 101 128x128x6 90\n"
      "\n"
      "512 2112 7168 64x128x8 600.0\n"
      "4096 2112 7168 128x128x6 900.0\n"
      "  4096   7168 2048   64x128x8\n";
  const TunedTable t = parse_tuned_table(text, "fp8_gemm-h200.tsv", known);
  ASSERT_EQ(t.entries.size(), 2u);
  auto at = [&](int64_t m, int64_t n, int64_t k) {
    const auto e = t.lookup(m, n, k);
    return e ? std::to_string(e->first) + " " + e->second : std::string("none");
  };
  EXPECT_EQ(at(1, 2112, 7168), "64 64x64x8");
  EXPECT_EQ(at(64, 2112, 7168), "64 64x64x8");
  EXPECT_EQ(at(65, 2112, 7168), "512 64x128x8");
  EXPECT_EQ(at(4096, 2112, 7168), "4096 128x128x6");
  EXPECT_EQ(at(100000, 2112, 7168), "4096 128x128x6");  // above every entry: the largest
  EXPECT_EQ(at(10, 7168, 2048), "4096 64x128x8");
  EXPECT_EQ(at(64, 2112, 7169), "none");
  EXPECT_EQ(at(64, 7168, 7168), "none");
}

TEST(TunedTable, MalformedLinesNameTheFileAndLine) {
  const std::pair<const char*, const char*> bad[] = {
      {"64 2112 7168\n", "t.tsv:1: want 'm n k config'"},
      {"# ok\n64 2112 x7168 64x64x8\n", "t.tsv:2: want 'm n k config'"},
      {"0 2112 7168 64x64x8\n", "t.tsv:1: want 'm n k config'"},
      {"-64 2112 7168 64x64x8\n", "t.tsv:1: want 'm n k config'"},
      {"abc 1 2 64x64x8\n", "t.tsv:1: want 'm n k config'"},
      {"64 2112 7168 256x256x4\n", "t.tsv:1: unknown configuration '256x256x4'"},
      {"64 2112 7168 64x64x8\n64 2112 7168 128x128x6\n", "t.tsv:2: m 64 n 2112 k 7168 given twice"},
  };
  for (auto [text, want] : bad) {
    try {
      parse_tuned_table(text, "t.tsv", known);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos)
          << "got: " << e.what() << "\nwant: " << want;
    }
  }
}

TEST(TunedTable, MissingFileIsNoTableAndAFileIsRead) {
  const auto dir = std::filesystem::temp_directory_path() / "r1_tuned_table_test";
  std::filesystem::create_directories(dir);
  EXPECT_FALSE(load_tuned_table((dir / "absent.tsv").string(), known).has_value());
  const std::string path = (dir / "t.tsv").string();
  std::ofstream(path) << "128 4096 7168 128x128x6 1000\n";
  const auto t = load_tuned_table(path, known);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->path, path);
  ASSERT_TRUE(t->lookup(128, 4096, 7168).has_value());
  EXPECT_EQ(t->lookup(128, 4096, 7168)->second, "128x128x6");
  std::ofstream(path) << "128 4096 7168\n";
  EXPECT_THROW(load_tuned_table(path, known), InputError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace r1
