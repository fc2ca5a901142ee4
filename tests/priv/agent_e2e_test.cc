// The agent end to end: a real stoked, the real socket, real sandboxes.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api/wire/frame.h"
#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;
using test::AgentProcess;

// An exec-runtime function (OpenWhisk actionloop) whose behaviour the request
// picks: the test's stand-in for every kind of runtime misbehaviour.
constexpr const char* kChaosAction = R"PY(#!/usr/bin/python3
import json, os, sys, time
out = os.fdopen(3, "w")
for line in sys.stdin:
    req = json.loads(line)
    p = req["value"]
    mode = p.get("mode", "echo")
    print("request", req["activation_id"], mode, flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if mode == "sleep":
        time.sleep(p.get("seconds", 60))
    elif mode == "alloc":
        blocks = [bytearray(1 << 20) for _ in range(p.get("mb", 512))]
    elif mode == "crash":
        os._exit(3)
    elif mode == "garbage":
        out.write("this is not json\n"); out.flush(); continue
    elif mode == "huge":
        out.write('{"x": "' + "a" * (2 << 20) + '"}\n'); out.flush(); continue
    elif mode == "noreply":
        out.close(); time.sleep(0.2); sys.exit(0)
    elif mode == "error":
        out.write(json.dumps({"error": "boom"}) + "\n"); out.flush(); continue
    elif mode == "array":
        out.write("[1, 2]\n"); out.flush(); continue
    elif mode == "logs":
        for i in range(p.get("lines", 10)):
            print("line", i)
        sys.stdout.flush()
    elif mode == "children":
        kids = [os.fork() for _ in range(p.get("n", 3))]
        if 0 in kids:
            time.sleep(0.3); os._exit(0)
        for k in kids: os.waitpid(k, 0)
    out.write(json.dumps({"echo": p, "id": req["activation_id"], "name": req["action_name"]}) + "\n")
    out.flush()
)PY";

// What a response holds, for failure messages (lite messages have no DebugString).
std::string describe(const v1::Response& r) {
  if (r.has_error()) return "error " + v1::Error::Code_Name(r.error().code()) + ": " + r.error().message();
  if (r.has_activation())
    return "activation " + v1::ActivationStatus_Name(r.activation().status()) + " " + r.activation().result_json();
  return "response with body " + std::to_string(static_cast<int>(r.body_case()));
}

class AgentE2E : public test::AgentTest {
 protected:
  void SetUp() override {
    action_ = test::write_executable(dir_.file("chaos.py"), kChaosAction);
    test::AgentTest::SetUp();
  }

  v1::Response call(v1::Request req) {
    auto client = agent_->connect();
    auto r = client.call(std::move(req));
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message()) << "\n" << agent_->log_text();
    return r.ok() ? r.value() : v1::Response{};
  }
  void create(const std::string& name, uint64_t memory = 0, uint64_t timeout_ms = 0, uint32_t concurrency = 0) {
    auto r = call(test::create_request(name, v1::EXEC, action_, "chaos.py", memory, timeout_ms, concurrency));
    ASSERT_FALSE(r.has_error() && r.error().code() != v1::Error::OK) << r.error().message();
    ASSERT_EQ(r.function().version(), 1u);
  }
  v1::Activation invoke(const std::string& name, const json& params) {
    auto r = call(test::invoke_request(name, params.is_null() ? "{}" : params.dump()));
    EXPECT_TRUE(r.has_activation()) << describe(r);
    return r.activation();
  }

  std::string action_;
};

using test::sandbox_processes_of;

bool is_error(const v1::Response& r, v1::Error::Code code) { return r.has_error() && r.error().code() == code; }

