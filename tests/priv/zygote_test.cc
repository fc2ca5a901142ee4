// Python zygotes through a real agent: instances forked from a function's
// zygote have the full isolation baseline, their own namespaces, share the
// init state but nothing an earlier instance did, and a zygote that dies,
// an update, a timeout or an OOM never leaves a function unserved.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"
#include "tests/util/isolation_checks.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class Zygotes : public test::AgentTest {
 protected:
  // No prewarm pool and no images: a function's first call is cold, and a
  // start that is not a zygote's is cold too.
  std::string extra_config() override { return "pools { python: 0 node: 0 }\ncheckpoints: false\n"; }

  // Registers (or updates) `name` from one Python file, or from a directory.
  void create(const std::string& name, const std::string& source, uint64_t memory = 0, uint64_t timeout_ms = 0,
              uint32_t concurrency = 0, bool update = false, v1::Runtime runtime = v1::PYTHON,
              const std::string& file = "f.py") {
    std::string path = dir_.file(name + "-" + std::to_string(++files_) + "-" + file);
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, runtime, path, file, memory, timeout_ms, concurrency);
    if (update) {
      v1::Request u;
      u.mutable_update_function()->set_name(name);
      *u.mutable_update_function()->mutable_config() = r.create_function().config();
      r = u;
    }
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  v1::Activation invoke(const std::string& name, const json& params = json::object(),
                        v1::StartKind start = v1::START_KIND_UNSPECIFIED) {
    return invoke_with(name, params.dump(), start);
  }
  // First call (cold), then the zygote it leaves behind.
  int warm_up(const std::string& function) {
    auto first = invoke(function);
    EXPECT_EQ(first.status(), v1::SUCCESS) << first.result_json();
    int pid = zygote_pid(function);
    EXPECT_GT(pid, 0) << "no zygote for " << function << "\n" << agent_->log_text();
    return pid;
  }
  json zygote_result(const std::string& function, const json& params = json::object()) {
    auto a = invoke(function, params, v1::ZYGOTE);
    EXPECT_EQ(a.start_kind(), v1::ZYGOTE);
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    return a.status() == v1::SUCCESS ? json::parse(a.result_json()) : json::object();
  }
  int files_ = 0;
};

TEST_F(Zygotes, ZygoteInstancePassesTheIsolationBaselineLikeAColdOne) {
  setenv("STOKE_TEST_SECRET", "host-only", 1);  // must not reach any sandbox
  create_probe_bundle("iso", test::kPythonProbeFunction);
  unsetenv("STOKE_TEST_SECRET");
  warm_up("iso");
  json probe = zygote_result("iso");
  test::expect_isolation_baseline(probe);
}

TEST_F(Zygotes, TwoConcurrentZygoteInstancesCannotSeeEachOther) {
  create("pair", R"(
import os, socket, time
def main(args):
    me = args.get("me", "warm-up")
    open(f"/tmp/mark-{me}", "w").write(me)
    s = socket.socket()
    bound = True
    try:
        s.bind(("127.0.0.1", 5000)); s.listen()
    except OSError:
        bound = False
    time.sleep(0.6)  # both are alive now
    return {"bound": bound, "tmp": sorted(os.listdir("/tmp")), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in ("net", "pid", "mnt", "ipc", "uts")}}
)", 0, 0, /*concurrency=*/2);
  warm_up("pair");
  json a, b;
  std::thread t1([&] { a = zygote_result("pair", {{"me", "a"}}); });
  std::thread t2([&] { b = zygote_result("pair", {{"me", "b"}}); });
  t1.join();
  t2.join();
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_TRUE(a["bound"]) << "port 5000 taken: a shared network namespace";
  EXPECT_TRUE(b["bound"]) << "port 5000 taken: a shared network namespace";
  EXPECT_EQ(a["tmp"], json::array({"mark-a"}));
  EXPECT_EQ(b["tmp"], json::array({"mark-b"}));
  // Its pid namespace holds its init (made by the zygote's maker) and itself.
  EXPECT_EQ(a["pids"], json::array({1, 2})) << a["pids"].dump();
  EXPECT_EQ(b["pids"], json::array({1, 2})) << b["pids"].dump();
  for (const char* ns : {"net", "pid", "mnt", "ipc", "uts"}) EXPECT_NE(a["ns"][ns], b["ns"][ns]) << ns;
}

