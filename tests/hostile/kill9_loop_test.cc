// Faults, nothing lost: stoked is killed with SIGKILL every few seconds while
// clients create functions and invoke them (cold, warm, zygote, restore
// starts; successes and failures). After each restart: every function whose
// create was acknowledged exists, every activation whose reply a client got is
// recorded with that status, and nothing of the killed agent is left behind
// (no sandbox process, no cgroup). 20 rounds.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

constexpr const char* kCode = R"(import os, time
DATA = [i for i in range(5000)]
def main(args):
    if args.get("fail"):
        return {"error": "asked to fail"}
    if args.get("sleep"):
        time.sleep(args["sleep"])
    return {"n": len(DATA), "pid1": os.getpid() == 1}
)";


class Kill9Loop : public test::AgentTest {
 protected:
  std::string extra_config() override { return "keep_alive_ms: 60000\n"; }

  std::mutex mu_;
  std::set<std::string> acknowledged_functions_;
  std::map<std::string, v1::ActivationStatus> replied_;  // activation id -> status the client saw
};

TEST_F(Kill9Loop, RepeatedKill9UnderMixedLoadLosesNothingAndLeavesNothing) {
  std::string path = dir_.file("main.py");
  std::ofstream(path) << kCode;
  std::mt19937 rng(20261207);
  int created = 0;
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<bool> stop{false};
    // Clients: one creates functions and invokes the newest; two invoke
    // existing ones with forced start kinds and some failures.
    auto client_loop = [&](int which) {
      std::mt19937 r(uint32_t(round * 10 + which));
      while (!stop) {
        try {
          auto c = agent_->connect();
          while (!stop) {
            std::string name;
            if (which == 0) {
              char buf[32];
              std::snprintf(buf, sizeof buf, "f%d-%u", round, unsigned(r() % 1000000));
              name = buf;
              auto resp = c.call(test::create_request(name, v1::PYTHON, path, "main.py", 64 << 20, 5000, 2));
              if (!resp.ok()) break;
              if (resp.value().has_function()) {
                std::lock_guard lock(mu_);
                acknowledged_functions_.insert(name);
              }
            } else {
              std::unique_lock lock(mu_);
              if (acknowledged_functions_.empty()) {
                lock.unlock();
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                continue;
              }
              auto it = acknowledged_functions_.begin();
              std::advance(it, r() % acknowledged_functions_.size());
              name = *it;
            }
            v1::Request inv = test::invoke_request(name, r() % 5 == 0 ? "{\"fail\": true}" : "{}");
            static constexpr v1::StartKind kinds[] = {v1::START_KIND_UNSPECIFIED, v1::COLD, v1::ZYGOTE,
                                                      v1::RESTORE};
            inv.mutable_invoke()->set_start(kinds[r() % 4]);
            auto resp = c.call(inv);
            if (!resp.ok()) break;  // the agent died under us: reconnect after the restart
            if (resp.value().has_activation()) {
              std::lock_guard lock(mu_);
              replied_[resp.value().activation().activation_id()] = resp.value().activation().status();
            }
          }
        } catch (const std::exception&) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    };
    std::vector<std::thread> clients;
    for (int i = 0; i < 3; ++i) clients.emplace_back(client_loop, i);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500 + rng() % 2000));
    pid_t old_pid = agent_->pid();
    agent_->kill9();
    stop = true;
    for (auto& t : clients) t.join();

    // Sandboxes die with the agent (pdeathsig, pid namespaces).
    std::vector<int> left;
    for (int i = 0; i < 200; ++i) {
      left = test::sandbox_processes_of(old_pid);
      if (left.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(left.empty()) << "round " << round << ": " << left.size() << " processes outlived the agent";

    agent_->restart();
    ASSERT_TRUE(agent_->running()) << agent_->log_text();
    // The restarted agent cleaned the killed one's cgroups.
    EXPECT_EQ(test::sandbox_cgroups_of(old_pid), "") << "round " << round;
  }

  // Nothing acknowledged was lost.
  auto c = agent_->connect();
  std::lock_guard lock(mu_);
  for (const auto& name : acknowledged_functions_) {
    v1::Request get;
    get.mutable_get_function()->set_name(name);
    auto r = c.call(get);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r.value().has_function()) << "function " << name << " was acknowledged and is gone";
    ++created;
  }
  for (const auto& [id, status] : replied_) {
    v1::Request get;
    get.mutable_get_activation()->set_activation_id(id);
    auto r = c.call(get);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(r.value().has_activation()) << "activation " << id << " was replied to and is gone";
    EXPECT_EQ(r.value().activation().status(), status) << id;
  }
  std::printf("kill -9 x%d: %d functions and %zu replied activations all found\n", kRounds, created, replied_.size());
  EXPECT_GT(created, kRounds);
  EXPECT_GT(replied_.size(), size_t(kRounds * 3));
  // And it still works.
  auto a = c.call(test::invoke_request(*acknowledged_functions_.begin(), "{}"));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value().activation().status(), v1::SUCCESS);
}

}  // namespace
}  // namespace stoke