TEST_F(AgentE2E, FunctionLifecycleRoundTripsThroughTheSocket) {
  create("lifecycle", 64 << 20, 5000, 2);
  v1::Request get;
  get.mutable_get_function()->set_name("lifecycle");
  auto g = call(get);
  EXPECT_EQ(g.function().name(), "lifecycle");
  EXPECT_EQ(g.function().memory_bytes(), 64u << 20);
  EXPECT_EQ(g.function().timeout_ms(), 5000u);
  EXPECT_EQ(g.function().concurrency(), 2u);
  EXPECT_EQ(g.function().code_sha256().size(), 64u);

  v1::Request upd = test::create_request("lifecycle", v1::EXEC, action_, "chaos.py");
  v1::Request update;
  update.mutable_update_function()->set_name("lifecycle");
  *update.mutable_update_function()->mutable_config() = upd.create_function().config();
  EXPECT_EQ(call(update).function().version(), 2u);

  v1::Request list;
  list.mutable_list_functions();
  auto l = call(list);
  ASSERT_EQ(l.function_list().functions_size(), 1);
  EXPECT_EQ(l.function_list().functions(0).version(), 2u);

  v1::Request del;
  del.mutable_delete_function()->set_name("lifecycle");
  EXPECT_TRUE(call(del).has_deleted());
  EXPECT_TRUE(is_error(call(get), v1::Error::NOT_FOUND));
}

