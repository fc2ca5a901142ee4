// The isolation baseline (DESIGN.md §2), proven from inside a real sandbox:
// `stoke run` starts stoke-probe, which reports what it sees as JSON, and
// each test checks one row of the baseline against that report.
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/util/run_util.h"

namespace stoke::test {
namespace {

using nlohmann::json;

class SandboxIsolation : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = priv_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    ASSERT_TRUE(is_executable(probe_bin())) << "stoke-probe is not built: " << probe_bin();
  }

  // Runs `/probe isolation --connect <listener>` in a fresh sandbox with the
  // given extra `stoke run` options and stores the probe's report in *out.
  void isolation(json* out, const std::vector<std::string>& options = {}) {
    std::vector<std::string> opts{"--bind", probe_bin() + ":/probe"};
    opts.insert(opts.end(), options.begin(), options.end());
    ASSERT_TRUE(listener_.ok()) << "cannot listen on 127.0.0.1";
    RunResult r = run_command(
        stoke_run_argv(opts, {"/probe", "isolation", "--connect", std::to_string(listener_.port())}),
        "", 30000);
    ASSERT_FALSE(r.timed_out) << "stoke run hung; stderr: " << r.err;
    ASSERT_EQ(r.exit_code, 0) << "stderr: " << r.err << "\nstdout: " << r.out;
    try {
      *out = parse_last_json_line(r.out);
    } catch (const std::exception& e) {
      FAIL() << "probe output is not JSON: " << e.what();
    }
    ASSERT_TRUE(out->is_object());
  }

  LoopbackListener listener_;
};

uint64_t hex_field(const json& report, const char* key) {
  std::string value = report.value(key, std::string());
  if (value.empty()) return UINT64_MAX;
  return std::stoull(value, nullptr, 16);
}

uint64_t own_ns_inode(const std::string& name) {
  struct stat st {};
  if (stat(("/proc/self/ns/" + name).c_str(), &st) != 0) return 0;
  return st.st_ino;
}

struct IdRange {
  uint64_t inside = 0, outside = 0, count = 0;
};

std::vector<IdRange> parse_id_map(const std::string& text) {
  std::vector<IdRange> ranges;
  std::istringstream in(text);
  IdRange r;
  while (in >> r.inside >> r.outside >> r.count) ranges.push_back(r);
  return ranges;
}

TEST_F(SandboxIsolation, SandboxIsPid1AndSeesNoHostProcesses) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["pid"], 1);
  EXPECT_EQ(r["ppid"], 0) << "pid 1 of a new pid namespace has no visible parent";
  auto pids = r["visible_pids"].get<std::vector<long>>();
  ASSERT_FALSE(pids.empty());
  EXPECT_TRUE(std::find(pids.begin(), pids.end(), 1) != pids.end());
  // Only the sandbox's own few processes, never the host's.
  EXPECT_LE(pids.size(), 3u) << r["visible_pids"].dump();
  for (long pid : pids) EXPECT_LE(pid, 3) << r["visible_pids"].dump();
  EXPECT_NE(r["pidns_inode"].get<uint64_t>(), own_ns_inode("pid"));
}

TEST_F(SandboxIsolation, SandboxHasOnlyLoopbackInterface) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["interfaces"], json::array({"lo"}));
}

TEST_F(SandboxIsolation, SandboxCannotReachHostLoopbackListener) {
  // The listener is reachable from the host...
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(listener_.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
  // ...but not from the sandbox's own loopback.
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  ASSERT_TRUE(r.contains("connect"));
  EXPECT_NE(r["connect"], "ok");
}

TEST_F(SandboxIsolation, AllCapabilitiesAreDropped) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(hex_field(r, set), 0u) << set << " = " << r.value(set, std::string("<missing>"));
}

TEST_F(SandboxIsolation, NoNewPrivsIsSet) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["NoNewPrivs"], 1);
}

TEST_F(SandboxIsolation, SeccompFilterIsActive) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["Seccomp"], 2) << "2 = SECCOMP_MODE_FILTER";
}

