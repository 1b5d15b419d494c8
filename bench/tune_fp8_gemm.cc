// r1-fp8-tune: the tile-shape sweep of the wgmma FP8 GEMM (kernels/cuda/fp8/gemm_fp8_wgmma.cu)
// on the GPU it runs on. For each shape, every compiled configuration is first checked
// against the simple CUDA kernel (the on-GPU oracle: normwise relative error below 1e-3, no
// NaN), then timed (CUDA events, 10 back-to-back launches per sample, the median of 5
// samples after a warm-up); the fastest passing configuration goes into the tuned table,
// written atomically where the kernel reads it (fp8_wgmma_table_path, or --out).
//
//   r1-fp8-tune [--out FILE] [--m 64,128,...] [--nk 2112x7168,...] [--wgrad-k 4096,...|none]
//
// Shapes:
//   forward  M in --m (default 64 .. 4096, powers of two) x N x K in --nk (default
//            DeepSeek-V3's linear layers: 2112x7168, 24576x1536, 32768x512, 7168x16384,
//            4096x7168, 7168x2048); b with 128x128 block scales, bf16 out (dgrad has the
//            same form).
//   wgrad    for each N x K of --nk and each token count T of --wgrad-k (default 4096): the
//            weight gradient dw (M = N, N = K) = dy^T x over K = T tokens, as linear_fp8 runs
//            it: b with 1x128 row scales (1D1D), f32 out. Its (M, N, K) keys its own table
//            lines; an (M, N, K) that is also a forward shape keeps the forward's entry.
//
// A configuration that faults (a trap, an illegal address) leaves the CUDA context unusable
// for the rest of its process. So the sweep runs in a worker process (this binary again,
// with the internal flags --worker FROM and --exclude CONFIGS) that reports every result as a
// line on a pipe; the parent never touches the GPU. When a worker loses its context or dies,
// the parent records the configuration it was running as failed and starts a new worker at
// the same shape without it, so one broken configuration costs itself, not the sweep. The
// table is rewritten (atomically) after every shape: a sweep cut short by a time limit leaves
// the shapes it finished. A progress line per shape gives the rate and the ETA.
//
// R1_FP8_TUNE_FAKE (tests only) replaces the worker by a scripted one without a GPU.
//
// Exit 1 when a configuration fails its check or faults (the table is still written from the
// passing ones), 2 on bad flags or an output path that cannot be written, 0 otherwise;
// without a Hopper GPU it says so and exits 0 having written nothing.
#include <fcntl.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/kernels.h"
#include "engine/tensor.h"

#if defined(R1_HAVE_CUDA)
#include <cuda_runtime.h>

#include "bench/cuda_data.h"
#include "engine/cuda/stream.h"
#include "kernels/cuda/fp8/gemm_fp8_simple.h"
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"
#endif

extern char** environ;

namespace {

constexpr int kChannelFd = 3;  // the worker's report pipe

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "r1-fp8-tune: %s\nusage: r1-fp8-tune [--out FILE] [--m 64,128,...] "
               "[--nk 2112x7168,...] [--wgrad-k 4096,...|none]\n", problem.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t e = s.find(sep, at);
    out.push_back(s.substr(at, e == std::string::npos ? std::string::npos : e - at));
    if (e == std::string::npos) break;
    at = e + 1;
  }
  return out;
}

int64_t parse_positive(const std::string& flag, const std::string& v, int64_t max = 1ll << 20) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x <= 0 || x > max)
    usage(fmt::format("{}: '{}' is not a positive size", flag, v));
  return x;
}

struct TuneShape {
  int64_t m, n, k;
  bool wgrad;  // b with 1x128 row scales (1D1D), f32 out; else 128x128 block scales, bf16 out
};

std::string shape_name(const TuneShape& s) {
  return fmt::format("M={} N={} K={}{}", s.m, s.n, s.k, s.wgrad ? " (wgrad 1D1D)" : "");
}