TEST_F(AgentE2E, InvokeReturnsTheResultLogsAndUsage) {
  create("echo", 128 << 20);
  v1::Activation a = invoke("echo", {{"who", "world"}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << "\n" << agent_->log_text();
  json result = json::parse(a.result_json());
  EXPECT_EQ(result["echo"]["who"], "world");
  EXPECT_EQ(result["id"], a.activation_id());
  EXPECT_EQ(result["name"], "echo");
  EXPECT_EQ(a.start_kind(), v1::COLD);
  EXPECT_EQ(a.activation_id().size(), 32u);
  // stdout and stderr both reach the logs.
  std::string logs;
  for (const auto& l : a.logs()) logs += l + "\n";
  EXPECT_NE(logs.find("request " + a.activation_id()), std::string::npos) << logs;
  EXPECT_NE(logs.find("to stderr"), std::string::npos) << logs;
  EXPECT_GT(a.duration_ms(), 0);
  EXPECT_GT(a.init_ms(), 0);
  EXPECT_GE(a.end_ms(), a.start_ms());
  EXPECT_GT(a.usage().cpu_user_ms() + a.usage().cpu_system_ms(), 1.0);  // python started in there
  EXPECT_GT(a.usage().memory_peak_bytes(), 1u << 20);
  // Billed: instance start (init) and run, not queueing or teardown.
  EXPECT_GE(static_cast<double>(a.usage().billed_ms()), a.init_ms());
  EXPECT_LE(static_cast<double>(a.usage().billed_ms()), a.duration_ms() + 1);
  EXPECT_NEAR(a.usage().gb_seconds(), a.usage().billed_ms() / 1000.0 * 0.125, 1e-9);
  EXPECT_GE(a.usage().pids_peak(), 1u);

  // The record is stored: get and logs give the same.
  v1::Request get;
  get.mutable_get_activation()->set_activation_id(a.activation_id());
  EXPECT_EQ(call(get).activation().result_json(), a.result_json());
  v1::Request logs_req;
  logs_req.mutable_get_activation_logs()->set_activation_id(a.activation_id());
  EXPECT_EQ(call(logs_req).activation_logs().logs_size(), a.logs_size());
}

// pids.peak of the sandbox's cgroup (v1 and v2 on these kernels): a function
// that forks five children at once shows at least six tasks, and the record
// keeps the figure.
TEST_F(AgentE2E, UsageReportsThePeakNumberOfTasks) {
  create("forker", 128 << 20);
  v1::Activation a = invoke("forker", {{"mode", "children"}, {"n", 5}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << "\n" << agent_->log_text();
  EXPECT_GE(a.usage().pids_peak(), 6u);
  EXPECT_LT(a.usage().pids_peak(), 64u);
  v1::Request get;
  get.mutable_get_activation()->set_activation_id(a.activation_id());
  EXPECT_EQ(call(get).activation().usage().pids_peak(), a.usage().pids_peak());
}

TEST_F(AgentE2E, EachMisbehaviourGetsItsStatus) {
  create("chaos", 64 << 20, 2000);
  struct Case {
    json params;
    v1::ActivationStatus status;
    const char* needle;
  };
  for (const auto& c : std::vector<Case>{
           {{{"mode", "error"}}, v1::APPLICATION_ERROR, "boom"},
           {{{"mode", "sleep"}, {"seconds", 30}}, v1::TIMEOUT, "timed out"},
           {{{"mode", "alloc"}, {"mb", 256}}, v1::OOM, "memory"},
           {{{"mode", "crash"}}, v1::DEVELOPER_ERROR, "without replying"},
           {{{"mode", "garbage"}}, v1::DEVELOPER_ERROR, "not JSON"},
           {{{"mode", "huge"}}, v1::DEVELOPER_ERROR, "larger than"},
           {{{"mode", "noreply"}}, v1::DEVELOPER_ERROR, "without replying"},
           {{{"mode", "array"}}, v1::DEVELOPER_ERROR, "JSON object"},
       }) {
    v1::Activation a = invoke("chaos", c.params);
    EXPECT_EQ(a.status(), c.status) << c.params.dump() << " -> " << a.result_json();
    EXPECT_NE(a.result_json().find(c.needle), std::string::npos) << c.params.dump() << " -> " << a.result_json();
  }
  // And the agent is still fine.
  EXPECT_EQ(invoke("chaos", {{"mode", "echo"}}).status(), v1::SUCCESS);
}

TEST_F(AgentE2E, LogsAreCappedAndMarkedTruncated) {
  create("logs");
  v1::Activation a = invoke("logs", {{"mode", "logs"}, {"lines", 5000}});
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_TRUE(a.logs_truncated());
  EXPECT_LE(a.logs_size(), 1000);
}

TEST_F(AgentE2E, ConcurrentInvokesOnOneConnectionAreAnsweredById) {
  create("conc", 64 << 20, 10000, 4);
  auto client = agent_->connect();
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = client.send(test::invoke_request("conc", json{{"i", i}}.dump()));
    ASSERT_TRUE(id.ok());
    ids.push_back(id.value());
  }
  for (int i = 3; i >= 0; --i) {  // collected in the opposite order
    auto r = client.wait_for(ids[static_cast<size_t>(i)]);
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_EQ(r->activation().status(), v1::SUCCESS) << r->activation().result_json();
    EXPECT_EQ(json::parse(r->activation().result_json())["echo"]["i"], i);
  }
}

TEST_F(AgentE2E, ConcurrentInvokesAcrossConnectionsAllSucceed) {
  create("many", 64 << 20, 20000, 2);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      auto client = agent_->connect();
      for (int i = 0; i < 2; ++i) {
        auto r = client.call(test::invoke_request("many", json{{"t", t}}.dump()));
        if (r.ok() && r->activation().status() == v1::SUCCESS) ++ok;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 8);
}

TEST_F(AgentE2E, ConcurrencyLimitQueuesAndShowsWait) {
  create("one-at-a-time", 64 << 20, 20000, 1);
  auto client = agent_->connect();
  auto first = client.send(test::invoke_request("one-at-a-time", json{{"mode", "sleep"}, {"seconds", 0.5}}.dump()));
  // Both sleep: whichever gets the slot first, the other waits ~0.5 s for it.
  auto second = client.send(test::invoke_request("one-at-a-time", json{{"mode", "sleep"}, {"seconds", 0.5}}.dump()));
  ASSERT_TRUE(first.ok() && second.ok());
  auto r1 = client.wait_for(first.value());
  auto r2 = client.wait_for(second.value());
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(r1->activation().status(), v1::SUCCESS);
  EXPECT_EQ(r2->activation().status(), v1::SUCCESS);
  // Whichever was admitted second waited for the other to finish.
  double waited = std::max(r1->activation().wait_ms(), r2->activation().wait_ms());
  double other = std::min(r1->activation().wait_ms(), r2->activation().wait_ms());
  EXPECT_GT(waited, 200) << "one activation should have queued behind the other";
  EXPECT_LT(other, 100);
}

TEST_F(AgentE2E, BadRequestsGetClearErrors) {
  create("target");
  auto bad_name = call(test::create_request("../etc", v1::EXEC, action_, "chaos.py"));
  EXPECT_TRUE(is_error(bad_name, v1::Error::INVALID_ARGUMENT)) << describe(bad_name);
  EXPECT_TRUE(is_error(call(test::create_request("target", v1::EXEC, action_, "chaos.py")), v1::Error::ALREADY_EXISTS));
  EXPECT_TRUE(is_error(call(test::invoke_request("missing")), v1::Error::NOT_FOUND));
  EXPECT_TRUE(is_error(call(test::invoke_request("target", "{not json")), v1::Error::INVALID_ARGUMENT));
  EXPECT_TRUE(is_error(call(test::invoke_request("target", "[1]")), v1::Error::INVALID_ARGUMENT));
  std::string big = json{{"x", std::string(1 << 20, 'a')}}.dump();
  EXPECT_TRUE(is_error(call(test::invoke_request("target", big)), v1::Error::RESOURCE_EXHAUSTED));
  v1::Request zygote = test::invoke_request("target");
  zygote.mutable_invoke()->set_start(v1::ZYGOTE);
  EXPECT_TRUE(is_error(call(zygote), v1::Error::FAILED_PRECONDITION));
  // A file name with a slash could escape the code directory.
  EXPECT_TRUE(is_error(call(test::create_request("sneaky", v1::EXEC, action_, "../chaos.py")), v1::Error::INVALID_ARGUMENT));
  // Code that cannot be executed is the developer's error, reported as such.
  std::string text = dir_.file("notes.txt");
  std::ofstream(text) << "just some text, no program\n";
  auto made = call(test::create_request("notexec", v1::EXEC, text, "notes.txt"));
  ASSERT_FALSE(made.has_error() && made.error().code() != v1::Error::OK) << made.error().message();
  v1::Activation a = invoke("notexec", {});
  EXPECT_EQ(a.status(), v1::DEVELOPER_ERROR) << a.result_json();
  EXPECT_NE(a.result_json().find("did not start"), std::string::npos) << a.result_json();
}

TEST_F(AgentE2E, MalformedFramesAndRandomBytesDoNotHurtTheAgent) {
  auto raw_connect = [&] {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, agent_->socket().c_str());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  };
  std::vector<std::string> attacks = {
      std::string("\xff\xff\xff\xff", 4),             // a 4 GiB frame
      std::string("\x00\x00\x00\x10garbage", 11),      // truncated, then EOF
      std::string("\x00\x00\x00\x05\x0a\x05hello", 9),  // not a valid Request
  };
  std::string noise(4096, '\0');
  for (auto& c : noise) c = static_cast<char>(std::rand());
  attacks.push_back(noise);
  for (const auto& bytes : attacks) {
    int fd = raw_connect();
    (void)!write(fd, bytes.data(), bytes.size());
    shutdown(fd, SHUT_WR);
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
  }
  // A request before hello is refused, and the agent still serves others.
  {
    int fd = raw_connect();
    ASSERT_TRUE(wire::write_frame(fd, test::invoke_request("x")).ok());
    auto frame = wire::read_frame(fd);
    ASSERT_TRUE(frame.ok());
    auto r = wire::parse_response(frame.value());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->error().code(), v1::Error::PROTOCOL_ERROR);
    close(fd);
  }
  create("still-alive");
  EXPECT_EQ(invoke("still-alive", {}).status(), v1::SUCCESS);
}

TEST_F(AgentE2E, Kill9MidInvokeLosesNothingAndLeaksNoSandbox) {
  create("victim", 64 << 20, 60000);
  auto client = agent_->connect();
  v1::Request req = test::invoke_request("victim", json{{"mode", "sleep"}, {"seconds", 300.75}}.dump());
  req.mutable_invoke()->set_async(true);
  auto accepted = client.call(req);
  ASSERT_TRUE(accepted.ok());
  std::string id = accepted->invoke_accepted().activation_id();
  ASSERT_EQ(id.size(), 32u);
  // Wait until the sandbox runs the sleep.
  pid_t old_pid = agent_->pid();
  bool running = false;
  for (int i = 0; i < 300 && !running; ++i) {
    running = !sandbox_processes_of(old_pid).empty();
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(running) << agent_->log_text();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  agent_->kill9();

  // The sandbox died with the agent.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = sandbox_processes_of(old_pid).empty();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "a sandbox outlived kill -9 of the agent";

  agent_->restart();
  // The function is intact, the activation is recorded as failed (not lost,
  // not stuck running), and the dead agent's cgroups are gone.
  v1::Request get;
  get.mutable_get_function()->set_name("victim");
  EXPECT_EQ(call(get).function().name(), "victim");
  v1::Request act;
  act.mutable_get_activation()->set_activation_id(id);
  auto a = call(act);
  EXPECT_EQ(a.activation().status(), v1::INTERNAL_ERROR) << describe(a);
  EXPECT_GT(a.activation().end_ms(), 0);
  auto left = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                                 "sb-" + std::to_string(old_pid) + "-*"});
  EXPECT_TRUE(left.out.empty()) << "cgroups of the killed agent: " << left.out;
  EXPECT_EQ(invoke("victim", {}).status(), v1::SUCCESS);
}

