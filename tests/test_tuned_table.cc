// Tuned tables (engine/tuned_table.h): the format r1-fp8-tune writes and the FP8 GEMM reads,
// the lookup rule (smallest m at or above, else the largest), and bad tables refused with the
// file and line named; and r1-fp8-tune's sweep, which writes them, going on past
// configurations that fault.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/device.h"
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

// Runs r1-fp8-tune with args (env first), its output into log; the exit code.
int run_tuner(const std::string& env, const std::string& args, const std::string& log) {
  const std::string cmd =
      env + " " + std::string(R1_BIN_DIR) + "/r1-fp8-tune " + args + " > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The sweep's bookkeeping, with the tuner's fake worker (R1_FP8_TUNE_FAKE: configurations a,
// b, c at 100 + 10 index + shape TFLOP/s): a configuration that loses the context (b on shape
// 2) and one that kills the worker (c on shape 3) are recorded as failed and left out of the
// later shapes, the shape they hit is measured again without them, and a check failure (a on
// shape 4) leaves that shape without an entry. Exit 1 (failures), every shape done.
TEST(TunerSweep, GoesOnPastConfigurationsThatFaultOrKillTheWorker) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("r1_tuner_sweep_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string out = (dir / "t.tsv").string(), log = (dir / "log").string();
  const int rc = run_tuner("R1_FP8_TUNE_FAKE=b:2:lost,c:3:die,a:4:fail",
                           "--out " + out + " --m 64,128 --nk 256x512,256x1024 --wgrad-k none",
                           log);
  const std::string said = read_all(log);
  EXPECT_EQ(rc, 1) << said;
  const TunedTable t = parse_tuned_table(read_all(out), out, [](const std::string& c) {
    return c == "a" || c == "b" || c == "c";
  });
  ASSERT_EQ(t.entries.size(), 2u) << read_all(out);
  const auto& k512 = t.entries.at({256, 512});
  const auto& k1024 = t.entries.at({256, 1024});
  ASSERT_EQ(k512.size(), 2u);
  EXPECT_EQ(k512.at(64), "c");   // a 100, b 110, c 120
  EXPECT_EQ(k512.at(128), "c");  // b lost the context: a 101, c 121 measured again
  ASSERT_EQ(k1024.size(), 1u);   // shape 4: a failed, b and c left out: no entry
  EXPECT_EQ(k1024.at(64), "a");  // c killed the worker: a 102 alone
  EXPECT_NE(read_all(out).find("64 256 1024 a 102.0"), std::string::npos) << read_all(out);
  for (const char* want : {"M=128 N=256 K=512: b FAILED (an illegal address; it faulted",
                           "M=64 N=256 K=1024: c FAILED (the worker died in it (signal",
                           "M=128 N=256 K=1024: a FAILED (relative error 1)", "[4/4] M=128",
                           "ETA"})
    EXPECT_NE(said.find(want), std::string::npos) << "want: " << want << "\nlog:\n" << said;
  std::filesystem::remove_all(dir);
}

TEST(TunerSweep, BadFlagsExit2AndNoGpuWritesNothing) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("r1_tuner_flags_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string out = (dir / "t.tsv").string(), log = (dir / "log").string();
  EXPECT_EQ(run_tuner("", "--m 0", log), 2);
  EXPECT_NE(read_all(log).find("--m: '0' is not a positive size"), std::string::npos);
  EXPECT_EQ(run_tuner("", "--nk 12", log), 2);
  EXPECT_EQ(run_tuner("", "--wgrad-k", log), 2);
  // An output path that cannot be written: one line, exit 2, before any sweep.
  EXPECT_EQ(run_tuner("R1_FP8_TUNE_FAKE=x", "--out /proc/r1-no/t.tsv --m 64 --nk 8x8", log), 2);
  EXPECT_NE(read_all(log).find("/proc/r1-no"), std::string::npos) << read_all(log);
  if (!device_available(DeviceType::CUDA)) {  // with a GPU this would be a real sweep
    EXPECT_EQ(run_tuner("", "--out " + out, log), 0);
    EXPECT_NE(read_all(log).find("nothing to tune"), std::string::npos) << read_all(log);
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace r1
