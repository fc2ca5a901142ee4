// Host uids of functions (security finding #13): allocated per function, not
// derived from the name, kept across agent restarts, and never handed to a
// new function after a delete. Seen from inside each sandbox in its own
// /proc/self/uid_map ("0 <host uid> 1").
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class HostUidAllocation : public test::AgentTest {
 protected:
  std::string extra_config() override {
    return "zygotes { enabled: false }\npools { python: 0 node: 0 }\ncheckpoints: false\n";
  }
  void create(const std::string& name) {
    std::string path = dir_.file(name + "-" + std::to_string(++files_) + ".py");
    std::ofstream(path) << "def main(args):\n    return {'map': open('/proc/self/uid_map').read().split()}\n";
    auto c = send(test::create_request(name, v1::PYTHON, path, "main.py"));
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  // The host uid the function's sandbox root is mapped to.
  long host_uid(const std::string& name) {
    auto a = invoke_with(name);
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    if (a.status() != v1::SUCCESS) return -1;
    json map = json::parse(a.result_json())["map"];
    EXPECT_EQ(map.size(), 3u) << map.dump();
    EXPECT_EQ(map[0], "0");
    return std::stol(map[1].get<std::string>());
  }
  void remove(const std::string& name) {
    v1::Request del;
    del.mutable_delete_function()->set_name(name);
    auto r = send(del);
    ASSERT_FALSE(r.has_error() && r.error().code() != v1::Error::OK) << r.error().message();
  }
  int files_ = 0;
};

// "twin84" and "twin491" land on the same id under the old scheme
// (splitmix(std::hash(name)) mod the functions' range): a name a tenant can
// search for offline.
TEST_F(HostUidAllocation, NamesThatCollideUnderANameHashGetDifferentUids) {
  create("twin84");
  create("twin491");
  long a = host_uid("twin84"), b = host_uid("twin491");
  EXPECT_GT(a, 0);
  EXPECT_GT(b, 0);
  EXPECT_NE(a, b);
}

TEST_F(HostUidAllocation, AUidSurvivesARestartAndIsNeverGivenToTheNextOwnerOfTheName) {
  create("keeper");
  create("neighbour");
  long first = host_uid("keeper");
  long neighbour = host_uid("neighbour");
  ASSERT_GT(first, 0);
  agent_->restart();
  EXPECT_EQ(host_uid("keeper"), first) << "the id changed across a restart";
  remove("keeper");
  create("keeper");
  long second = host_uid("keeper");
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first) << "a deleted function's id went to the next function of that name";
  EXPECT_NE(second, neighbour);
  create("newcomer");
  long newcomer = host_uid("newcomer");
  for (long taken : {first, second, neighbour}) EXPECT_NE(newcomer, taken);
}

}  // namespace
}  // namespace stoke