TEST_F(SandboxIsolation, EachAlwaysDeniedSyscallFailsWithEperm) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  const json& denied = r["denied"];
  ASSERT_TRUE(denied.is_object());
  struct Row {
    const char* name;
    const char* expected;
  };
  // clone3 gets ENOSYS: a filter cannot read its flags, and libc falls back
  // to clone, whose flags the filter checks.
  const Row rows[] = {
      {"mount", "EPERM"},           {"umount2", "EPERM"},
      {"pivot_root", "EPERM"},      {"move_mount", "EPERM"},
      {"open_tree", "EPERM"},       {"fsopen", "EPERM"},
      {"fsmount", "EPERM"},         {"fsconfig", "EPERM"},
      {"fspick", "EPERM"},          {"mount_setattr", "EPERM"},
      {"unshare", "EPERM"},         {"setns", "EPERM"},
      {"clone_newuser", "EPERM"},   {"clone_newns", "EPERM"},
      {"clone_newnet", "EPERM"},    {"clone3", "ENOSYS"},
      {"bpf", "EPERM"},             {"perf_event_open", "EPERM"},
      {"keyctl", "EPERM"},          {"add_key", "EPERM"},
      {"request_key", "EPERM"},     {"ptrace", "EPERM"},
      {"kexec_load", "EPERM"},      {"kexec_file_load", "EPERM"},
      {"init_module", "EPERM"},     {"finit_module", "EPERM"},
      {"delete_module", "EPERM"},   {"reboot", "EPERM"},
      {"swapon", "EPERM"},          {"swapoff", "EPERM"},
      {"open_by_handle_at", "EPERM"}, {"userfaultfd", "EPERM"},
      {"io_uring_setup", "EPERM"},  {"io_uring_enter", "EPERM"},
      {"io_uring_register", "EPERM"}, {"clock_settime", "EPERM"},
      {"clock_adjtime", "EPERM"},   {"settimeofday", "EPERM"},
      {"adjtimex", "EPERM"},        {"personality", "EPERM"},
      {"chroot", "EPERM"},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(denied.value(row.name, std::string("<not reported>")), row.expected)
        << "syscall " << row.name;
  }
}

TEST_F(SandboxIsolation, PersonalityQueryIsStillAllowed) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["allowed"]["personality_query"], "OK") << "personality(0xffffffff) only reads";
}

TEST_F(SandboxIsolation, RootFilesystemIsReadOnly) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["root_write"], "EROFS");
}

TEST_F(SandboxIsolation, EtcShadowIsAbsent) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["etc_shadow"], false);
}

TEST_F(SandboxIsolation, HostHomeAndRootAreAbsent) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["home"], false) << "/home is visible";
  EXPECT_EQ(r["root_home"], false) << "/root is visible";
}

TEST_F(SandboxIsolation, HostEnvironmentIsNotLeaked) {
  std::string secret = "leaked-" + std::to_string(getpid());
  ASSERT_EQ(setenv("STOKE_TEST_SECRET", secret.c_str(), 1), 0);
  json r;
  isolation(&r, {"--env", "FOO=bar"});
  unsetenv("STOKE_TEST_SECRET");
  if (HasFatalFailure()) return;

  const json& env = r["env"];
  ASSERT_TRUE(env.is_object());
  EXPECT_FALSE(env.contains("STOKE_TEST_SECRET"));
  for (const auto& [key, value] : env.items())
    EXPECT_NE(value, secret) << key << " carries the caller's secret";
  EXPECT_EQ(env.value("FOO", std::string("<missing>")), "bar");
}

TEST_F(SandboxIsolation, EnvIsOnlyWhatEnvOptionsGivePlusDefaults) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r, {"--env", "FOO=bar", "--env", "EMPTY="}));
  const json& env = r["env"];
  ASSERT_TRUE(env.is_object());
  EXPECT_EQ(env.value("FOO", std::string("<missing>")), "bar");
  EXPECT_EQ(env.value("EMPTY", std::string("<missing>")), "");
  EXPECT_TRUE(env.contains("PATH")) << "a default PATH is expected";
  // Defaults: PATH, HOME=/tmp (the only writable place), LANG=C.UTF-8.
  EXPECT_EQ(env.value("HOME", std::string()), "/tmp");
  for (const auto& [key, value] : env.items())
    EXPECT_TRUE(key == "FOO" || key == "EMPTY" || key == "PATH" || key == "HOME" || key == "LANG")
        << "unexpected variable " << key << "=" << value;
}

TEST_F(SandboxIsolation, MknodMountSethostnameChrootFail) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  const json& denied = r["denied"];
  for (const char* op : {"mknod", "mount_tmpfs", "sethostname", "chroot"})
    EXPECT_EQ(denied.value(op, std::string("<not reported>")), "EPERM") << op;
}

TEST_F(SandboxIsolation, TmpIsWritable) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["tmp_write"], "OK");
}