TEST_F(Zygotes, InitStateIsInheritedButOneInstancesChangesDoNotReachTheNext) {
  create("state", R"(
import os
INIT = {"loaded_at_init": sum(range(1000))}  # module-level init: done once, in the zygote
counter = 0
def main(args):
    global counter
    counter += 1
    seen = {"counter": counter, "init": dict(INIT), "tmp": sorted(os.listdir("/tmp")),
            "env": os.environ.get("LEAK"), "fds": sorted(os.listdir("/proc/self/fd"))}
    INIT["changed"] = True
    open("/tmp/left-behind", "w").write("x")
    os.environ["LEAK"] = "yes"
    return seen
)");
  warm_up("state");
  json first = zygote_result("state");
  json second = zygote_result("state");
  for (const json& r : {first, second}) {
    EXPECT_EQ(r["counter"], 1) << r.dump();
    EXPECT_EQ(r["init"], json({{"loaded_at_init", 499500}})) << r.dump();
    EXPECT_EQ(r["tmp"], json::array()) << r.dump();
    EXPECT_TRUE(r["env"].is_null()) << r.dump();
  }
  // fds 0..3 and the one listdir opens: nothing inherited from the zygote.
  EXPECT_EQ(first["fds"], json::array({"0", "1", "2", "3", "4"})) << first.dump();
  EXPECT_EQ(first["fds"], second["fds"]);
}

TEST_F(Zygotes, RandomNumbersDifferAcrossZygoteInstances) {
  create("rng", "import random\nSEEDED = random.random()\ndef main(args):\n    return {'r': random.getrandbits(64), 'init': SEEDED}\n");
  warm_up("rng");
  std::set<uint64_t> seen;
  json init;
  for (int i = 0; i < 4; ++i) {
    json r = zygote_result("rng");
    seen.insert(r["r"].get<uint64_t>());
    if (i == 0) init = r["init"];
    EXPECT_EQ(r["init"], init) << "the module-level value comes from the zygote's init";
  }
  EXPECT_EQ(seen.size(), 4u);
}

TEST_F(Zygotes, TimeoutAndOomInAZygoteInstanceAreReportedAndTheZygoteServesOn) {
  create("harm", R"(
import time
def main(args):
    if args.get("sleep"):
        time.sleep(30)
    if args.get("oom"):
        hog = bytearray(512 << 20)
        hog[::4096] = b"x" * len(hog[::4096])
    return {"ok": True}
)", /*memory=*/64ULL << 20, /*timeout_ms=*/1000);
  int zygote = warm_up("harm");
  auto slow = invoke("harm", {{"sleep", true}}, v1::ZYGOTE);
  EXPECT_EQ(slow.start_kind(), v1::ZYGOTE);
  EXPECT_EQ(slow.status(), v1::TIMEOUT) << slow.result_json();
  auto fat = invoke("harm", {{"oom", true}}, v1::ZYGOTE);
  EXPECT_EQ(fat.start_kind(), v1::ZYGOTE);
  EXPECT_EQ(fat.status(), v1::OOM) << fat.result_json();
  EXPECT_EQ(zygote_result("harm")["ok"], true);
  EXPECT_EQ(zygote_pid("harm"), zygote) << "the zygote itself was replaced";
}

TEST_F(Zygotes, ZygoteKilledFromOutsideIsReplacedAndCallsKeepWorking) {
  create("victim", "def main(args):\n    return {'ok': True}\n");
  int zygote = warm_up("victim");
  ASSERT_GT(zygote, 0);
  ASSERT_EQ(::kill(zygote, SIGKILL), 0);  // the agent's zygote, by its pid
  auto next = invoke("victim", json::object(), v1::ZYGOTE);
  EXPECT_EQ(next.status(), v1::SUCCESS) << next.result_json();  // a cold start, or the new zygote
  int replacement = zygote_pid("victim", zygote);
  ASSERT_GT(replacement, 0) << agent_->log_text();
  EXPECT_NE(replacement, zygote);
  EXPECT_EQ(zygote_result("victim")["ok"], true);
}

TEST_F(Zygotes, UpdateWhileAZygoteLivesServesTheNewCode) {
  create("changing", "def main(args):\n    return {'v': 1}\n");
  warm_up("changing");
  EXPECT_EQ(zygote_result("changing")["v"], 1);
  create("changing", "def main(args):\n    return {'v': 2}\n", 0, 0, 0, /*update=*/true);
  auto a = invoke("changing", json::object(), v1::ZYGOTE);
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.version(), 2u);
  EXPECT_EQ(json::parse(a.result_json())["v"], 2);
}

TEST_F(Zygotes, StatusListsZygotesWithTheirMemory) {
  create("listed", "def main(args):\n    return {}\n");
  warm_up("listed");
  bool function = false;
  v1::Status st = status();
  for (const auto& z : st.zygotes()) {
    // The zygote's own memory (an interpreter with the code imported, pages
    // shared with its forks), not its maker's few pages.
    EXPECT_GT(z.uss_bytes(), 0u) << z.function();
    EXPECT_GT(z.pss_bytes(), 4u << 20) << z.function();
    function |= z.function() == "listed" && z.version() == 1;
  }
  EXPECT_TRUE(function);
}