// The running journal: an activation whose id was given out is recorded
// even when the agent dies before its registry row was written (the row of
// an activation is held back up to 50 ms, to be written with its finish).
TEST_F(AgentE2E, Kill9RightAfterAnIdWasGivenOutStillRecordsThatActivationAsInterrupted) {
  create("cut-short", 64 << 20, 60000);
  auto client = agent_->connect();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    v1::Request req = test::invoke_request("cut-short", json{{"mode", "sleep"}, {"seconds", 300.25}}.dump());
    req.mutable_invoke()->set_async(true);
    auto accepted = client.call(req);
    ASSERT_TRUE(accepted.ok());
    ASSERT_TRUE(accepted->has_invoke_accepted()) << accepted->DebugString();
    ids.push_back(accepted->invoke_accepted().activation_id());
  }
  agent_->kill9();  // within milliseconds of the ids: no row of theirs is written yet
  agent_->restart();
  for (const auto& id : ids) {
    v1::Request act;
    act.mutable_get_activation()->set_activation_id(id);
    auto a = call(act);
    ASSERT_TRUE(a.has_activation()) << id << " was given out and is lost: " << describe(a);
    EXPECT_EQ(a.activation().status(), v1::INTERNAL_ERROR);
    EXPECT_EQ(a.activation().function(), "cut-short");
    EXPECT_GT(a.activation().end_ms(), 0);
    EXPECT_NE(a.activation().result_json().find("the agent stopped"), std::string::npos) << a.activation().result_json();
  }
  // Recorded once: a second restart finds nothing more to record.
  agent_->kill9();
  agent_->restart();
  const std::string log = agent_->log_text();
  size_t said = 0;
  for (size_t at = log.find("interrupted activation(s)"); at != std::string::npos;
       at = log.find("interrupted activation(s)", at + 1))
    ++said;
  EXPECT_EQ(said, 1u) << log;
  EXPECT_NE(log.find("recorded 3 interrupted activation(s)"), std::string::npos) << log;
}

