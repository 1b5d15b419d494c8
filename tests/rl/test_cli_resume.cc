// The stage binaries end to end: r1-pretrain makes a small base, r1-grpo runs straight
// through, and r1-grpo killed with SIGKILL mid-run then rerun reproduces the straight run's
// metrics.jsonl record for record (timings aside) and its final weights bit for bit. Also:
// bad flags and files end with one line naming the problem and exit code 2.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "tests/harness.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kBin = R1_BIN_DIR;

int run(const std::string& cmd) {
  const int rc = std::system((cmd + " > /dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<json> metrics(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) continue;
    json j = json::parse(line);
    for (const char* k : {"rollout_s", "score_s", "update_s", "step_time_s", "rollout_tokens_per_s", "train_tokens_per_s"})
      j.erase(k);
    rows.push_back(j);
  }
  return rows;
}

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

size_t lines(const std::string& p) {
  std::ifstream f(p);
  size_t n = 0;
  for (std::string l; std::getline(f, l);) n += !l.empty();
  return n;
}

TEST(CliResume, KilledGrpoRunResumesBitwise) {
  const uint64_t seed = r1::test::case_seed(1) % 1000;
  const std::string dir = ::testing::TempDir() + "/r1_cli_resume_" + std::to_string(seed);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string env = "OMP_NUM_THREADS=1 ";
  ASSERT_EQ(run(env + kBin + "/r1-pretrain --config " R1_SOURCE_DIR "/configs/tiny.json --out " + dir + "/base --steps 3 --docs 300 --batch 4 --seq 128 --seed " +
                std::to_string(seed)), 0);
  {
    std::ofstream cfg(dir + "/grpo.json");
    cfg << json{{"max_steps", 5}, {"questions_per_step", 2}, {"num_generations", 4},
                {"max_completion_length", 24}, {"save_steps", 1}, {"beta", 0.01},
                {"seed", seed}, {"drop_zero_variance_groups", false}, {"learning_rate", 1e-3}}
               .dump();
  }
  const std::string grpo_args = "/r1-grpo --init " + dir + "/base/checkpoint --config " + dir + "/grpo.json --out ";
  const std::string grpo = env + kBin + grpo_args;
  ASSERT_EQ(run(grpo + dir + "/straight"), 0);

  // Kill -9 once the run has written two steps, then rerun until it finishes.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // "VAR=x exec prog": exec replaces the shell, so the pid killed below is r1-grpo's.
    const std::string cmd = env + "exec " + kBin + grpo_args + dir + "/killed > /dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (lines(dir + "/killed/metrics.jsonl") < 2 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const size_t at_kill = lines(dir + "/killed/metrics.jsonl");
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "r1-grpo ended before the kill (status " << status << ")";
  ASSERT_GE(at_kill, 2u) << "r1-grpo never got going";
  ASSERT_LT(lines(dir + "/killed/metrics.jsonl"), 5u) << "the run finished before the kill";
  ASSERT_EQ(run(grpo + dir + "/killed"), 0);

  const std::vector<json> a = metrics(dir + "/straight/metrics.jsonl"), b = metrics(dir + "/killed/metrics.jsonl");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].dump(), b[i].dump()) << "step " << i + 1;
  EXPECT_EQ(read_file(dir + "/straight/checkpoint/model.safetensors"),
            read_file(dir + "/killed/checkpoint/model.safetensors"));
  fs::remove_all(dir);
}

// r1-pretrain --val-rows: val_loss on the steps asked for (every --val-every and the last)
// and nowhere else; with a learning rate too small to move the freshly initialized model, the
// held-out rows' mean token loss is what the first training step saw on its own rows (both
// the near-uniform model's, about ln V), to within what differing rows give.
TEST(CliPretrain, ValLossOnHeldOutRows) {
  const uint64_t seed = r1::test::case_seed(2) % 1000;
  const std::string dir = ::testing::TempDir() + "/r1_cli_val_" + std::to_string(seed);
  fs::remove_all(dir);
  ASSERT_EQ(run("OMP_NUM_THREADS=1 " + kBin + "/r1-pretrain --config " R1_SOURCE_DIR
                "/configs/tiny.json --out " + dir + " --steps 5 --docs 300 --batch 4 --seq 128 "
                "--lr 1e-9 --val-rows 6 --val-every 2 --seed " + std::to_string(seed)), 0);
  const std::vector<json> m = metrics(dir + "/metrics.jsonl");
  ASSERT_EQ(m.size(), 5u);
  for (size_t i = 0; i < m.size(); ++i) {
    const int64_t step = m[i].at("step").get<int64_t>();
    EXPECT_EQ(m[i].contains("val_loss"), step % 2 == 0 || step == 5) << "step " << step;
  }
  const double first = m[0].at("loss").get<double>(), val = m[1].at("val_loss").get<double>();
  EXPECT_TRUE(std::isfinite(val));
  EXPECT_NEAR(val, first, 0.05 * first) << "held-out loss at step 2 vs the first step's";
  EXPECT_GT(val, 5.0) << "a near-uniform model over a vocabulary of hundreds of tokens";
  fs::remove_all(dir);
}

