// Resource limits, accounting, teardown and the `stoke run` contract (exit
// codes, one-sentence errors, binds), proven with real sandboxes.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/util/run_util.h"
#include "tests/util/sanitizers.h"

namespace stoke::test {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ULL << 20;

class SandboxLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = priv_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    ASSERT_TRUE(is_executable(probe_bin())) << "stoke-probe is not built: " << probe_bin();
  }

  // `stoke run --bind probe:/probe --report <file> OPTIONS -- /probe ARGS...`
  RunResult run_probe(const std::vector<std::string>& options,
                      const std::vector<std::string>& probe_args, int timeout_ms = 30000) {
    std::vector<std::string> opts{"--bind", probe_bin() + ":/probe", "--report", report_path()};
    opts.insert(opts.end(), options.begin(), options.end());
    std::vector<std::string> cmd{"/probe"};
    cmd.insert(cmd.end(), probe_args.begin(), probe_args.end());
    return run_command(stoke_run_argv(opts, cmd), "", timeout_ms);
  }

  std::string report_path() const { return dir_.file("report.json"); }

  void read_report(json* out) {
    std::string text = read_file(report_path());
    ASSERT_FALSE(text.empty()) << "no report written to " << report_path();
    try {
      *out = json::parse(text);
    } catch (const std::exception& e) {
      FAIL() << "report is not JSON: " << e.what() << "\n" << text;
    }
  }

  TempDir dir_;
};

// Trailing newlines removed; true if what is left is one non-empty line.
bool is_one_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return !text.empty() && text.find('\n') == std::string::npos;
}

std::string cmdline_of(const std::string& pid) {
  return read_file("/proc/" + pid + "/cmdline");
}

std::vector<std::string> argv_of(const std::string& pid) {
  std::vector<std::string> args;
  std::string raw = cmdline_of(pid);
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    args.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  return args;
}

// Host pids of live processes matching pred(pid).
template <typename Pred>
std::vector<std::string> host_processes(Pred pred) {
  std::vector<std::string> found;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return found;
  while (dirent* ent = readdir(dir)) {
    std::string name = ent->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (name == std::to_string(getpid())) continue;
    if (pred(name)) found.push_back(name);
  }
  closedir(dir);
  return found;
}