// The activation log: a reply goes out once the record is appended, before
// its registry row is written; kill -9 right after the reply loses nothing,
// and a list right after a reply shows that activation.
TEST_F(AgentE2E, Kill9RightAfterRepliesKeepsEveryRepliedRecordWithItsResult) {
  create("quick", 64 << 20, 10000);
  auto client = agent_->connect();
  std::vector<v1::Activation> replied;
  for (int i = 0; i < 5; ++i) {
    auto r = client.call(test::invoke_request("quick", json{{"i", i}}.dump()));
    ASSERT_TRUE(r.ok() && r->has_activation()) << (r.ok() ? describe(*r) : r.error().message());
    replied.push_back(r->activation());
  }
  v1::Request list;
  list.mutable_list_activations()->set_function("quick");
  auto listed = client.call(list);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->activation_list().activations_size(), 5) << "a list right after the replies misses some";
  agent_->kill9();
  agent_->restart();
  for (const auto& want : replied) {
    v1::Request get;
    get.mutable_get_activation()->set_activation_id(want.activation_id());
    auto got = call(get);
    ASSERT_TRUE(got.has_activation()) << want.activation_id() << " was replied to and is lost: " << describe(got);
    EXPECT_EQ(got.activation().status(), want.status());
    EXPECT_EQ(got.activation().result_json(), want.result_json());
    EXPECT_EQ(got.activation().end_ms(), want.end_ms());
  }
  EXPECT_NE(agent_->log_text().find("finished record(s) replayed into the registry"), std::string::npos)
      << agent_->log_text();
}

