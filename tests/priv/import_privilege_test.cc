// Import-time code has no more privilege than call-time code (review finding
// #8): in a function zygote and in a checkpoint image build, the function's
// module-level code runs with no capability in any set, no_new_privs and a
// seccomp filter, and cannot make namespaces or touch mounts. The import code
// records what it saw in a module global; every zygote fork and every
// restored copy of the image carries it, and main returns it.
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

// Module-level: what this process may do, tried for real.
constexpr const char* kImportProbe = R"(
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def _try(call):
    rc = call()
    return "ok" if rc == 0 else os.strerror(ctypes.get_errno())
_status = {}
for _line in open("/proc/self/status"):
    _k, _, _v = _line.partition(":")
    _status[_k] = _v.strip()
AT_IMPORT = {k: _status.get(k, "") for k in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs", "Seccomp")}
AT_IMPORT["unshare_newns"] = _try(lambda: libc.unshare(0x00020000))
AT_IMPORT["mount_tmpfs"] = _try(lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
AT_IMPORT["umount_proc"] = _try(lambda: libc.umount2(b"/proc", 2))
AT_IMPORT["unshare_newuser"] = _try(lambda: libc.unshare(0x10000000))
AT_IMPORT["sethostname"] = _try(lambda: libc.sethostname(b"x", 1))
AT_IMPORT["pid"] = os.getpid()
def main(args):
    return AT_IMPORT
)";

class ImportPrivilege : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }
};

class ImportPrivilegeInZygotes : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\ncheckpoints: false\n"; }
};

void expect_unprivileged(const json& seen, const char* where) {
  EXPECT_EQ(seen["CapEff"], "0000000000000000") << where << ": " << seen.dump();
  EXPECT_EQ(seen["CapPrm"], "0000000000000000") << where << ": " << seen.dump();
  EXPECT_EQ(seen["CapBnd"], "0000000000000000") << where << ": " << seen.dump();
  EXPECT_EQ(seen["NoNewPrivs"], "1") << where << ": " << seen.dump();
  EXPECT_EQ(seen["Seccomp"], "2") << where << ": " << seen.dump();
  for (const char* attempt : {"unshare_newns", "unshare_newuser", "mount_tmpfs", "umount_proc", "sethostname"})
    EXPECT_NE(seen[attempt], "ok") << attempt << " succeeded at import time in " << where << ": " << seen.dump();
}

TEST_F(ImportPrivilegeInZygotes, ZygoteRunsImportCodeWithoutCapabilitiesAndCannotMakeNamespacesOrMount) {
  std::string path = dir_.file("probe.py");
  std::ofstream(path) << kImportProbe;
  v1::Request r = test::create_request("imports", v1::PYTHON, path, "f.py");
  auto c = send(r);
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  auto cold = invoke_with("imports");
  ASSERT_EQ(cold.status(), v1::SUCCESS) << cold.result_json();
  auto a = invoke_with("imports", "{}", v1::ZYGOTE);
  ASSERT_EQ(a.start_kind(), v1::ZYGOTE) << a.result_json() << agent_->log_text();
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  json seen = json::parse(a.result_json());
  expect_unprivileged(seen, "a function zygote");
  // The values are the zygote's, recorded before the fork, not the instance's.
  EXPECT_NE(seen["pid"], json::parse(cold.result_json())["pid"]);
}

TEST_F(ImportPrivilege, ImageBuildRunsImportCodeWithoutCapabilitiesAndUnderTheDefaultFilter) {
  std::string path = dir_.file("probe.py");
  std::ofstream(path) << kImportProbe;
  v1::Request r = test::create_request("imports", v1::PYTHON, path, "f.py");
  r.mutable_create_function()->set_checkpoint(true);
  auto c = send(r);
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  std::string index = dir_.path() + "/state/images/index/imports@1";
  for (int i = 0; i < 300 && !std::ifstream(index).good(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto a = invoke_with("imports", "{}", v1::RESTORE);
  ASSERT_EQ(a.start_kind(), v1::RESTORE) << a.result_json() << agent_->log_text();
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  expect_unprivileged(json::parse(a.result_json()), "an image build");
}

}  // namespace
}  // namespace stoke
