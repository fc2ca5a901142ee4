// packaging/: the systemd units, tmpfiles entries and default config are
// checked by systemd's own tools (no running systemd needed), agree with the
// agent's defaults, and the service's hardening is shown not to break
// sandboxes by running `stoke run` under an emulation of it.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/config.h"
#include "tests/util/run_util.h"

namespace stoke::test {
namespace {

const std::string kPackaging = std::string(STOKE_SOURCE_DIR) + "/packaging";

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return static_cast<bool>(f);
}

// The first executable called `name` in PATH (or /usr/bin, /bin), "" if none.
std::string find_tool(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/bin:/bin:/usr/sbin:/sbin";
  std::stringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && is_executable(dir + "/" + name)) return dir + "/" + name;
  return "";
}

// The active (uncommented) "Key=value" lines of a unit file, as key -> value.
std::vector<std::pair<std::string, std::string>> unit_settings(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::stringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') continue;
    size_t eq = line.find('=');
    if (eq != std::string::npos) out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::string setting(const std::string& text, const std::string& key) {
  for (auto& [k, v] : unit_settings(text))
    if (k == key) return v;
  return "";
}

// Lines of systemd-analyze's output that are about our units: warnings such as
// "stoked.service:12: Unknown key ..." leave the exit code at 0.
std::string lines_about(const std::string& output, const std::vector<std::string>& units) {
  std::string out;
  std::stringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    for (const auto& u : units)
      if (line.find(u) != std::string::npos) {
        out += line + "\n";
        break;
      }
  return out;
}

class PackagedUnits : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = read_file(kPackaging + "/stoked.service");
    socket_ = read_file(kPackaging + "/stoked.socket");
    ASSERT_FALSE(service_.empty()) << "cannot read " << kPackaging << "/stoked.service";
    ASSERT_FALSE(socket_.empty()) << "cannot read " << kPackaging << "/stoked.socket";
  }
  std::string service_;
  std::string socket_;
};