TEST_F(AgentE2E, AnActivationInFlightIsVisibleByIdAtOnceAndInListsAfterItsRowIsWritten) {
  create("in-flight", 64 << 20, 60000);
  auto client = agent_->connect();
  v1::Request req = test::invoke_request("in-flight", json{{"mode", "sleep"}, {"seconds", 1.5}}.dump());
  req.mutable_invoke()->set_async(true);
  auto accepted = client.call(req);
  ASSERT_TRUE(accepted.ok());
  const std::string id = accepted->invoke_accepted().activation_id();
  v1::Request get;
  get.mutable_get_activation()->set_activation_id(id);
  auto now = call(get);
  ASSERT_TRUE(now.has_activation()) << describe(now);
  EXPECT_EQ(now.activation().end_ms(), 0) << "running";
  EXPECT_EQ(now.activation().status(), v1::ACTIVATION_STATUS_UNSPECIFIED);
  EXPECT_EQ(now.activation().function(), "in-flight");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  v1::Request list;
  list.mutable_list_activations()->set_function("in-flight");
  auto l = call(list);
  ASSERT_EQ(l.activation_list().activations_size(), 1) << describe(l);
  EXPECT_EQ(l.activation_list().activations(0).activation_id(), id);
  EXPECT_EQ(l.activation_list().activations(0).end_ms(), 0);
  v1::Activation done;
  for (int i = 0; i < 100; ++i) {
    done = call(get).activation();
    if (done.end_ms() != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(done.status(), v1::SUCCESS) << done.result_json();
}

TEST_F(AgentE2E, ASecondAgentOnTheSameStateDirRefusesToStartAndTheFirstServesOn) {
  create("first", 64 << 20, 10000);
  std::string config = dir_.file("second.conf");
  std::ofstream(config) << "state_dir: \"" << dir_.path() << "/state\"\n"
                        << "socket_path: \"" << dir_.file("second.sock") << "\"\n";
  auto second = test::run_command({test::stoked_bin(), "--config", config}, "", 30000);
  EXPECT_FALSE(second.timed_out) << "the second agent started";
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("another stoked is running on the state dir"), std::string::npos) << second.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.file("second.sock")));
  // The first one's sandboxes, registry and socket are untouched.
  EXPECT_EQ(invoke("first", {}).status(), v1::SUCCESS) << agent_->log_text();
}

