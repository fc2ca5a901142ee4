// The Python and Node.js runtimes through a real agent: results, the three
// error kinds, logs, the activation context, code as a file or a package.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"
#include "tests/util/isolation_checks.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class Runtimes : public test::AgentTest {
 protected:

  // Registers `name` from a single source file with this content.
  void create_file(const std::string& name, v1::Runtime runtime, const std::string& file_name,
                   const std::string& source, const std::string& entry = "", uint64_t timeout_ms = 0,
                   uint64_t memory = 0) {
    std::string path = dir_.file(name + "-" + file_name);
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, runtime, path, file_name, memory, timeout_ms);
    r.mutable_create_function()->mutable_config()->set_entry(entry);
    auto c = agent_->connect().call(r);
    ASSERT_TRUE(c.ok());
    ASSERT_FALSE(c->has_error() && c->error().code() != v1::Error::OK) << c->error().message();
  }
  // Registers `name` from a directory, through the CLI (which sends a tar).
  void create_dir(const std::string& name, const std::string& runtime, const std::string& dir) {
    auto r = test::run_command({test::stoke_bin(), "--socket", agent_->socket(), "fn", "create", name, "--runtime",
                                runtime, "--code", dir});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  v1::Activation invoke(const std::string& name, const json& params = json::object()) {
    auto r = agent_->connect().call(test::invoke_request(name, params.dump()));
    EXPECT_TRUE(r.ok());
    EXPECT_TRUE(r.ok() && r->has_activation()) << (r.ok() && r->has_error() ? r->error().message() : "");
    return r.ok() ? r->activation() : v1::Activation{};
  }
  static std::string logs(const v1::Activation& a) {
    std::string all;
    for (const auto& l : a.logs()) all += l + "\n";
    return all;
  }
};