// `systemd-analyze verify` loads the units the way systemd would (syntax,
// known keys, dependencies, the socket-to-service link) and checks that
// ExecStart= is executable. The installed path does not exist on a build
// machine, so a copy points it at /bin/true; everything else is verbatim.
TEST_F(PackagedUnits, SystemdAnalyzeVerifyAcceptsThem) {
  std::string analyze = find_tool("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";
  std::string exec_start = setting(service_, "ExecStart");
  ASSERT_EQ(exec_start, "/usr/local/bin/stoked");  // what packaging/README.md installs
  std::string copy = std::regex_replace(service_, std::regex("^ExecStart=.*$",
                                                             std::regex::multiline),
                                        "ExecStart=/bin/true");
  ASSERT_NE(copy, service_);

  TempDir dir;
  ASSERT_TRUE(write_text(dir.file("stoked.service"), copy));
  ASSERT_TRUE(write_text(dir.file("stoked.socket"), socket_));
  // --man=no: no Documentation= man pages to look for on a build machine.
  RunResult r = run_command({analyze, "verify", "--man=no", dir.file("stoked.service"),
                             dir.file("stoked.socket")});
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(lines_about(r.out + r.err, {"stoked.service", "stoked.socket"}), "")
      << "systemd-analyze warned about our units";
}

// The gateway's unit likewise: it loads, and it runs with no privilege.
TEST_F(PackagedUnits, TheGatewaysUnitVerifiesAndRunsUnprivileged) {
  std::string analyze = find_tool("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";
  std::string gateway = read_file(kPackaging + "/stoke-gateway.service");
  ASSERT_FALSE(gateway.empty());
  EXPECT_EQ(setting(gateway, "User"), "stoke-gateway");
  EXPECT_EQ(setting(gateway, "NoNewPrivileges"), "yes");
  EXPECT_EQ(setting(gateway, "CapabilityBoundingSet"), "");
  EXPECT_EQ(setting(gateway, "ExecStart").rfind("/usr/local/bin/stoke-gateway --listen 127.0.0.1:3233", 0), 0u);
  std::string copy = std::regex_replace(gateway, std::regex("^ExecStart=.*$", std::regex::multiline),
                                        "ExecStart=/bin/true");
  // The user exists only once packaging/stoke.sysusers was applied.
  copy = std::regex_replace(copy, std::regex("^(User|Group|SupplementaryGroups)=.*$", std::regex::multiline), "");
  TempDir dir;
  ASSERT_TRUE(write_text(dir.file("stoke-gateway.service"), copy));
  ASSERT_TRUE(write_text(dir.file("stoked.service"), std::regex_replace(service_, std::regex("^ExecStart=.*$",
                                                     std::regex::multiline), "ExecStart=/bin/true")));
  ASSERT_TRUE(write_text(dir.file("stoked.socket"), socket_));
  RunResult r = run_command({analyze, "verify", "--man=no", dir.file("stoke-gateway.service")});
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(lines_about(r.out + r.err, {"stoke-gateway.service"}), "") << "systemd-analyze warned about the unit";
}

// The check above must be able to fail: a unit with a typo is reported.
TEST_F(PackagedUnits, SystemdAnalyzeVerifyCatchesMistakes) {
  std::string analyze = find_tool("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";
  TempDir dir;
  std::string broken = std::regex_replace(service_, std::regex("^Delegate=yes$",
                                                               std::regex::multiline),
                                          "Delegate=yes\nDelgate=yes");
  broken = std::regex_replace(broken, std::regex("^ExecStart=.*$", std::regex::multiline),
                              "ExecStart=" + dir.file("no-such-stoked"));
  ASSERT_TRUE(write_text(dir.file("stoked.service"), broken));
  RunResult r = run_command({analyze, "verify", "--man=no", dir.file("stoked.service")});
  EXPECT_NE(r.exit_code, 0) << "a missing ExecStart binary went unnoticed";
  EXPECT_NE(lines_about(r.out + r.err, {"Delgate"}), "") << r.out << r.err;
}

// The settings the agent depends on, and none of those that would break it
// (the reasons are in stoked.service's comments).
TEST_F(PackagedUnits, ServiceHasTheSettingsTheAgentRelies) {
  for (auto [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"Type", "notify"},
           {"NotifyAccess", "main"},
           {"WatchdogSec", "30s"},
           {"Delegate", "yes"},
           {"KillMode", "mixed"},
           {"Restart", "on-failure"},
           {"OOMPolicy", "continue"},
           {"StateDirectory", "stoke"},
           {"RuntimeDirectory", "stoke"},
           {"RuntimeDirectoryPreserve", "yes"},
           {"TasksMax", "infinity"},
           {"OOMScoreAdjust", "-500"},
       })
    EXPECT_EQ(setting(service_, key), value) << key;
  std::set<std::string> keys;
  for (auto& [k, v] : unit_settings(service_)) keys.insert(k);
  for (const char* forbidden :
       {"PrivateTmp", "MountFlags", "ProtectKernelTunables", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateDevices", "PrivateNetwork",
        "PrivateUsers", "RestrictNamespaces", "SystemCallFilter", "SystemCallArchitectures",
        "MemoryDenyWriteExecute", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID",
        "RestrictAddressFamilies", "ProtectHostname", "ProtectClock", "ProtectKernelModules"})
    EXPECT_EQ(keys.count(forbidden), 0u) << forbidden << "= breaks sandboxes; see stoked.service";
}

// The units, the tmpfiles entries and the agent's defaults name the same places.
TEST_F(PackagedUnits, UnitsAgreeWithTheAgentDefaults) {
  agent::AgentConfig defaults = agent::default_config();
  EXPECT_EQ(setting(socket_, "ListenStream"), defaults.socket_path());
  EXPECT_EQ(setting(socket_, "Accept"), "no");
  EXPECT_EQ("/var/lib/" + setting(service_, "StateDirectory"), defaults.state_dir());
  std::string socket_dir = defaults.socket_path().substr(0, defaults.socket_path().rfind('/'));
  EXPECT_EQ("/run/" + setting(service_, "RuntimeDirectory"), socket_dir);
  EXPECT_EQ(setting(service_, "StateDirectoryMode"), "0700");  // registry secrets: root only
  EXPECT_EQ(setting(service_, "RuntimeDirectoryMode"), "0711");
  EXPECT_EQ(setting(socket_, "DirectoryMode"), "0711");
}

// systemd-tmpfiles --root creates the entries under a scratch root: the file
// parses and yields the directories with the modes the units use.
TEST(PackagedTmpfiles, CreatesStateAndRuntimeDirectories) {
  std::string tmpfiles = find_tool("systemd-tmpfiles");
  if (tmpfiles.empty()) GTEST_SKIP() << "systemd-tmpfiles is not installed (package systemd)";
  TempDir root;
  RunResult r = run_command({tmpfiles, "--create", "--root=" + root.path(),
                             kPackaging + "/stoke.tmpfiles"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  agent::AgentConfig defaults = agent::default_config();
  std::string socket_dir = defaults.socket_path().substr(0, defaults.socket_path().rfind('/'));
  for (const auto& [dir, mode] : {std::pair{defaults.state_dir(), 0700u}, std::pair{socket_dir, 0711u}}) {
    struct stat st {};
    ASSERT_EQ(::stat((root.path() + dir).c_str(), &st), 0) << dir << " was not created";
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    EXPECT_EQ(st.st_mode & 07777, mode) << dir;
    EXPECT_EQ(st.st_uid, 0u) << dir;
  }
}

// stoked.service makes /usr, /etc (and /boot, /efi) read-only and /home,
// /root, /run/user read-only; with NoNewPrivileges= in that mount namespace
// systemd also mounts everything nosuid; no_new_privs is set and
// CAP_SYS_MODULE and CAP_SYS_BOOT leave the bounding set. All of it is
// inherited by every sandbox. The same, done with unshare + mount + setpriv,
// must leave `stoke run` working, read-only and writable binds included.
TEST(PackagedHardening, SandboxesStillStartUnderTheServiceHardening) {
  std::string reason = priv_skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  std::string unshare = find_tool("unshare");
  std::string setpriv = find_tool("setpriv");
  if (unshare.empty() || setpriv.empty())
    GTEST_SKIP() << "needs unshare and setpriv (package util-linux)";
  // A mount namespace that receives host mounts (slave) and is shared below,
  // as systemd sets it up; then ProtectSystem=full, ProtectHome=read-only and
  // the nosuid remount.
  const std::string script =
      "set -e\n"
      "for d in /usr /boot /efi /etc /home /root /run/user; do\n"
      "  [ -d \"$d\" ] || continue\n"
      "  mount --rbind \"$d\" \"$d\"\n"
      "  mount -o remount,bind,ro \"$d\"\n"
      "done\n"
      "awk '{print $5, $6}' /proc/self/mountinfo | while read mp opts; do\n"
      "  mount -o \"remount,bind,$opts,nosuid\" \"$mp\" 2>/dev/null || true\n"
      "done\n"
      "mount --make-rshared /\n"
      "exec \"$@\"\n";
  TempDir data;
  ASSERT_EQ(::chmod(data.path().c_str(), 01777), 0);  // sandbox root is an unprivileged host id
  std::vector<std::string> argv{unshare, "--mount", "--propagation", "slave", "--",
                                "/bin/sh", "-c", script, "sh",
                                setpriv, "--nnp", "--bounding-set", "-sys_module,-sys_boot"};
  std::vector<std::string> run = stoke_run_argv(
      {"--bind", data.path() + ":/data:rw", "--bind", "/usr/share:/share"},
      {"/bin/sh", "-c",
       "grep -E '^NoNewPrivs' /proc/self/status && echo written > /data/out && "
       "test -d /share && echo sandbox-ran"});
  argv.insert(argv.end(), run.begin(), run.end());
  RunResult r = run_command(argv, "", 30000);
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 0) << "stdout: " << r.out << "\nstderr: " << r.err;
  EXPECT_NE(r.out.find("sandbox-ran"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(data.file("out")), "written\n");
}

}  // namespace
}  // namespace stoke::test