TEST_F(AgentE2E, SigtermCancelsInFlightWorkWithARecordedStatus) {
  create("slow", 64 << 20, 60000);
  auto client = agent_->connect();
  v1::Request req = test::invoke_request("slow", json{{"mode", "sleep"}, {"seconds", 300.5}}.dump());
  req.mutable_invoke()->set_async(true);
  auto accepted = client.call(req);
  ASSERT_TRUE(accepted.ok());
  std::string id = accepted->invoke_accepted().activation_id();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  pid_t pid = agent_->pid();
  ASSERT_FALSE(sandbox_processes_of(pid).empty()) << "the activation should be running";
  int status = agent_->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << agent_->log_text();
  // Stopped gracefully: every sandbox torn down, cgroups included.
  auto left = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                                 "sb-" + std::to_string(pid) + "-*"});
  EXPECT_TRUE(left.out.empty()) << "left behind by a graceful stop: " << left.out;
  agent_->restart();
  v1::Request act;
  act.mutable_get_activation()->set_activation_id(id);
  auto a = call(act);
  EXPECT_EQ(a.activation().status(), v1::INTERNAL_ERROR);
  EXPECT_NE(a.activation().result_json().find("stopping"), std::string::npos) << a.activation().result_json();
}

TEST_F(AgentE2E, ActivationsAreListedNewestFirstWithPaging) {
  create("pages");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(invoke("pages", {{"i", i}}).activation_id());
  v1::Request list;
  list.mutable_list_activations()->set_function("pages");
  list.mutable_list_activations()->set_limit(2);
  std::vector<std::string> seen;
  for (int page = 0; page < 5; ++page) {
    auto r = call(list);
    for (const auto& a : r.activation_list().activations()) seen.push_back(a.activation_id());
    if (r.activation_list().next_page_token().empty()) break;
    list.mutable_list_activations()->set_page_token(r.activation_list().next_page_token());
  }
  std::reverse(ids.begin(), ids.end());
  EXPECT_EQ(seen, ids);
}

TEST_F(AgentE2E, StatusReportsTheAgent) {
  create("s");
  v1::Request st;
  st.mutable_get_status();
  auto r = call(st);
  EXPECT_EQ(r.status().protocol_version(), 1u);
  EXPECT_FALSE(r.status().kernel().empty());
  EXPECT_TRUE(r.status().cgroup_version() == "v1" || r.status().cgroup_version() == "v2");
  EXPECT_EQ(r.status().functions(), 1u);
  EXPECT_TRUE(r.status().features().at("io_uring"));
}

class AgentAccess : public AgentE2E {
  std::string extra_config() override { return "socket_group: \"nogroup\"\nallowed_uids: 4242\n"; }
};

