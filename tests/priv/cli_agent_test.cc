// The `stoke` CLI's agent verbs against a real stoked: what a user types.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

constexpr const char* kEchoAction = R"SH(#!/bin/sh
# actionloop echo: reply with the request's value
while IFS= read -r line; do
  echo "log: $line"
  printf '{"got":%s}\n' "$line" >&3
done
)SH";

class CliAgent : public test::AgentTest {
 protected:
  test::RunResult stoke(std::vector<std::string> args) {
    args.insert(args.begin(), {test::stoke_bin(), "--socket", agent_->socket()});
    return test::run_command(args, "", 60000);
  }
};

TEST_F(CliAgent, CreateInvokeAndInspectAFunctionFromADirectory) {
  // A directory is packed as tar by the CLI; the entry names the executable.
  std::string code = dir_.file("code");
  std::filesystem::create_directories(code + "/bin");
  test::write_executable(code + "/bin/echo.sh", kEchoAction);
  auto created = stoke({"fn", "create", "echo", "--runtime", "exec", "--code", code, "--entry", "bin/echo.sh",
                        "--memory", "64M", "--timeout", "5s", "--env", "GREETING=hi"});
  ASSERT_EQ(created.exit_code, 0) << created.err << agent_->log_text();
  EXPECT_NE(created.out.find("echo v1"), std::string::npos) << created.out;

  auto invoked = stoke({"invoke", "echo", "-p", "name=world", "-p", "n=3", "--json"});
  ASSERT_EQ(invoked.exit_code, 0) << invoked.err << invoked.out;
  json a = json::parse(invoked.out);
  for (const char* field : {"activationId", "function", "version", "start", "end", "durationMs", "waitMs", "initMs",
                            "startKind", "status", "result", "logs", "usage"})
    EXPECT_TRUE(a.contains(field)) << field << " missing in " << invoked.out;
  for (const char* field : {"cpuUserMs", "cpuSystemMs", "memoryPeakBytes", "billedMs", "gbSeconds"})
    EXPECT_TRUE(a["usage"].contains(field)) << field;
  EXPECT_EQ(a["status"], "success");
  EXPECT_EQ(a["startKind"], "cold");
  EXPECT_EQ(a["result"]["got"]["value"]["name"], "world");
  EXPECT_EQ(a["result"]["got"]["value"]["n"], 3);  // -p values that parse as JSON are JSON

  std::string id = a["activationId"];
  auto logs = stoke({"activation", "logs", id});
  EXPECT_EQ(logs.exit_code, 0);
  EXPECT_NE(logs.out.find("log: "), std::string::npos) << logs.out;
  auto got = stoke({"activation", "get", id, "--json"});
  EXPECT_EQ(json::parse(got.out)["activationId"], id);
  auto list = stoke({"activation", "list", "--fn", "echo", "--limit", "5", "--json"});
  EXPECT_EQ(json::parse(list.out).size(), 1u);

  auto fn = stoke({"fn", "get", "echo", "--json"});
  json f = json::parse(fn.out);
  EXPECT_EQ(f["runtime"], "exec");
  EXPECT_EQ(f["env"]["GREETING"], "hi");
  EXPECT_EQ(f["memoryBytes"], 64 << 20);

  auto status = stoke({"status", "--json"});
  EXPECT_EQ(json::parse(status.out)["functions"], 1);
  EXPECT_EQ(stoke({"fn", "delete", "echo"}).exit_code, 0);
  EXPECT_EQ(stoke({"fn", "list", "--json"}).out, "[]\n");
}

TEST_F(CliAgent, InvokeExitsNonZeroWhenTheActivationFails) {
  std::string file = test::write_executable(dir_.file("fail.sh"), "#!/bin/sh\nread -r line\necho '{\"error\":\"nope\"}' >&3\n");
  ASSERT_EQ(stoke({"fn", "create", "fail", "--runtime", "exec", "--code", file}).exit_code, 0);
  auto r = stoke({"invoke", "fail"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("application_error"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
}

TEST_F(CliAgent, AsyncInvokePrintsAnActivationIdThatCompletes) {
  std::string file = test::write_executable(dir_.file("echo.sh"), kEchoAction);
  ASSERT_EQ(stoke({"fn", "create", "async-echo", "--runtime", "exec", "--code", file}).exit_code, 0);
  auto r = stoke({"invoke", "async-echo", "--data", "{\"x\":1}", "--async"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = r.out.substr(0, r.out.find('\n'));
  ASSERT_EQ(id.size(), 32u) << r.out;
  std::string status;
  for (int i = 0; i < 200 && status != "success"; ++i) {
    auto got = stoke({"activation", "get", id, "--json"});
    if (got.exit_code == 0) status = json::parse(got.out)["status"];
    if (status != "success") usleep(20000);
  }
  EXPECT_EQ(status, "success");
}

TEST_F(CliAgent, UsageAndAgentErrorsHaveDistinctExitCodes) {
  EXPECT_EQ(stoke({"fn", "create", "x", "--runtime", "cobol", "--code", "/etc/hostname"}).exit_code, 2);
  EXPECT_EQ(stoke({"invoke"}).exit_code, 2);
  auto missing = stoke({"invoke", "nope"});
  EXPECT_EQ(missing.exit_code, 3);
  EXPECT_NE(missing.err.find("NOT_FOUND"), std::string::npos) << missing.err;
  auto forced = stoke({"invoke", "nope", "--start", "zygote"});
  EXPECT_EQ(forced.exit_code, 3);
  auto no_agent = test::run_command({test::stoke_bin(), "--socket", dir_.file("no.sock"), "status"});
  EXPECT_EQ(no_agent.exit_code, 3);
  EXPECT_NE(no_agent.err.find("cannot talk to the agent"), std::string::npos) << no_agent.err;
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST_F(CliAgent, PythonAndNodeFunctionsThroughTheCli) {
  std::string py = dir_.file("hello.py");
  std::ofstream(py) << "def main(args):\n    print('hi', args.get('name'))\n    return {'hello': args.get('name')}\n";
  std::string js = dir_.file("hello.js");
  std::ofstream(js) << "exports.main = async (p) => { console.log('hi', p.name); return { hello: p.name }; };\n";
  std::string bad = dir_.file("bad.py");
  std::ofstream(bad) << "def main(args):\n    return 'not a dict'\n";
  ASSERT_EQ(stoke({"fn", "create", "py", "--runtime", "python", "--code", py}).exit_code, 0);
  ASSERT_EQ(stoke({"fn", "create", "js", "--runtime", "node", "--code", js}).exit_code, 0);
  ASSERT_EQ(stoke({"fn", "create", "bad", "--runtime", "python", "--code", bad}).exit_code, 0);
  for (const char* fn : {"py", "js"}) {
    auto first = stoke({"invoke", fn, "-p", "name=cli", "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
    json a = json::parse(first.out);
    EXPECT_EQ(a["result"]["hello"], "cli");
    EXPECT_NE(a["startKind"], "warm");
    EXPECT_EQ(a["logs"].size(), 1u) << a["logs"].dump();
    auto second = stoke({"invoke", fn, "-p", "name=again", "--json"});
    ASSERT_EQ(second.exit_code, 0);
    EXPECT_EQ(json::parse(second.out)["startKind"], "warm");
    auto plain = stoke({"invoke", fn, "-p", "name=plain"});
    EXPECT_EQ(json::parse(plain.out)["hello"], "plain") << "without --json: the result alone";
  }
  auto r = stoke({"invoke", "bad", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["status"], "developer_error");
}

}  // namespace
}  // namespace stoke