// The forward shapes, then the wgrad ones; an (m, n, k) given twice once (the table's reader
// rejects a key given twice).
std::vector<TuneShape> make_shapes(const std::vector<int64_t>& ms,
                               const std::vector<std::pair<int64_t, int64_t>>& nks,
                               const std::vector<int64_t>& wgrad_ks) {
  std::vector<TuneShape> shapes;
  auto add = [&](const TuneShape& s) {
    if (std::none_of(shapes.begin(), shapes.end(),
                     [&](const TuneShape& x) { return x.m == s.m && x.n == s.n && x.k == s.k; }))
      shapes.push_back(s);
  };
  for (auto [n, k] : nks)
    for (int64_t m : ms) add({m, n, k, false});
  for (int64_t t : wgrad_ks)
    for (auto [n, k] : nks) add({n, k, t, true});
  return shapes;
}

// One report line: tab-separated fields, none holding a tab or a newline.
std::string clean(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return s;
}

class Channel {
 public:
  explicit Channel(FILE* f) : f_(f) {}
  template <class... A>
  void say(fmt::format_string<A...> f, A&&... a) {
    const std::string line = fmt::format(f, std::forward<A>(a)...) + "\n";
    std::fputs(line.c_str(), f_);
    std::fflush(f_);
  }

 private:
  FILE* f_;
};

// A worker without a GPU for the tests of the sweep's bookkeeping (tests/test_tuned_table.cc):
// configurations "a", "b", "c" pass at 100 + 10 x (their index) + (the shape's index)
// TFLOP/s unless R1_FP8_TUNE_FAKE lists them as CONFIG:SHAPE:ACTION (shapes counted from 1;
// ACTION fail, lost: the context lost, die: the worker killed).
int fake_worker(const std::vector<TuneShape>& shapes, size_t first,
                const std::set<std::string>& exclude, const std::string& out_flag,
                const std::string& spec, Channel& ch) {
  ch.say("gpu\t1\t{}\tfake GPU", clean(out_flag.empty() ? "fp8_gemm-fake.tsv" : out_flag));
  const std::vector<std::string> acts = split(spec, ',');
  for (size_t i = first; i < shapes.size(); ++i) {
    const std::string names[] = {"a", "b", "c"};
    for (int c = 0; c < 3; ++c) {
      if (exclude.count(names[c])) continue;
      ch.say("begin\t{}\t{}", i, names[c]);
      const std::string key = fmt::format("{}:{}:", names[c], i + 1);
      std::string act;
      for (const std::string& x : acts)
        if (x.rfind(key, 0) == 0) act = x.substr(key.size());
      if (act == "die") raise(SIGKILL);  // as a crash would, without a core file
      if (act == "lost") {
        ch.say("lost\t{}\t{}\tan illegal address", i, names[c]);
        return 3;
      }
      if (act == "fail") ch.say("fail\t{}\t{}\trelative error 1", i, names[c]);
      else ch.say("pass\t{}\t{}\t{}", i, names[c], 100 + 10 * c + static_cast<int>(i));
    }
    ch.say("done\t{}", i);
  }
  return 0;
}

}  // namespace

