// Import-time code has no more privilege than call-time code: in a checkpoint
// image build, the function's module-level code runs in a sandbox spawned
// cold, with no capability, no_new_privs and the default seccomp filter, and
// cannot make namespaces or touch mounts. The import code records what it saw
// in a module global; the image carries it into every restored copy, whose
// main returns it.
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
AT_IMPORT["pid"] = os.getpid()
def main(args):
    return AT_IMPORT
)";

class ImportPrivilege : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }
};

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
  json seen = json::parse(a.result_json());
  EXPECT_EQ(seen["CapEff"], "0000000000000000") << seen.dump();
  EXPECT_EQ(seen["CapPrm"], "0000000000000000") << seen.dump();
  EXPECT_EQ(seen["CapBnd"], "0000000000000000") << seen.dump();
  EXPECT_EQ(seen["NoNewPrivs"], "1") << seen.dump();
  EXPECT_EQ(seen["Seccomp"], "2") << seen.dump();
  for (const char* attempt : {"unshare_newns", "mount_tmpfs", "umount_proc"})
    EXPECT_NE(seen[attempt], "ok") << attempt << " succeeded at import time in an image build: " << seen.dump();
}

}  // namespace
}  // namespace stoke