// --shadow-fp8-every / --shadow-bf16-every: the shadows' losses on the steps asked for (from
// the first, and the last), near the run's own loss but (fp8) not equal to it, and the run
// itself unchanged by them: every step's loss equal to a run without them.
TEST(CliPretrain, ShadowFp8LossBesideTheRunsOwn) {
  const uint64_t seed = r1::test::case_seed(3) % 1000;
  const std::string dir = ::testing::TempDir() + "/r1_cli_shadow_" + std::to_string(seed);
  fs::remove_all(dir);
  // 6 steps of `precision` without and with `shadows`: both runs' metrics, 6 records each.
  auto pair = [&](const std::string& precision, const std::string& shadows, const std::string& name) {
    const std::string cmd = "OMP_NUM_THREADS=1 " + kBin + "/r1-pretrain --config " R1_SOURCE_DIR
                            "/configs/tiny.json --steps 6 --docs 300 --batch 4 --seq 128 "
                            "--precision " + precision + " --seed " + std::to_string(seed) +
                            " --out " + dir + "/" + name;
    EXPECT_EQ(run(cmd + "-plain"), 0);
    EXPECT_EQ(run(cmd + "-shadow " + shadows), 0);
    std::pair<std::vector<json>, std::vector<json>> r{metrics(dir + "/" + name + "-plain/metrics.jsonl"),
                                                      metrics(dir + "/" + name + "-shadow/metrics.jsonl")};
    EXPECT_EQ(r.first.size(), 6u) << name;
    EXPECT_EQ(r.second.size(), 6u) << name;
    return r;
  };
  const auto [plain, m] = pair("bf16", "--shadow-fp8-every 2", "bf16");
  ASSERT_TRUE(plain.size() == 6 && m.size() == 6);
  for (size_t i = 0; i < m.size(); ++i) {
    const int64_t step = m[i].at("step").get<int64_t>();
    const double loss = m[i].at("loss").get<double>();
    EXPECT_EQ(loss, plain[i].at("loss").get<double>()) << "step " << step
                                                        << ": the shadow changed the run";
    const bool want = (step - 1) % 2 == 0 || step == 6;
    ASSERT_EQ(m[i].contains("shadow_fp8_loss"), want) << "step " << step;
    if (!want) continue;
    const double sh = m[i].at("shadow_fp8_loss").get<double>();
    EXPECT_TRUE(std::isfinite(sh)) << "step " << step;
    EXPECT_NE(sh, loss) << "step " << step << ": fp8 projections gave bf16's loss exactly";
    EXPECT_NEAR(sh, loss, 0.02 * loss) << "step " << step;
    // The tiny config has MoE layers: the share of routing choices fp8 changed, in [0, 1].
    ASSERT_TRUE(m[i].contains("shadow_fp8_route_diff")) << "step " << step;
    const double rd = m[i].at("shadow_fp8_route_diff").get<double>();
    EXPECT_TRUE(rd >= 0.0 && rd <= 1.0) << "step " << step << ": " << rd;
  }
  // An f32 run with both shadows (fp8 every 2, bf16 every 3): each on its steps, the run's
  // losses those of the f32 run without them.
  const auto [f, b] = pair("default", "--shadow-fp8-every 2 --shadow-bf16-every 3", "f32");
  ASSERT_TRUE(f.size() == 6 && b.size() == 6);
  for (size_t i = 0; i < b.size(); ++i) {
    const int64_t step = b[i].at("step").get<int64_t>();
    EXPECT_EQ(b[i].at("loss").get<double>(), f[i].at("loss").get<double>()) << "step " << step;
    EXPECT_EQ(b[i].contains("shadow_fp8_loss"), (step - 1) % 2 == 0 || step == 6) << step;
    EXPECT_EQ(b[i].contains("shadow_bf16_loss"), (step - 1) % 3 == 0 || step == 6) << step;
    if (b[i].contains("shadow_bf16_loss")) {
      EXPECT_NEAR(b[i].at("shadow_bf16_loss").get<double>(), b[i].at("loss").get<double>(),
                  0.02 * b[i].at("loss").get<double>()) << "step " << step;
    }
  }
  // --fp8-keep: an fp8 shadow that keeps every projection out of fp8 is the run itself (the
  // same loss bits, no routing choice changed); one that keeps only o_proj out is neither.
  const auto [f2, all_kept] = pair("default", "--shadow-fp8-every 1 --fp8-keep _proj", "keep-all");
  const auto [f3, o_kept] = pair("default", "--shadow-fp8-every 1 --fp8-keep o_proj", "keep-o");
  ASSERT_TRUE(all_kept.size() == 6 && o_kept.size() == 6 && b.size() == 6);
  for (size_t i = 0; i < all_kept.size(); ++i) {
    const double loss = all_kept[i].at("loss").get<double>();
    EXPECT_EQ(loss, f[i].at("loss").get<double>()) << "step " << i + 1;
    EXPECT_EQ(all_kept[i].at("shadow_fp8_loss").get<double>(), loss) << "step " << i + 1;
    EXPECT_EQ(all_kept[i].at("shadow_fp8_route_diff").get<double>(), 0.0) << "step " << i + 1;
    const double o = o_kept[i].at("shadow_fp8_loss").get<double>();
    EXPECT_NE(o, loss) << "step " << i + 1 << ": only o_proj kept, yet no fp8 at all";
    if (b[i].contains("shadow_fp8_loss")) {
      EXPECT_NE(o, b[i].at("shadow_fp8_loss").get<double>())
          << "step " << i + 1 << ": o_proj kept, yet the loss of all projections in fp8";
    }
  }
  // A run that is fp8 already has no fp8 shadow, nor a bf16 run a bf16 one: exit 2, nothing
  // trained, no directory. Nor has --fp8-keep without fp8, or with a name of no projection.
  const std::string one = kBin + "/r1-pretrain --config " R1_SOURCE_DIR "/configs/tiny.json "
                          "--steps 1 --docs 50 ";
  EXPECT_EQ(run(one + "--precision fp8 --shadow-fp8-every 2 --out " + dir + "/fp8"), 2);
  EXPECT_FALSE(fs::exists(dir + "/fp8")) << "a refused run left its directory";
  EXPECT_EQ(run(one + "--precision bf16 --shadow-bf16-every 2 --out " + dir + "/bf16"), 2);
  EXPECT_FALSE(fs::exists(dir + "/bf16")) << "a refused run left its directory";
  EXPECT_EQ(run(one + "--fp8-keep o_proj --out " + dir + "/keep-no-fp8"), 2);
  EXPECT_EQ(run(one + "--shadow-fp8-every 1 --fp8-keep o_prj --out " + dir + "/keep-typo"), 2);
  EXPECT_EQ(run(one + "--shadow-fp8-every 1 --fp8-keep layernorm --out " + dir + "/keep-norm"), 2);
  for (const char* d : {"/keep-no-fp8", "/keep-typo", "/keep-norm"})
    EXPECT_FALSE(fs::exists(dir + d)) << d << ": a refused run left its directory";
  fs::remove_all(dir);
}