TEST_F(AgentAccess, PeerNotInTheAllowListIsRefused) {
  // The socket is 0660 root:nogroup, so a nobody:nogroup process can connect;
  // SO_PEERCRED then refuses it: only uid 4242 (and root) are allowed.
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // let nobody reach the socket file
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t child = fork();
  if (child == 0) {
    close(p[0]);
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
    auto c = wire::Client::connect(agent_->socket(), "intruder");
    std::string msg = c.ok() ? "CONNECTED" : c.error().message();
    (void)!write(p[1], msg.data(), msg.size());
    _exit(0);
  }
  close(p[1]);
  char buf[1024] = {};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  close(p[0]);
  int status;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::string msg(buf, n > 0 ? static_cast<size_t>(n) : 0);
  EXPECT_EQ(msg.find("CONNECTED"), std::string::npos);
  EXPECT_NE(msg.find("may not use"), std::string::npos) << msg;
  // Root still gets in.
  EXPECT_EQ(call([] {
              v1::Request r;
              r.mutable_get_status();
              return r;
            }())
                .status()
                .protocol_version(),
            1u);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

// stoked itself speaks the notify protocol: READY=1 once it serves, WATCHDOG=1
// pings at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.
TEST(AgentSystemd, StokedSendsReadyWatchdogAndStoppingToNotifySocket) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  if (!test::is_executable(test::stoked_bin())) GTEST_SKIP() << "stoked is not built";
  test::TempDir dir;
  std::string notify_path = dir.file("notify");
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, notify_path.c_str());
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  struct timeval tv = {5, 0};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);  // 0.2 s: pings every 0.1 s
  unsetenv("WATCHDOG_PID");
  auto agent = std::make_unique<AgentProcess>(dir.path());
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(agent->running());

  std::string all;
  auto receive_until = [&](const std::string& needle) {
    char buf[4096];
    while (all.find(needle) == std::string::npos) {
      ssize_t n = recv(sock, buf, sizeof buf, 0);
      if (n <= 0) return false;
      all.append(buf, static_cast<size_t>(n));
      all.push_back('\n');
    }
    return true;
  };
  EXPECT_TRUE(receive_until("READY=1")) << all;
  EXPECT_NE(all.find("STATUS="), std::string::npos) << all;
  all.clear();
  EXPECT_TRUE(receive_until("WATCHDOG=1")) << all;
  all.clear();
  EXPECT_TRUE(receive_until("WATCHDOG=1")) << "a second ping: the watchdog keeps beating " << all;
  int status = agent->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(receive_until("STOPPING=1")) << all;
  close(sock);
}

// Socket activation: the listening socket stoked.socket hands over is
// systemd's too. When the agent stops, that socket must go on accepting
// (connections wait in its backlog for the next agent), so the agent may close
// its copy but never shut the socket down.
TEST(AgentSystemd, AHandedListeningSocketStillAcceptsAfterTheAgentStops) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  if (!test::is_executable(test::stoked_bin())) GTEST_SKIP() << "stoked is not built";
  test::TempDir dir;
  std::string path = dir.file("stoke.sock");
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  std::string config = dir.file("stoked.conf");
  std::ofstream(config) << "state_dir: \"" << dir.path() << "/state\"\nsocket_path: \"" << path << "\"\n";
  std::string log = dir.file("stoked.log");
  std::string bin = test::stoked_bin();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // As systemd does: the socket at fd 3, LISTEN_PID naming the agent.
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(90);
    // dup2 onto itself keeps FD_CLOEXEC: clear it in every case.
    if ((listener != 3 && dup2(listener, 3) < 0) || fcntl(3, F_SETFD, 0) < 0) _exit(90);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d", getpid());
    setenv("LISTEN_PID", pid_text, 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "stoke-api", 1);
    execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
    _exit(91);
  }
  // Ready when it says it listens (a client connecting before that would
  // wait in a backlog nobody may ever serve if the agent failed).
  bool listening = false;
  for (int i = 0; i < 1000 && !listening; ++i) {
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) FAIL() << "stoked exited at start:\n" << test::read_file(log);
    listening = test::read_file(log).find(" listening on ") != std::string::npos;
    if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!listening) kill(pid, SIGKILL);
  ASSERT_TRUE(listening) << test::read_file(log);
  ASSERT_TRUE(wire::Client::connect(path, "test").ok()) << test::read_file(log);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << test::read_file(log);
  EXPECT_TRUE(std::filesystem::exists(path)) << "the agent removed a socket it did not create";

  // The next client's connection waits in the backlog, and systemd's copy
  // (ours here) can still accept it.
  int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  EXPECT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << "connect after the agent stopped: " << std::strerror(errno);
  int accepted = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  EXPECT_GE(accepted, 0) << "accept after the agent stopped: " << std::strerror(errno);
  if (accepted >= 0) close(accepted);
  close(client);
  close(listener);
}

}  // namespace
}  // namespace stoke
