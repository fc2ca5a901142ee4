// A checkpoint image is the process of one function version: its code, entry
// and environment (secrets). A function deleted and created again under the
// same name (names are global; versions start at 1 again) must never be
// served the old one's image: not after a clean delete, not when the agent
// was killed right after the delete, not when the delete happened while
// checkpoints were off. Each new function's result proves whose code and env
// ran.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

constexpr const char* kTenant = R"(
import os
OWNER = os.environ.get("OWNER")
def main(args):
    return {"code": "%s", "owner_at_import": OWNER, "owner_now": os.environ.get("OWNER")}
)";

class StaleImage : public test::AgentTest {
 protected:
  // No prewarm, no zygotes: an invocation without an idle instance restores
  // the function's image when the agent has one.
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }

  void create(const std::string& name, const std::string& code_tag, const std::string& owner) {
    std::string path = dir_.file(name + "-" + code_tag + "-" + std::to_string(++files_) + ".py");
    char source[512];
    std::snprintf(source, sizeof source, kTenant, code_tag.c_str());
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, v1::PYTHON, path, "f.py");
    (*r.mutable_create_function()->mutable_config()->mutable_env())["OWNER"] = owner;
    r.mutable_create_function()->set_checkpoint(true);
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  void remove(const std::string& name) {
    v1::Request r;
    r.mutable_delete_function()->set_name(name);
    auto c = send(r);
    ASSERT_TRUE(c.has_deleted()) << c.error().message();
  }
  // Restores (waiting for the build if there is none yet) and returns what ran.
  json restored(const std::string& name) {
    auto a = invoke_with(name, "{}", v1::RESTORE);
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json() << agent_->log_text();
    EXPECT_EQ(a.start_kind(), v1::RESTORE) << a.result_json();
    return a.status() == v1::SUCCESS ? json::parse(a.result_json()) : json::object();
  }
  void expect_ran(const json& r, const std::string& code_tag, const std::string& owner) {
    EXPECT_EQ(r.value("code", ""), code_tag) << r.dump();
    EXPECT_EQ(r.value("owner_at_import", ""), owner) << r.dump() << "\n" << agent_->log_text();
    EXPECT_EQ(r.value("owner_now", ""), owner) << r.dump();
  }
  void rewrite_config(const std::string& extra) {
    std::ofstream(dir_.file("stoked.conf"))
        << "state_dir: \"" << dir_.path() << "/state\"\nsocket_path: \"" << agent_->socket()
        << "\"\nlog_level: \"debug\"\n"
        << extra_config() << extra;
  }
  int files_ = 0;
};

TEST_F(StaleImage, RecreatedFunctionNeverRestoresTheDeletedOnesImage) {
  create("f", "old", "alice");
  expect_ran(restored("f"), "old", "alice");
  remove("f");
  create("f", "new", "bob");
  expect_ran(restored("f"), "new", "bob");
}

// kill -9 right after the delete: whatever the dying agent did or did not
// drop, the next one must not hand the old image to the new function.
TEST_F(StaleImage, AgentKilledRightAfterTheDeleteDoesNotServeTheOldImage) {
  create("f", "old", "alice");
  expect_ran(restored("f"), "old", "alice");
  remove("f");
  agent_->kill9();
  agent_->restart();
  create("f", "new", "bob");
  expect_ran(restored("f"), "new", "bob");
}

// The deterministic form of a drop that never ran: deleted and created again
// while checkpoints were off (so no image store was open to drop from), then
// restored once they are back on.
TEST_F(StaleImage, DeleteWhileCheckpointsWereOffDoesNotLeaveTheImageToTheNextOwner) {
  create("f", "old", "alice");
  expect_ran(restored("f"), "old", "alice");
  rewrite_config("checkpoints: false\n");
  agent_->restart();
  remove("f");
  create("f", "new", "bob");
  rewrite_config("");
  agent_->restart();
  expect_ran(restored("f"), "new", "bob");
  // The old image file is gone from the store, not merely unused.
  auto log = agent_->log_text();
  EXPECT_NE(log.find("dropped 1 checkpoint image(s) of deleted or changed functions"), std::string::npos) << log;
}

// Same code, other env (an update, or a new tenant who reuses public code):
// the image holds the environment it was made with, so it is not reused.
TEST_F(StaleImage, SameCodeWithAnotherEnvironmentGetsItsOwnImage) {
  create("f", "same", "alice");
  expect_ran(restored("f"), "same", "alice");
  rewrite_config("checkpoints: false\n");
  agent_->restart();
  remove("f");
  create("f", "same", "bob");
  rewrite_config("");
  agent_->restart();
  expect_ran(restored("f"), "same", "bob");
}

}  // namespace
}  // namespace stoke