// Polls up to `grace` for the matching processes to disappear; returns what
// is left.
template <typename Pred>
std::vector<std::string> survivors(Pred pred, std::chrono::milliseconds grace) {
  auto until = std::chrono::steady_clock::now() + grace;
  for (;;) {
    auto left = host_processes(pred);
    if (left.empty() || std::chrono::steady_clock::now() >= until) return left;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string describe(const std::vector<std::string>& pids) {
  std::string s;
  for (const auto& pid : pids) {
    std::string cmd = cmdline_of(pid);
    for (char& c : cmd)
      if (c == '\0') c = ' ';
    s += "\n  pid " + pid + ": " + cmd;
  }
  return s;
}

TEST_F(SandboxLimits, MemoryOverLimitIsReportedAsOom) {
  RunResult r = run_probe({"--memory", "64M"}, {"alloc", "256"});
  ASSERT_FALSE(r.timed_out) << "an OOM must be reported, never hang; stderr: " << r.err;
  EXPECT_EQ(r.exit_code, 137) << "stderr: " << r.err << "\nstdout: " << r.out;
  EXPECT_EQ(r.out.find("allocated_mb"), std::string::npos) << "256 MiB fit under a 64M limit";
  json report;
  ASSERT_NO_FATAL_FAILURE(read_report(&report));
  EXPECT_EQ(report["oom"], true) << report.dump();
  EXPECT_EQ(report["signal"], 9) << report.dump();
}

TEST_F(SandboxLimits, ForkBombIsStoppedByPidsLimitAndSandboxIsReapable) {
  RunResult r = run_probe({"--pids", "64", "--timeout", "3s"}, {"fork-bomb"}, 30000);
  ASSERT_FALSE(r.timed_out) << "stoke run did not end after its own --timeout; stderr: " << r.err;
  EXPECT_LT(r.wall_ms, 10000);
  EXPECT_EQ(r.exit_code, 137) << "stderr: " << r.err;

  json bomb;
  try {
    bomb = parse_last_json_line(r.out);
  } catch (const std::exception& e) {
    FAIL() << "fork-bomb printed no result: " << e.what() << "\nstderr: " << r.err;
  }
  EXPECT_EQ(bomb["fork_error"], "EAGAIN") << bomb.dump();
  EXPECT_LT(bomb["forked"].get<long>(), 64) << bomb.dump();

  json report;
  ASSERT_NO_FATAL_FAILURE(read_report(&report));
  EXPECT_EQ(report["timedOut"], true) << report.dump();

  struct stat probe_st {};
  ASSERT_EQ(stat(probe_bin().c_str(), &probe_st), 0);
  auto is_bomb = [&](const std::string& pid) {
    struct stat st {};
    if (stat(("/proc/" + pid + "/exe").c_str(), &st) != 0) return false;
    if (st.st_dev != probe_st.st_dev || st.st_ino != probe_st.st_ino) return false;
    return cmdline_of(pid).find("fork-bomb") != std::string::npos;
  };
  auto left = survivors(is_bomb, std::chrono::milliseconds(1000));
  EXPECT_TRUE(left.empty()) << left.size() << " fork-bomb processes survived the sandbox:"
                            << describe(left);
}

TEST_F(SandboxLimits, TmpFullAtItsSize) {
  RunResult r = run_probe({"--tmp-size", "8M"}, {"fill-tmp"});
  ASSERT_EQ(r.exit_code, 0) << "stderr: " << r.err;
  json fill = parse_last_json_line(r.out);
  EXPECT_EQ(fill["error"], "ENOSPC") << fill.dump();
  uint64_t written = fill["written_bytes"].get<uint64_t>();
  EXPECT_GE(written, 6 * kMiB) << fill.dump();
  EXPECT_LE(written, 8 * kMiB + kMiB / 2) << fill.dump();
}

TEST_F(SandboxLimits, TimeoutKillsGrandchildren) {
  // A unique sleep length doubles as a marker in the sleepers' cmdline.
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  std::string marker = "301." + std::to_string(getpid()) +
                       std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(now).count() % 1000000);
  RunResult r = run_probe({"--timeout", "1s"}, {"spawn-sleepers", "3", marker}, 30000);
  ASSERT_FALSE(r.timed_out) << "stoke run did not end after its own --timeout; stderr: " << r.err;
  EXPECT_LT(r.wall_ms, 6000);
  EXPECT_EQ(r.exit_code, 137) << "stderr: " << r.err;

  json spawned;
  try {
    spawned = parse_last_json_line(r.out);
  } catch (const std::exception& e) {
    FAIL() << "spawn-sleepers printed nothing: " << e.what() << "\nstderr: " << r.err;
  }
  EXPECT_EQ(spawned["pids"].size(), 3u) << spawned.dump();

  json report;
  ASSERT_NO_FATAL_FAILURE(read_report(&report));
  EXPECT_EQ(report["timedOut"], true) << report.dump();

  auto is_sleeper = [&](const std::string& pid) {
    for (const auto& arg : argv_of(pid))
      if (arg == marker) return true;
    return false;
  };
  auto left = survivors(is_sleeper, std::chrono::milliseconds(1000));
  EXPECT_TRUE(left.empty()) << left.size() << " orphaned sleepers survived the timeout:"
                            << describe(left);
}

TEST_F(SandboxLimits, CpuAndPeakMemoryAccountingArePlausible) {
  {
    RunResult r = run_probe({}, {"burn", "300"});
    ASSERT_EQ(r.exit_code, 0) << "stderr: " << r.err;
    json report;
    ASSERT_NO_FATAL_FAILURE(read_report(&report));
    EXPECT_GE(report["cpuUserMs"].get<double>(), 150) << report.dump();
    EXPECT_LE(report["cpuUserMs"].get<double>(), 5000) << report.dump();
    EXPECT_GT(report["wallMs"].get<double>(), 0) << report.dump();
    EXPECT_TRUE(report["cpuSystemMs"].is_number()) << report.dump();
    EXPECT_EQ(report["exitCode"], 0) << report.dump();
  }
  unlink(report_path().c_str());
  {
    RunResult r = run_probe({"--memory", "256M"}, {"alloc", "64"});
    ASSERT_EQ(r.exit_code, 0) << "stderr: " << r.err;
    json report;
    ASSERT_NO_FATAL_FAILURE(read_report(&report));
    EXPECT_GE(report["memoryPeakBytes"].get<double>(), 64.0 * kMiB) << report.dump();
    EXPECT_LT(report["memoryPeakBytes"].get<double>(), 256.0 * kMiB) << report.dump();
    EXPECT_EQ(report["oom"], false) << report.dump();
  }
}

TEST_F(SandboxLimits, ExitCodeIsPassedThrough) {
  RunResult r = run_command(stoke_run_argv({}, {"/bin/sh", "-c", "exit 7"}), "", 30000);
  EXPECT_EQ(r.exit_code, 7) << "stderr: " << r.err;
}

TEST_F(SandboxLimits, KilledCommandExitsWith128PlusSignal) {
  // The command is pid 1 of its namespace, which ignores signals it sends
  // itself (as in any container without an init); a real fault still kills it.
  RunResult r = run_command(
      stoke_run_argv({"--report", report_path()}, {"/usr/bin/python3", "-c", "import ctypes; ctypes.string_at(0)"}), "",
      30000);
  EXPECT_EQ(r.exit_code, 139) << "stderr: " << r.err;
  json report;
  ASSERT_NO_FATAL_FAILURE(read_report(&report));
  EXPECT_EQ(report["signal"], 11) << report.dump();
  EXPECT_EQ(report["exitCode"], 139) << report.dump();
}

TEST_F(SandboxLimits, MissingBinaryIsOneClearSentence) {
  RunResult r = run_command(stoke_run_argv({}, {"/nonexistent/stoke-no-such-binary"}), "", 30000);
  EXPECT_TRUE(r.exit_code == 125 || r.exit_code == 127) << "exit " << r.exit_code;
  EXPECT_TRUE(is_one_line(test::without_sanitizer_notes(r.err))) << "stderr: " << r.err;
  EXPECT_NE(r.err.find("stoke-no-such-binary"), std::string::npos) << "stderr: " << r.err;
}

TEST_F(SandboxLimits, BadSizeIsRejected) {
  RunResult r = run_command(stoke_run_argv({"--memory", "12X"}, {"/bin/true"}), "", 30000);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(is_one_line(r.err)) << "stderr: " << r.err;
  EXPECT_NE(r.err.find("--memory"), std::string::npos) << "stderr: " << r.err;
}

TEST_F(SandboxLimits, UnknownOptionIsRejected) {
  RunResult r = run_command(
      stoke_run_argv({"--no-such-option"}, {"/bin/sh", "-c", "echo ran"}), "", 30000);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out.find("ran"), std::string::npos) << "the command ran anyway";
  EXPECT_TRUE(is_one_line(r.err)) << "stderr: " << r.err;
  EXPECT_NE(r.err.find("--no-such-option"), std::string::npos) << "stderr: " << r.err;
}

TEST_F(SandboxLimits, BindIsReadOnlyUnlessRw) {
  TempDir data;
  // Writable for the sandbox's unprivileged host uid, so only the mount
  // decides.
  ASSERT_EQ(chmod(data.path().c_str(), 0777), 0);
  const std::string write_cmd = "echo hello > /data/out";

  RunResult ro = run_command(
      stoke_run_argv({"--bind", data.path() + ":/data"}, {"/bin/sh", "-c", write_cmd}), "", 30000);
  EXPECT_NE(ro.exit_code, 0) << "writing to a read-only bind succeeded";
  EXPECT_NE(ro.err.find("Read-only file system"), std::string::npos) << "stderr: " << ro.err;
  EXPECT_NE(access(data.file("out").c_str(), F_OK), 0) << "the file appeared on the host";

  RunResult rw = run_command(
      stoke_run_argv({"--bind", data.path() + ":/data:rw"}, {"/bin/sh", "-c", write_cmd}), "", 30000);
  EXPECT_EQ(rw.exit_code, 0) << "stderr: " << rw.err;
  EXPECT_EQ(read_file(data.file("out")), "hello\n");
}

}  // namespace
}  // namespace stoke::test