TEST_F(SandboxIsolation, ProcIsMaskedAndSysIsAbsent) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["proc_sys"], false) << "/proc/sys is visible";
  EXPECT_EQ(r["proc_kcore"], false) << "/proc/kcore is visible";
  EXPECT_EQ(r["sys"], false) << "/sys has entries";
}

TEST_F(SandboxIsolation, DevIsMinimal) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  auto dev = r["dev"].get<std::vector<std::string>>();
  std::set<std::string> seen(dev.begin(), dev.end());
  const std::set<std::string> required{"null", "zero",  "full",   "random", "urandom",
                                       "fd",   "stdin", "stdout", "stderr", "shm"};
  const std::set<std::string> optional{"pts", "ptmx"};  // "pts if needed"
  for (const auto& name : required) EXPECT_TRUE(seen.count(name)) << "/dev/" << name << " missing";
  for (const auto& name : seen)
    EXPECT_TRUE(required.count(name) || optional.count(name)) << "/dev/" << name << " should not be there";
  EXPECT_FALSE(seen.count("tty")) << "/dev/tty would reach the terminal stoked or stoke run was started from";
}

TEST_F(SandboxIsolation, HostnameIsSandboxOrGiven) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["hostname"], "sandbox");
  EXPECT_NE(r["utsns_inode"].get<uint64_t>(), own_ns_inode("uts"));

  json given;
  ASSERT_NO_FATAL_FAILURE(isolation(&given, {"--hostname", "fn-probe"}));
  EXPECT_EQ(given["hostname"], "fn-probe");
}

TEST_F(SandboxIsolation, SandboxRootMapsToUnprivilegedHostUid) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  EXPECT_EQ(r["uid"], 0) << "the command runs as the sandbox's root";
  EXPECT_EQ(r["gid"], 0);

  auto uids = parse_id_map(r["uid_map"].get<std::string>());
  auto gids = parse_id_map(r.value("gid_map", std::string()));
  ASSERT_FALSE(uids.empty()) << "uid_map: " << r["uid_map"];
  ASSERT_FALSE(gids.empty()) << "gid_map: " << r.value("gid_map", std::string());
  bool root_mapped = false;
  for (const IdRange& m : uids) {
    EXPECT_NE(m.outside, 0u);
    EXPECT_GE(m.outside, 1000u) << "uid_map: " << r["uid_map"];
    if (m.inside == 0) root_mapped = true;
  }
  EXPECT_TRUE(root_mapped) << "uid_map: " << r["uid_map"];
  for (const IdRange& m : gids) EXPECT_GE(m.outside, 1000u) << "gid_map: " << r["gid_map"];

  // Never a host account or group.
  setpwent();
  while (passwd* pw = getpwent()) {
    for (const IdRange& m : uids)
      EXPECT_FALSE(pw->pw_uid >= m.outside && pw->pw_uid < m.outside + m.count)
          << "host account " << pw->pw_name << " (" << pw->pw_uid << ") is mapped into the sandbox";
  }
  endpwent();
  setgrent();
  while (group* gr = getgrent()) {
    for (const IdRange& m : gids)
      EXPECT_FALSE(gr->gr_gid >= m.outside && gr->gr_gid < m.outside + m.count)
          << "host group " << gr->gr_name << " (" << gr->gr_gid << ") is mapped into the sandbox";
  }
  endgrent();
}

TEST_F(SandboxIsolation, NamespacesDifferFromHost) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  for (const char* ns : {"pid", "net", "mnt", "user", "ipc", "uts", "cgroup"}) {
    std::string key = std::string(ns) + "ns_inode";
    ASSERT_TRUE(r[key].is_number_unsigned()) << key << " not reported: " << r[key];
    EXPECT_NE(r[key].get<uint64_t>(), own_ns_inode(ns)) << "the sandbox shares the host's " << ns
                                                        << " namespace";
  }
}

TEST_F(SandboxIsolation, CgroupPathsAreRootedAtTheSandbox) {
  // A cgroup namespace rooted at the sandbox's own groups: no host paths.
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r));
  std::istringstream in(r["cgroup"].get<std::string>());
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++lines;
    auto colon = line.rfind(':');
    ASSERT_NE(colon, std::string::npos) << line;
    EXPECT_EQ(line.substr(colon + 1), "/") << "host cgroup path visible: " << line;
  }
  EXPECT_GT(lines, 0);
}

TEST_F(SandboxIsolation, WorkdirOption) {
  json r;
  ASSERT_NO_FATAL_FAILURE(isolation(&r, {"--workdir", "/tmp"}));
  EXPECT_EQ(r["cwd"], "/tmp");
}

}  // namespace
}  // namespace stoke::test