TEST_F(Zygotes, CodeThatLeavesThreadsRunningGetsNoZygoteAndStillRuns) {
  create("threaded", "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
                     "def main(args):\n    return {'ok': True}\n");
  EXPECT_EQ(invoke("threaded").status(), v1::SUCCESS);
  for (int i = 0; i < 200 && agent_->log_text().find("a zygote must be single-threaded") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(agent_->log_text().find("a zygote must be single-threaded"), std::string::npos) << agent_->log_text();
  auto a = invoke("threaded", json::object(), v1::ZYGOTE);  // forced: falls back at once
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::COLD);
  EXPECT_LT(a.duration_ms(), 5000) << "a refused zygote must not be waited for";
}

// A refusal is of a version's code: after a delete, a new function of the
// same name starts again at version 1 and gets its zygote.
TEST_F(Zygotes, ANewFunctionOfADeletedNameGetsAZygoteDespiteTheOldOnesRefusal) {
  create("reborn", "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
                   "def main(args):\n    return {'ok': True}\n");
  EXPECT_EQ(invoke("reborn").status(), v1::SUCCESS);
  for (int i = 0; i < 200 && agent_->log_text().find("a zygote must be single-threaded") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(invoke("reborn", json::object(), v1::ZYGOTE).start_kind(), v1::COLD);
  v1::Request del;
  del.mutable_delete_function()->set_name("reborn");
  ASSERT_TRUE(send(del).has_deleted());
  create("reborn", "def main(args):\n    return {'ok': True}\n");
  auto a = invoke("reborn", json::object(), v1::ZYGOTE);  // forced: waits for the new zygote
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::ZYGOTE) << agent_->log_text();
}

// Every process the agent started, by its pid's children chain: none may outlive it.
std::vector<int> descendants_of(int pid) {
  std::vector<int> out, todo{pid};
  while (!todo.empty()) {
    int p = todo.back();
    todo.pop_back();
    std::error_code ec;
    // Children hang off the thread that made them (the agent's workers).
    for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(p) + "/task", ec)) {
      std::ifstream children(task.path() / "children");
      for (int c; children >> c;) {
        out.push_back(c);
        todo.push_back(c);
      }
    }
  }
  return out;
}

TEST_F(Zygotes, StoppingTheAgentLeavesNoZygoteInstanceOrCgroup) {
  create("tidy", "def main(args):\n    return {}\n", 0, 0, /*concurrency=*/2);
  warm_up("tidy");
  zygote_result("tidy");
  std::vector<int> started = descendants_of(agent_->pid());
  ASSERT_GE(started.size(), 3u) << "the zygote's maker, the zygote, instances";
  int pid = agent_->pid();
  int status = agent_->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (int p : started) EXPECT_NE(::kill(p, 0), 0) << "process " << p << " outlived the agent";
  auto left = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                                 "sb-" + std::to_string(pid) + "-*"});
  EXPECT_TRUE(left.out.empty()) << "cgroups outlived the agent: " << left.out;
}

TEST_F(Zygotes, NodeFunctionsRefuseAZygoteStartClearly) {
  create("js", "exports.main = () => ({});\n", 0, 0, 0, false, v1::NODE, "f.js");
  v1::Request r = test::invoke_request("js", "{}");
  r.mutable_invoke()->set_start(v1::ZYGOTE);
  auto c = send(r);
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(), v1::Error::FAILED_PRECONDITION);
  EXPECT_NE(c.error().message().find("Python"), std::string::npos) << c.error().message();
}

// Room for two 64 MiB function zygotes.
class ZygoteBudget : public Zygotes {
 protected:
  std::string extra_config() override {
    return "pools { python: 0 node: 0 }\ncheckpoints: false\nzygotes { memory_budget_bytes: " +
           std::to_string(128 << 20) + " }\n";
  }
};

TEST_F(ZygoteBudget, TheLeastRecentlyUsedZygoteMakesRoomForANewOne) {
  for (const char* fn : {"z1", "z2", "z3"}) create(fn, "def main(args):\n    return {}\n", 64ULL << 20);
  int z1 = warm_up("z1");
  warm_up("z2");
  zygote_result("z2");  // z1 is now the least recently used
  warm_up("z3");
  std::set<std::string> live;
  v1::Status st = status();
  for (const auto& z : st.zygotes()) live.insert(z.function());
  EXPECT_EQ(live, (std::set<std::string>{"z2", "z3"}));
  // z1 still answers: from a cold start, and it gets a zygote again later.
  EXPECT_EQ(invoke("z1").status(), v1::SUCCESS);
  EXPECT_NE(zygote_pid("z1", z1), -1);
}

}  // namespace
}  // namespace stoke
