// What one function's zygote holds never reaches another's (security finding
// #5): its env (its secrets) goes to its own zygote only, never to the maker
// of any zygote, and each function zygote is a fresh exec with its own
// address layout, AT_RANDOM (whence the stack canary and pointer guard) and
// Python hash secret, not a fork of a shared interpreter. The env test reads
// the processes' memory from the host (/proc/<pid>/mem) and looks for the
// secret's bytes.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "sandbox/base/file_util.h"
#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

// Assembled at run time so that the test binary's own image does not matter.
std::string secret() { return std::string("tenant-a-") + "secret-" + std::to_string(0x5eed1) + "-value"; }

// Whether `needle` occurs in any readable mapping of process `pid`.
bool memory_contains(int pid, const std::string& needle) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  int mem = ::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(mem, 0) << "open /proc/" << pid << "/mem";
  if (mem < 0) return false;
  std::string line;
  bool found = false;
  while (!found && std::getline(maps, line)) {
    unsigned long start = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &start, &end, perms) != 3 || perms[0] != 'r') continue;
    if (line.find("[vvar") != std::string::npos || line.find("[vsyscall]") != std::string::npos) continue;
    std::string data(end - start, '\0');
    ssize_t n = ::pread(mem, data.data(), data.size(), static_cast<off_t>(start));
    if (n <= 0) continue;
    data.resize(static_cast<size_t>(n));
    found = data.find(needle) != std::string::npos;
  }
  ::close(mem);
  return found;
}

class ZygoteEnv : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\ncheckpoints: false\n"; }
  void create(const std::string& name, const std::string& env_value) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << "import os\nSEEN = os.environ.get('A_SECRET', '')\ndef main(args):\n    return {'seen': SEEN}\n";
    v1::Request r = test::create_request(name, v1::PYTHON, path, "main.py");
    if (!env_value.empty()) (*r.mutable_create_function()->mutable_config()->mutable_env())["A_SECRET"] = env_value;
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
};

// Host pid of the parent of `pid` (a zygote's maker), -1 if unreadable.
int parent_of(int pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status");
  if (!text.ok()) return -1;
  size_t at = text->find("\nPPid:");
  return at == std::string::npos ? -1 : std::atoi(text->c_str() + at + 6);
}

TEST_F(ZygoteEnv, AFunctionsEnvReachesItsOwnZygoteButNeitherItsMakerNorAnotherFunctions) {
  create("holder", secret());
  create("other", "");
  auto first = invoke_with("holder");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  int holder_zygote = zygote_pid("holder");
  ASSERT_GT(holder_zygote, 0) << agent_->log_text();
  // Its own zygote has it: the env arrived, and the scan can find it.
  auto forked = invoke_with("holder", "{}", v1::ZYGOTE);
  ASSERT_EQ(forked.start_kind(), v1::ZYGOTE);
  EXPECT_NE(forked.result_json().find(secret()), std::string::npos) << forked.result_json();
  EXPECT_TRUE(memory_contains(holder_zygote, secret()));
  int holder_maker = parent_of(holder_zygote);
  ASSERT_GT(holder_maker, 0);
  EXPECT_FALSE(memory_contains(holder_maker, secret())) << "the zygote's maker holds holder's env";

  auto other_first = invoke_with("other");
  ASSERT_EQ(other_first.status(), v1::SUCCESS) << other_first.result_json();
  int other_zygote = zygote_pid("other");
  ASSERT_GT(other_zygote, 0);
  EXPECT_FALSE(memory_contains(other_zygote, secret())) << "other's zygote holds holder's env";
  EXPECT_FALSE(memory_contains(parent_of(other_zygote), secret())) << "other's maker holds holder's env";
}

// What a process can learn of its own randomness: ASLR (where libc's code and
// the heap are), AT_RANDOM's 16 bytes (glibc's stack canary and pointer guard
// come from them) and Python's str hash secret.
constexpr const char* kRandomness = R"(
import ctypes, struct
def _at_random():
    data = open("/proc/self/auxv", "rb").read()
    for i in range(0, len(data), 16):
        key, value = struct.unpack_from("QQ", data, i)
        if key == 25:  # AT_RANDOM
            return ctypes.string_at(value, 16).hex()
    return ""
SEEN = {"libc": ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value,
        "heap": id(object()), "at_random": _at_random(), "hash": hash("stoke")}
def main(args):
    return SEEN
)";

class ZygoteRandomness : public ZygoteEnv {
 protected:
  nlohmann::json zygote_seen(const std::string& name) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << kRandomness;
    auto c = send(test::create_request(name, v1::PYTHON, path, "main.py"));
    EXPECT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
    auto cold = invoke_with(name);
    EXPECT_EQ(cold.status(), v1::SUCCESS) << cold.result_json();
    auto forked = invoke_with(name, "{}", v1::ZYGOTE);
    EXPECT_EQ(forked.start_kind(), v1::ZYGOTE) << agent_->log_text();
    return nlohmann::json::parse(forked.result_json());
  }
};

TEST_F(ZygoteRandomness, TwoFunctionsZygotesShareNoAddressLayoutCanarySeedOrHashSecret) {
  auto a = zygote_seen("rand-a");
  auto b = zygote_seen("rand-b");
  for (const char* key : {"libc", "heap", "at_random", "hash"}) {
    ASSERT_TRUE(a.contains(key) && b.contains(key)) << a.dump() << " " << b.dump();
    EXPECT_NE(a[key], b[key]) << key << " is shared between two functions' zygotes: " << a.dump();
  }
  EXPECT_EQ(a["at_random"].get<std::string>().size(), 32u) << a.dump();
}

}  // namespace
}  // namespace stoke