#if defined(R1_HAVE_CUDA)
namespace r1 {
namespace {

const Device kGpu = Device::cuda(0);

double median_ms(const std::function<void()>& fn) {
  const cudaStream_t st = cuda::current_stream(0);
  fn();
  synchronize(kGpu);
  cuda::Event a(true), b(true);
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    a.record(st);
    for (int r = 0; r < 10; ++r) fn();
    b.record(st);
    b.synchronize();
    ms.push_back(a.elapsed_ms(b) / 10);
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

// Normwise relative error of got against want (both f32 on the device); inf when got has a
// NaN or an infinity.
double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = got.to_float_vector(), w = want.to_float_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += (double{g[i]} - w[i]) * (double{g[i]} - w[i]);
    den += double{w[i]} * w[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// After an exception: true when the context is gone (a sticky error), not a launch refused.
bool context_lost() {
  const cudaError_t ce = cudaDeviceSynchronize();
  return ce != cudaSuccess && cudaGetLastError() != cudaSuccess &&
         cudaDeviceSynchronize() != cudaSuccess;
}

// The worker: shapes[first ..], every configuration but `exclude`, reported on ch:
//   gpu <sms> <table path> <name> | nogpu       first
//   begin <i> <config>                          before a configuration's launches
//   pass <i> <config> <tflops> | fail <i> <config> <why>
//   lost <i> <config> <why>                     the context is gone; the worker exits 3
//   done <i>                                    shape i finished
int worker(const std::vector<TuneShape>& shapes, size_t first, const std::set<std::string>& exclude,
           const std::string& out_flag, Channel& ch) {
  if (!device_available(DeviceType::CUDA) || !cuda::fp8_wgmma_supported(0)) {
    ch.say("nogpu");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  ch.say("gpu\t{}\t{}\t{}", prop.multiProcessorCount,
         clean(out_flag.empty() ? cuda::fp8_wgmma_table_path(0) : out_flag), clean(prop.name));
  for (size_t i = first; i < shapes.size(); ++i) {
    const TuneShape& s = shapes[i];
    std::optional<Tensor> aq, as, bq, bs, want, d32, d16, want16;
    try {
      const Tensor a = bench::dev_randn(r1::Shape{s.m, s.k}, DType::BF16, 11),
                   b = bench::dev_randn(r1::Shape{s.n, s.k}, DType::BF16, 12);
      aq = Tensor::empty({s.m, s.k}, DType::E4M3, kGpu);
      as = Tensor::empty({s.m, fp8_blocks(s.k)}, DType::F32, kGpu);
      bq = Tensor::empty({s.n, s.k}, DType::E4M3, kGpu);
      bs = Tensor::empty({s.wgrad ? s.n : fp8_blocks(s.n), fp8_blocks(s.k)}, DType::F32, kGpu);
      kernels::quantize_fp8_rows()(kGpu, a, *aq, *as);
      if (s.wgrad) kernels::quantize_fp8_rows()(kGpu, b, *bq, *bs);
      else kernels::quantize_fp8_blocks()(kGpu, b, *bq, *bs);
      want = Tensor::empty({s.m, s.n}, DType::F32, kGpu);
      cuda::gemm_fp8_blockscaled_simple(*aq, *as, *bq, *bs, *want);
      d32 = Tensor::empty({s.m, s.n}, DType::F32, kGpu);
      if (!s.wgrad) {
        d16 = Tensor::empty({s.m, s.n}, DType::BF16, kGpu);
        // The reference rounded to bf16, for the timed (bf16 out) instantiation's check.
        want16 = want->to(DType::BF16).to(DType::F32);
      }
    } catch (const std::exception& e) {
      if (context_lost()) {
        ch.say("lost\t{}\t-\tsetting up the shape: {}", i, clean(e.what()));
        return 3;
      }
      ch.say("fail\t{}\t-\tsetting up the shape: {}", i, clean(e.what()));
      ch.say("done\t{}", i);
      continue;
    }
    for (const cuda::Fp8WgmmaConfig& c : cuda::fp8_wgmma_configs()) {
      if (exclude.count(c.name())) continue;
      ch.say("begin\t{}\t{}", i, c.name());
      try {
        const cudaStream_t st = cuda::current_stream(0);
        cudaMemsetAsync(d32->data_ptr(), 0xff, d32->nbytes(), st);  // NaN
        cuda::gemm_fp8_blockscaled_wgmma(*aq, *as, *bq, *bs, *d32, &c);
        const double err = rel_error(*d32, *want);
        double err16 = 0;
        if (d16) {
          cudaMemsetAsync(d16->data_ptr(), 0xff, d16->nbytes(), st);
          cuda::gemm_fp8_blockscaled_wgmma(*aq, *as, *bq, *bs, *d16, &c);
          err16 = rel_error(d16->to(DType::F32), *want16);
        }
        if (!(err < 1e-3) || !(err16 < 1e-2)) {
          ch.say("fail\t{}\t{}\trelative error {:.3g} f32 out{}", i, c.name(), err,
                 d16 ? fmt::format(", {:.3g} bf16 out", err16) : "");
          continue;
        }
        Tensor& timed = d16 ? *d16 : *d32;
        const double ms =
            median_ms([&] { cuda::gemm_fp8_blockscaled_wgmma(*aq, *as, *bq, *bs, timed, &c); });
        ch.say("pass\t{}\t{}\t{:.1f}", i, c.name(), 2.0 * s.m * s.n * s.k / (ms * 1e-3) / 1e12);
      } catch (const std::exception& e) {
        // A configuration that throws (a launch it cannot make) is a failed one; a sticky
        // error (a fault) ends this worker, and the parent starts another without it.
        if (context_lost()) {
          ch.say("lost\t{}\t{}\t{}", i, c.name(), clean(e.what()));
          return 3;
        }
        ch.say("fail\t{}\t{}\tthrew: {}", i, c.name(), clean(e.what()));
      }
    }
    ch.say("done\t{}", i);
  }
  return 0;
}

}  // namespace
}  // namespace r1
#endif

namespace {

struct ShapeResult {
  std::vector<std::pair<std::string, double>> pass;  // config, TFLOP/s
  std::vector<std::pair<std::string, std::string>> failed;  // config, why
};

// Starts this binary with args; its report pipe (fd kChannelFd there) is returned for reading.
FILE* spawn_worker(const std::vector<std::string>& args, pid_t* pid) {
  int p[2];
  if (pipe(p) != 0) throw r1::Error("r1-fp8-tune: pipe failed");
  // Both ends above the channel's number (dup2 onto itself would keep close-on-exec off),
  // close-on-exec (the child gets only its dup).
  const int rd = fcntl(p[0], F_DUPFD_CLOEXEC, 10), wr = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
  close(p[0]);
  close(p[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, wr, kChannelFd);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int rc = posix_spawn(pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(wr);
  if (rc != 0) {
    close(rd);
    throw r1::Error(fmt::format("r1-fp8-tune: cannot start a worker: {}", std::strerror(rc)));
  }
  return fdopen(rd, "r");
}

std::string how_it_ended(int status) {
  if (WIFEXITED(status)) return fmt::format("exit {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {}", WTERMSIG(status));
  return "unknown end";
}

std::string table_text(const std::string& gpu, int sms, const std::vector<TuneShape>& shapes,
                       const std::vector<ShapeResult>& res, size_t done) {
  std::string t = fmt::format(
      "# Tuned tile shapes of the wgmma FP8 GEMM on {} ({} SMs), written by r1-fp8-tune.\n"
      "# m n k config tflops   # every passing configuration's TFLOP/s (forward: bf16 out, "
      "128x128 b scales; wgrad: f32 out, 1x128 b scales)\n",
      gpu, sms);
  for (size_t i = 0; i < done; ++i) {
    const ShapeResult& r = res[i];
    if (r.pass.empty()) continue;
    const auto best = *std::max_element(r.pass.begin(), r.pass.end(),
                                        [](const auto& x, const auto& y) { return x.second < y.second; });
    std::string all;
    for (const auto& [c, tf] : r.pass) all += fmt::format(" {} {:.0f}", c, tf);
    t += fmt::format("{} {} {} {} {:.1f}  #{}{}\n", shapes[i].m, shapes[i].n, shapes[i].k,
                     best.first, best.second, shapes[i].wgrad ? " wgrad" : "", all);
  }
  return t;
}

// The sweep's parent: starts workers, collects their reports, writes the table.
int sweep(const std::vector<std::string>& base_args, const std::vector<TuneShape>& shapes) {
  std::vector<ShapeResult> res(shapes.size());
  std::set<std::string> excluded;  // configurations that lost a worker its context
  std::string gpu, out;
  int sms = 0;
  size_t next = 0;  // the first shape not done
  int faults = 0, restarts = 0;
  const auto t0 = std::chrono::steady_clock::now();
  // TuneShape i is over (measured, or skipped): its failures said, the table rewritten, progress.
  auto finished = [&](size_t i) {
    next = i + 1;
    for (const auto& [c, why] : res[i].failed)
      std::fprintf(stderr, "r1-fp8-tune: %s: %s FAILED (%s)\n", shape_name(shapes[i]).c_str(),
                   c.c_str(), why.c_str());
    r1::write_file_atomic(out, table_text(gpu, sms, shapes, res, next));
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string all;
    for (const auto& [c, tf] : res[i].pass) all += fmt::format(" {} {:.0f}", c, tf);
    std::printf("[%zu/%zu] %s:%s  (%.2f shapes/s, ETA %.0f s)\n", next, shapes.size(),
                shape_name(shapes[i]).c_str(), all.c_str(), static_cast<double>(next) / el,
                el / static_cast<double>(next) * static_cast<double>(shapes.size() - next));
    std::fflush(stdout);
  };
  while (next < shapes.size()) {
    std::vector<std::string> args = base_args;
    args.insert(args.end(), {"--worker", std::to_string(next + 1)});  // counted from 1
    if (!excluded.empty()) {
      std::string ex;
      for (const std::string& c : excluded) ex += (ex.empty() ? "" : ",") + c;
      args.insert(args.end(), {"--exclude", ex});
    }
    // A shape started again: its passes are measured again; its faults stay recorded.
    res[next].pass.clear();
    std::erase_if(res[next].failed, [&](const auto& f) { return !excluded.count(f.first); });
    pid_t pid = 0;
    FILE* in = spawn_worker(args, &pid);
    std::optional<std::pair<size_t, std::string>> running;  // begun, not yet reported
    bool lost = false;
    char* buf = nullptr;
    size_t cap = 0;
    ssize_t len;
    try {
      while ((len = getline(&buf, &cap, in)) > 0) {
        std::string line(buf, static_cast<size_t>(len));
        if (line.back() != '\n') break;  // cut short: a worker that died while writing it
        line.pop_back();
        const std::vector<std::string> f = split(line, '\t');
        const std::string& kind = f[0];
        const size_t i = f.size() > 1 && kind != "gpu" ? std::stoul(f[1]) : 0;
        if (i >= shapes.size()) throw r1::Error(fmt::format("r1-fp8-tune: a worker said '{}'", line));
        if (kind == "nogpu") {
          std::printf("r1-fp8-tune: no Hopper (sm_90) GPU here, or built without CUDA; nothing to tune\n");
          fclose(in);
          waitpid(pid, nullptr, 0);
          std::free(buf);
          return 0;
        } else if (kind == "gpu" && f.size() == 4) {
          if (gpu.empty()) {
            sms = std::stoi(f[1]);
            out = f[2];
            gpu = f[3];
            // The output's folder made, and writable, before the sweep rather than after it.
            const std::filesystem::path dir = std::filesystem::path(out).parent_path();
            std::error_code ec;
            if (!dir.empty()) std::filesystem::create_directories(dir, ec);
            r1::write_file_atomic(out + ".probe", "");
            std::filesystem::remove(out + ".probe", ec);
          }
        } else if (kind == "begin" && f.size() == 3) {
          running = {i, f[2]};
        } else if ((kind == "pass" || kind == "fail" || kind == "lost") && f.size() == 4) {
          if (kind == "pass") res[i].pass.emplace_back(f[2], std::stod(f[3]));
          else res[i].failed.emplace_back(f[2], kind == "lost" ? f[3] + "; it faulted: "
                                                                 "the sweep goes on without it"
                                                               : f[3]);
          if (kind == "lost") {
            lost = true;
            ++faults;
            if (f[2] != "-") excluded.insert(f[2]);
            else finished(i);  // the shape itself (its set-up) lost the context: skip it
          }
          running.reset();
        } else if (kind == "done" && f.size() == 2) {
          finished(i);
        } else {
          throw r1::Error(fmt::format("r1-fp8-tune: a worker said '{}'", line));
        }
      }
    } catch (...) {
      kill(pid, SIGKILL);
      fclose(in);
      waitpid(pid, nullptr, 0);
      std::free(buf);
      throw;
    }
    std::free(buf);
    fclose(in);
    int status = 0;
    waitpid(pid, &status, 0);
    if (next >= shapes.size()) break;
    if (lost) continue;
    if (gpu.empty() || ++restarts > 64)
      throw r1::Error(fmt::format("r1-fp8-tune: a worker ended ({}) at shape {} of {} without "
                                  "saying why", how_it_ended(status), next + 1, shapes.size()));
    ++faults;
    if (running) {  // the worker died inside a configuration: that one is the suspect
      res[running->first].failed.emplace_back(
          running->second, fmt::format("the worker died in it ({}): the sweep goes on without "
                                       "it", how_it_ended(status)));
      excluded.insert(running->second);
    } else {  // it died setting up the shape: skip the shape
      res[next].failed.emplace_back("-", fmt::format("the worker died setting the shape up ({})",
                                                     how_it_ended(status)));
      finished(next);
    }
  }
  int failures = 0;
  for (const ShapeResult& r : res) failures += static_cast<int>(r.failed.size());
  std::printf("r1-fp8-tune: wrote %s (%zu shapes)%s%s\n", out.c_str(), shapes.size(),
              failures ? "; some configurations FAILED their checks" : "",
              faults ? "; some faulted and were left out of the later shapes" : "");
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  std::vector<int64_t> ms = {64, 128, 256, 512, 1024, 2048, 4096};
  std::vector<std::pair<int64_t, int64_t>> nks = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                                  {7168, 16384}, {4096, 7168},  {7168, 2048}};
  std::vector<int64_t> wgrad_ks = {4096};
  std::optional<size_t> worker_from;  // internal: this process is a worker
  std::set<std::string> exclude;      // internal: configurations a worker leaves out
  std::vector<std::string> base_args = {argv[0]};  // the user's flags, for the workers
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) usage(f + " needs a value");
    const std::string v = argv[++i];
    if (f != "--worker" && f != "--exclude") base_args.insert(base_args.end(), {f, v});
    if (f == "--out") {
      out = v;
    } else if (f == "--m") {
      ms.clear();
      for (const std::string& x : split(v, ',')) ms.push_back(parse_positive(f, x));
    } else if (f == "--nk") {
      nks.clear();
      for (const std::string& x : split(v, ',')) {
        const std::vector<std::string> p = split(x, 'x');
        if (p.size() != 2) usage(fmt::format("--nk: '{}' is not NxK", x));
        nks.emplace_back(parse_positive(f, p[0]), parse_positive(f, p[1]));
      }
    } else if (f == "--wgrad-k") {
      wgrad_ks.clear();
      if (v != "none")
        for (const std::string& x : split(v, ',')) wgrad_ks.push_back(parse_positive(f, x));
    } else if (f == "--worker") {
      worker_from = static_cast<size_t>(parse_positive(f, v, 1ll << 30));
    } else if (f == "--exclude") {
      for (const std::string& x : split(v, ',')) exclude.insert(x);
    } else {
      usage("unknown flag " + f);
    }
  }
  const std::vector<TuneShape> shapes = make_shapes(ms, nks, wgrad_ks);
  if (worker_from) {
    // A parent killed (a time limit) takes its worker along; one that died before the signal
    // was armed has left this process reparented. (Not getppid() == 1: a parent that is
    // itself PID 1, a container's entry point, is alive.)
    const pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) return 1;
    FILE* f = fdopen(kChannelFd, "w");
    if (f == nullptr) {
      std::fprintf(stderr, "r1-fp8-tune: --worker is internal (it reports on fd %d)\n",
                   kChannelFd);
      return 2;
    }
    Channel ch(f);
    if (const char* fake = std::getenv("R1_FP8_TUNE_FAKE"); fake && *fake)
      return fake_worker(shapes, *worker_from - 1, exclude, out, fake, ch);
#if defined(R1_HAVE_CUDA)
    try {
      return r1::worker(shapes, *worker_from - 1, exclude, out, ch);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "r1-fp8-tune (worker): %s\n", e.what());
      return 1;
    }
#else
    ch.say("nogpu");
    return 0;
#endif
  }
  try {
    return sweep(base_args, shapes);
  } catch (const r1::InputError& e) {
    std::fprintf(stderr, "r1-fp8-tune: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "r1-fp8-tune: %s\n", e.what());
    return 1;
  }
}
