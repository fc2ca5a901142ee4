// A function zygote's host id (security finding #4) is free again only when
// everything derived from the zygote is gone. A zygote retired while an
// instance it forked is still parked lives on, with its code directory owned
// by its id (mode 0500); the next function's zygote must get another id, or
// its import code could read the first function's code.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sandbox/base/file_util.h"
#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMemory = 128ULL << 20;

class ZygoteIds : public test::AgentTest {
 protected:
  // Room for one 128 MiB function zygote: a second function's zygote evicts
  // the first.
  std::string extra_config() override {
    return "pools { python: 0 node: 0 }\ncheckpoints: false\nzygotes { memory_budget_bytes: " +
           std::to_string(kMemory) + " forked_ahead: 0 }\n";
  }
  void create(const std::string& name, const std::string& source) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << source;
    auto c = send(test::create_request(name, v1::PYTHON, path, "main.py", kMemory));
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  static std::string uid_line(int pid) {
    auto text = read_file("/proc/" + std::to_string(pid) + "/status");
    if (!text.ok()) return "";
    size_t at = text->find("\nUid:");
    return at == std::string::npos ? "" : text->substr(at + 1, text->find('\n', at + 1) - at - 1);
  }
};

TEST_F(ZygoteIds, ARetiredZygoteStillAliveKeepsItsIdAndItsCodeFromTheNextFunction) {
  create("owner", "SECRET = 'owner-secret-7f3a'\ndef main(args):\n    return {}\n");
  // B's instances look for A's code where zygotes' code was linked before each
  // zygote had a sandbox of its own (/functions, each 0500, owned by its
  // zygote's id), and in their own /code and /tmp.
  create("reader", R"(
import os
def main(args):
    found = []
    # /functions is 0711: guess the <id index>-<n> names, as an attacker would.
    for d in [f"/functions/{i}-{n}" for i in range(1, 5) for n in range(1, 8)] + ["/code", "/tmp"]:
        for root, _, files in os.walk(d):
            for f in files:
                try:
                    if "-".join(["owner", "secret", "7f3a"]) in open(os.path.join(root, f)).read():
                        found.append(os.path.join(root, f))
                except OSError:
                    pass
    return {"found": found}
)");
  auto first = invoke_with("owner");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  int owner_zygote = zygote_pid("owner");
  ASSERT_GT(owner_zygote, 0) << agent_->log_text();
  // An instance of owner's zygote, parked idle afterwards: it keeps the zygote alive.
  auto forked = invoke_with("owner", "{}", v1::ZYGOTE);
  ASSERT_EQ(forked.start_kind(), v1::ZYGOTE);
  std::string owner_uid = uid_line(owner_zygote);
  ASSERT_FALSE(owner_uid.empty());

  // reader's zygote evicts owner's (the budget holds one).
  auto cold = invoke_with("reader");
  ASSERT_EQ(cold.status(), v1::SUCCESS) << cold.result_json();
  int reader_zygote = zygote_pid("reader");
  ASSERT_GT(reader_zygote, 0) << agent_->log_text();
  ASSERT_EQ(::kill(owner_zygote, 0), 0) << "owner's retired zygote should live on with its parked instance";
  EXPECT_NE(uid_line(reader_zygote), owner_uid) << "reader's zygote got the id of a zygote that still lives";

  auto scan = invoke_with("reader", "{}", v1::ZYGOTE);
  EXPECT_EQ(scan.start_kind(), v1::ZYGOTE);
  ASSERT_EQ(scan.status(), v1::SUCCESS) << scan.result_json();
  EXPECT_EQ(json::parse(scan.result_json())["found"], json::array()) << "reader read owner's code: " << scan.result_json();
}

}  // namespace
}  // namespace stoke