TEST_F(Runtimes, PythonMainReturnsItsDictWithLogsAndContext) {
  create_file("py-hello", v1::PYTHON, "hello.py", R"(
import os
def main(args):
    print("hello from python", args.get("who"))
    return {"greeting": "hello " + args.get("who", "?"),
            "activation": os.environ.get("__OW_ACTIVATION_ID"),
            "name": os.environ.get("__OW_ACTION_NAME"),
            "deadline": os.environ.get("__OW_DEADLINE")}
)");
  auto a = invoke("py-hello", {{"who", "you"}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
  json r = json::parse(a.result_json());
  EXPECT_EQ(r["greeting"], "hello you");
  EXPECT_EQ(r["activation"], a.activation_id());
  EXPECT_EQ(r["name"], "py-hello");
  EXPECT_GT(std::stoll(r["deadline"].get<std::string>()), a.start_ms());
  EXPECT_NE(logs(a).find("hello from python you"), std::string::npos) << logs(a);
  EXPECT_EQ(logs(a).find("XXX_THE_END"), std::string::npos) << "the end marker is not a log line";
}

TEST_F(Runtimes, PythonErrorsAreClassified) {
  create_file("py-raises", v1::PYTHON, "f.py", "def main(args):\n    raise ValueError('bad input')\n");
  auto raised = invoke("py-raises");
  EXPECT_EQ(raised.status(), v1::APPLICATION_ERROR) << raised.result_json();
  EXPECT_NE(raised.result_json().find("bad input"), std::string::npos);
  EXPECT_NE(logs(raised).find("Traceback"), std::string::npos) << logs(raised);

  create_file("py-syntax", v1::PYTHON, "f.py", "def main(args:\n  return {}\n");
  auto syntax = invoke("py-syntax");
  EXPECT_EQ(syntax.status(), v1::DEVELOPER_ERROR) << syntax.result_json();
  EXPECT_NE(logs(syntax).find("SyntaxError"), std::string::npos) << logs(syntax);

  create_file("py-nomain", v1::PYTHON, "f.py", "def handler(args):\n    return {}\n");
  auto nomain = invoke("py-nomain");
  EXPECT_EQ(nomain.status(), v1::DEVELOPER_ERROR) << nomain.result_json();
  EXPECT_NE(nomain.result_json().find("main"), std::string::npos);

  create_file("py-list", v1::PYTHON, "f.py", "def main(args):\n    return [1, 2]\n");
  auto list = invoke("py-list");
  EXPECT_EQ(list.status(), v1::DEVELOPER_ERROR) << list.result_json();
  EXPECT_EQ(list.result_json().find("__stoke"), std::string::npos) << "the marker is stripped";
}

TEST_F(Runtimes, PythonEntryOptionAndPackageDirectory) {
  create_file("py-entry", v1::PYTHON, "f.py", "def handler(args):\n    return {'via': 'handler'}\n", "handler");
  EXPECT_EQ(json::parse(invoke("py-entry").result_json())["via"], "handler");

  std::string pkg = dir_.file("pypkg");
  std::filesystem::create_directories(pkg);
  std::ofstream(pkg + "/helper.py") << "def twice(x):\n    return 2 * x\n";
  std::ofstream(pkg + "/__main__.py") << "import helper\ndef main(args):\n    return {'n': helper.twice(args['n'])}\n";
  create_dir("py-pkg", "python", pkg);
  auto a = invoke("py-pkg", {{"n", 21}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
  EXPECT_EQ(json::parse(a.result_json())["n"], 42);
}

TEST_F(Runtimes, PythonTimeoutAndOomAreReported) {
  create_file("py-slow", v1::PYTHON, "f.py", "import time\ndef main(args):\n    time.sleep(30)\n    return {}\n", "", 1000);
  EXPECT_EQ(invoke("py-slow").status(), v1::TIMEOUT);
  create_file("py-hog", v1::PYTHON, "f.py", "def main(args):\n    x = bytearray(512 << 20)\n    return {}\n", "", 0,
              64 << 20);
  EXPECT_EQ(invoke("py-hog").status(), v1::OOM);
}

TEST_F(Runtimes, NodeMainSyncAndAsyncWithLogs) {
  create_file("js-sync", v1::NODE, "f.js", R"(
function main(params) {
  console.log("hello from node", params.who);
  console.error("and stderr");
  return { greeting: "hello " + params.who, activation: process.env.__OW_ACTIVATION_ID };
}
module.exports.main = main;
)");
  auto a = invoke("js-sync", {{"who", "you"}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
  json r = json::parse(a.result_json());
  EXPECT_EQ(r["greeting"], "hello you");
  EXPECT_EQ(r["activation"], a.activation_id());
  EXPECT_NE(logs(a).find("hello from node you"), std::string::npos) << logs(a);
  EXPECT_NE(logs(a).find("and stderr"), std::string::npos) << logs(a);

  create_file("js-async", v1::NODE, "f.js",
              "exports.main = async (p) => { await new Promise(r => setTimeout(r, 20)); return { later: p.x }; };\n");
  auto b = invoke("js-async", {{"x", 7}});
  ASSERT_EQ(b.status(), v1::SUCCESS) << b.result_json() << logs(b);
  EXPECT_EQ(json::parse(b.result_json())["later"], 7);
}

TEST_F(Runtimes, NodeErrorsAreClassifiedAndPackageMainIsUsed) {
  create_file("js-throws", v1::NODE, "f.js", "exports.main = () => { throw new Error('nope'); };\n");
  auto thrown = invoke("js-throws");
  EXPECT_EQ(thrown.status(), v1::APPLICATION_ERROR) << thrown.result_json();
  EXPECT_NE(thrown.result_json().find("nope"), std::string::npos);

  create_file("js-syntax", v1::NODE, "f.js", "exports.main = () => { return {; };\n");
  EXPECT_EQ(invoke("js-syntax").status(), v1::DEVELOPER_ERROR);
  create_file("js-nomain", v1::NODE, "f.js", "exports.other = () => ({});\n");
  EXPECT_EQ(invoke("js-nomain").status(), v1::DEVELOPER_ERROR);
  create_file("js-number", v1::NODE, "f.js", "exports.main = () => 42;\n");
  EXPECT_EQ(invoke("js-number").status(), v1::DEVELOPER_ERROR);

  std::string pkg = dir_.file("jspkg");
  std::filesystem::create_directories(pkg + "/lib");
  std::ofstream(pkg + "/package.json") << R"({"name": "x", "main": "lib/entry.js"})";
  std::ofstream(pkg + "/lib/entry.js") << "exports.main = (p) => ({ from: 'package main', n: p.n + 1 });\n";
  create_dir("js-pkg", "node", pkg);
  auto a = invoke("js-pkg", {{"n", 1}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
  EXPECT_EQ(json::parse(a.result_json())["n"], 2);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

// The isolation baseline seen from inside a function: a helper binary shipped
// in the code bundle (stoke-probe) run by the function itself.
class RuntimeIsolation : public Runtimes {
 protected:
  void SetUp() override {
    // In the agent's environment, so a leak into sandboxes would show.
    setenv("STOKE_TEST_SECRET", "host-only", 1);
    Runtimes::SetUp();
    unsetenv("STOKE_TEST_SECRET");
  }
  // A package directory holding the probe and a function that runs it.
  std::string bundle(const std::string& name, const std::string& entry_file, const std::string& source) {
    std::string pkg = dir_.file(name);
    std::filesystem::create_directories(pkg);
    std::filesystem::copy_file(test::probe_bin(), pkg + "/stoke-probe");
    std::ofstream(pkg + "/" + entry_file) << source;
    return pkg;
  }
  void check_baseline(const v1::Activation& a) {
    ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
    test::expect_isolation_baseline(json::parse(a.result_json()));
  }
};

TEST_F(RuntimeIsolation, PythonFunctionSeesTheFullBaseline) {
  std::string pkg = bundle("py-iso", "__main__.py", test::kPythonProbeFunction);
  create_dir("py-iso", "python", pkg);
  check_baseline(invoke("py-iso"));
}

TEST_F(RuntimeIsolation, NodeFunctionSeesTheFullBaseline) {
  std::string pkg = bundle("js-iso", "index.js", R"(
const { execFileSync } = require('child_process');
exports.main = () => {
  const lines = execFileSync('/code/stoke-probe', ['isolation']).toString().trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
};
)");
  create_dir("js-iso", "node", pkg);
  check_baseline(invoke("js-iso"));
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST_F(Runtimes, NodeGlobalMainInAPlainScriptWorks) {
  // OpenWhisk actions are often a plain script with a top-level main.
  create_file("js-global", v1::NODE, "f.js",
              "const os = require('os');\nfunction main(params) {\n  return { hello: params.who, plat: os.platform() };\n}\n");
  auto a = invoke("js-global", {{"who", "global"}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << logs(a);
  EXPECT_EQ(json::parse(a.result_json())["hello"], "global");
  EXPECT_EQ(json::parse(a.result_json())["plat"], "linux");
}

}  // namespace
}  // namespace stoke