TEST(CliErrors, BadInputIsOneLineAndExitCode2) {
  const std::string dir = ::testing::TempDir() + "/r1_cli_errors";
  fs::create_directories(dir);
  { std::ofstream(dir + "/bad.json") << "{\"num_generation\": 4}"; }
  { std::ofstream(dir + "/bad.jsonl") << "{\"prompt\": \"x\"}\nnot json\n"; }
  EXPECT_EQ(run(kBin + "/r1-grpo --out " + dir + "/g"), 2);  // no --init, nothing to resume
  EXPECT_EQ(run(kBin + "/r1-grpo --init " + dir + "/nope --out " + dir + "/g"), 2);
  EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --steps 0"), 2);
  EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --tasks nope --steps 1"), 2);
  EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --docs 50 --val-rows 100000 --steps 1"), 2);
  EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --device tpu --steps 1"), 2);
  EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --device cuda:1023 --steps 1"), 2);
  if (!r1::device_available(r1::DeviceType::CUDA)) {  // a device the machine does not have
    EXPECT_EQ(run(kBin + "/r1-pretrain --out " + dir + "/p --device cuda --steps 1"), 2);
  }
  EXPECT_FALSE(fs::exists(dir + "/p"));  // every refused pretrain run left nothing
  EXPECT_EQ(run(kBin + "/r1-eval --checkpoint " + dir + "/nope --prompts " + dir + "/bad.jsonl"), 2);
  EXPECT_EQ(run(kBin + "/r1-sample --checkpoint " + dir + "/nope --prompts " + dir + "/bad.jsonl"), 2);
  EXPECT_FALSE(fs::exists(dir + "/g/checkpoint"));
  fs::remove_all(dir);
}

}  // namespace
