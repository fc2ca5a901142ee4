// Namespaces through a real agent: functions of the same name in two
// namespaces stay apart (definitions, invocations, activations, logs), a key
// acts only in its own namespace and stops working when replaced or when its
// namespace goes, a namespace with functions is not deleted, everything
// survives a restart, and a peer configured as key-only (the gateway's uid)
// gets nothing without a valid key.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class Namespaces : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\ncheckpoints: false\n"; }

  v1::Response as(const std::string& ns, v1::Request r, const std::string& key = "") {
    r.set_namespace_(ns);
    r.set_api_key(key);
    return send(r);
  }
  // A Python function answering with `tag`, in `ns`.
  void create(const std::string& ns, const std::string& name, const std::string& tag) {
    std::string path = dir_.file(ns + "-" + name + ".py");
    std::ofstream(path) << "def main(args):\n    print('log of " << tag << "')\n    return {'tag': '" << tag << "'}\n";
    auto r = as(ns, test::create_request(name, v1::PYTHON, path, "f.py"));
    ASSERT_EQ(r.error().code(), v1::Error::OK) << r.error().message();
    EXPECT_EQ(r.function().name(), name);
    EXPECT_EQ(r.function().namespace_(), ns.empty() ? "guest" : ns);
  }
  std::string make_namespace(const std::string& name) {
    v1::Request r;
    r.mutable_create_namespace()->set_name(name);
    auto resp = send(r);
    EXPECT_EQ(resp.error().code(), v1::Error::OK) << resp.error().message();
    EXPECT_EQ(resp.namespace_().name(), name);
    return resp.namespace_().key();
  }
  static v1::Request list_functions() {
    v1::Request r;
    r.mutable_list_functions();
    return r;
  }
  static v1::Request get_activation(const std::string& id) {
    v1::Request r;
    r.mutable_get_activation()->set_activation_id(id);
    return r;
  }
  static v1::Request get_logs(const std::string& id) {
    v1::Request r;
    r.mutable_get_activation_logs()->set_activation_id(id);
    return r;
  }
  static std::vector<std::string> names(const v1::Response& r) {
    std::vector<std::string> out;
    for (const auto& f : r.function_list().functions()) out.push_back(f.namespace_() + ":" + f.name());
    return out;
  }
};

TEST_F(Namespaces, FunctionsOfTheSameNameInTwoNamespacesStayApartAndEachSeesOnlyItsOwn) {
  make_namespace("alpha");
  make_namespace("beta");
  create("alpha", "hello", "A");
  create("beta", "hello", "B");
  create("", "hello", "G");
  create("alpha", "only-alpha", "A2");

  std::map<std::string, std::string> activation_of;
  for (const char* ns : {"alpha", "beta", ""}) {
    auto r = as(ns, test::invoke_request("hello"));
    ASSERT_TRUE(r.has_activation()) << r.error().message();
    EXPECT_EQ(r.activation().status(), v1::SUCCESS) << r.activation().result_json();
    EXPECT_EQ(r.activation().function(), "hello");
    EXPECT_EQ(r.activation().namespace_(), std::string(*ns ? ns : "guest"));
    activation_of[ns] = r.activation().activation_id();
    const char* tag = std::string(ns) == "alpha" ? "A" : std::string(ns) == "beta" ? "B" : "G";
    EXPECT_EQ(json::parse(r.activation().result_json())["tag"], tag) << ns;
  }
  EXPECT_EQ(names(as("alpha", list_functions())), (std::vector<std::string>{"alpha:hello", "alpha:only-alpha"}));
  EXPECT_EQ(names(as("beta", list_functions())), (std::vector<std::string>{"beta:hello"}));
  EXPECT_EQ(names(as("", list_functions())), (std::vector<std::string>{"guest:hello"}));
  EXPECT_EQ(as("beta", test::invoke_request("only-alpha")).error().code(), v1::Error::NOT_FOUND);

  // Another namespace's activation is as unknown as one that never was.
  const std::string alpha_id = activation_of["alpha"];
  EXPECT_EQ(as("alpha", get_activation(alpha_id)).activation().activation_id(), alpha_id);
  EXPECT_EQ(as("beta", get_activation(alpha_id)).error().code(), v1::Error::NOT_FOUND);
  EXPECT_EQ(as("", get_activation(alpha_id)).error().code(), v1::Error::NOT_FOUND);
  auto logs = as("alpha", get_logs(alpha_id));
  ASSERT_EQ(logs.activation_logs().logs_size(), 1);
  EXPECT_NE(logs.activation_logs().logs(0).find("log of A"), std::string::npos);
  EXPECT_EQ(as("beta", get_logs(alpha_id)).error().code(), v1::Error::NOT_FOUND);
  v1::Request list;
  list.mutable_list_activations();
  auto beta_list = as("beta", list);
  ASSERT_EQ(beta_list.activation_list().activations_size(), 1);
  EXPECT_EQ(beta_list.activation_list().activations(0).activation_id(), activation_of["beta"]);

  // Deleting one namespace's function leaves the others'.
  v1::Request del;
  del.mutable_delete_function()->set_name("hello");
  ASSERT_EQ(as("beta", del).error().code(), v1::Error::OK);
  EXPECT_EQ(as("alpha", test::invoke_request("hello")).activation().status(), v1::SUCCESS);
  EXPECT_EQ(as("", test::invoke_request("hello")).activation().status(), v1::SUCCESS);
}

TEST_F(Namespaces, AKeyActsOnlyInItsNamespaceAndAReplacedKeyStopsWorking) {
  const std::string key = make_namespace("team");
  ASSERT_EQ(key.size(), 36u + 1 + 64) << key;
  create("team", "hello", "T");
  create("", "hello", "G");
  auto mine = as("", test::invoke_request("hello"), key);
  ASSERT_TRUE(mine.has_activation()) << mine.error().message();
  EXPECT_EQ(mine.activation().namespace_(), "team") << "a key acts in its own namespace";
  EXPECT_EQ(json::parse(mine.activation().result_json())["tag"], "T");
  EXPECT_EQ(as("guest", test::invoke_request("hello"), key).error().code(), v1::Error::PERMISSION_DENIED);
  v1::Request manage;
  manage.mutable_create_namespace()->set_name("mine-now");
  EXPECT_EQ(as("", manage, key).error().code(), v1::Error::PERMISSION_DENIED);

  v1::Request rotate;
  rotate.mutable_rotate_namespace_key()->set_name("team");
  auto rotated = send(rotate);
  ASSERT_EQ(rotated.error().code(), v1::Error::OK) << rotated.error().message();
  const std::string new_key = rotated.namespace_().key();
  EXPECT_NE(new_key, key);
  EXPECT_EQ(as("", test::invoke_request("hello"), key).error().code(), v1::Error::UNAUTHENTICATED);
  EXPECT_EQ(as("", test::invoke_request("hello"), new_key).activation().namespace_(), "team");

  // The list shows keys by uuid, never the secret.
  v1::Request l;
  l.mutable_list_namespaces();
  auto all = send(l);
  ASSERT_EQ(all.namespace_list().namespaces_size(), 2);
  EXPECT_EQ(all.namespace_list().namespaces(0).name(), "guest");
  EXPECT_EQ(all.namespace_list().namespaces(1).name(), "team");
  EXPECT_EQ(all.namespace_list().namespaces(1).key_uuid(), new_key.substr(0, 36));
  for (const auto& n : all.namespace_list().namespaces()) EXPECT_EQ(n.key(), "");

  // Namespaces and keys are in the registry: a restarted agent knows them.
  agent_->restart();
  EXPECT_EQ(as("", test::invoke_request("hello"), new_key).activation().namespace_(), "team");
  EXPECT_EQ(as("", test::invoke_request("hello"), key).error().code(), v1::Error::UNAUTHENTICATED);
  std::ifstream db(dir_.path() + "/state/registry.db", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(db)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes.find(new_key.substr(37)), std::string::npos) << "the secret itself is never stored";
}

TEST_F(Namespaces, ANamespaceGoesOnlyWithoutFunctionsAndTakesItsKeyAlong) {
  const std::string key = make_namespace("short-lived");
  create("short-lived", "f", "S");
  v1::Request del;
  del.mutable_delete_namespace()->set_name("short-lived");
  auto refused = send(del);
  EXPECT_EQ(refused.error().code(), v1::Error::FAILED_PRECONDITION) << refused.error().message();
  v1::Request del_fn;
  del_fn.mutable_delete_function()->set_name("f");
  ASSERT_EQ(as("short-lived", del_fn).error().code(), v1::Error::OK);
  ASSERT_EQ(send(del).error().code(), v1::Error::OK);
  EXPECT_EQ(as("", test::invoke_request("f"), key).error().code(), v1::Error::UNAUTHENTICATED);
  EXPECT_EQ(as("short-lived", list_functions()).error().code(), v1::Error::NOT_FOUND);
  v1::Request guest;
  guest.mutable_delete_namespace()->set_name("guest");
  EXPECT_EQ(send(guest).error().code(), v1::Error::FAILED_PRECONDITION);
  EXPECT_EQ(as("../etc", list_functions()).error().code(), v1::Error::INVALID_ARGUMENT);
  EXPECT_EQ(as("", test::invoke_request("other/f")).error().code(), v1::Error::INVALID_ARGUMENT)
      << "no reaching into a namespace through a name";
}

// nobody (65534) is admitted only as a key-only client, like the gateway's uid.
class KeyOnlyPeer : public Namespaces {
  std::string extra_config() override {
    return Namespaces::extra_config() + "socket_group: \"nogroup\"\nallowed_uids: 4242\nkey_required_uids: 65534\n";
  }
};

TEST_F(KeyOnlyPeer, TheGatewaysUidGetsNothingWithoutAValidKeyAndItsNamespaceWithOne) {
  const std::string key = make_namespace("web");
  create("web", "hello", "W");
  create("", "hello", "G");
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // let nobody reach the socket file
  // As nobody: three calls, each answer's error code (or the result's tag).
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t child = fork();
  if (child == 0) {
    close(p[0]);
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
    auto c = wire::Client::connect(agent_->socket(), "gateway");
    if (!c.ok()) _exit(11);
    std::string out;
    for (const std::string& k : {std::string(), std::string(key.substr(0, 37)) + std::string(64, 'x'), key}) {
      v1::Request r = test::invoke_request("hello");
      r.set_api_key(k);
      auto resp = c->call(r);
      if (!resp.ok()) _exit(12);
      out += resp->has_activation() ? json::parse(resp->activation().result_json())["tag"].get<std::string>()
                                    : v1::Error::Code_Name(resp->error().code());
      out += " ";
    }
    (void)!write(p[1], out.data(), out.size());
    _exit(0);
  }
  close(p[1]);
  char buf[512] = {};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  close(p[0]);
  int status;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child exit " << WEXITSTATUS(status);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "UNAUTHENTICATED UNAUTHENTICATED W ");
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

// Zygotes and checkpoint images are kept per qualified name: a namespaced
// function gets both, apart from the default namespace's function of the
// same name.
class NamespacedStarts : public Namespaces {
  std::string extra_config() override { return "pools { python: 0 node: 0 }\n"; }
};

TEST_F(NamespacedStarts, ANamespacedFunctionStartsFromItsOwnZygoteAndItsOwnImage) {
  make_namespace("team");
  create("team", "hello", "T");
  create("", "hello", "G");
  for (const char* ns : {"team", ""}) {
    auto first = as(ns, test::invoke_request("hello"));
    ASSERT_EQ(first.activation().status(), v1::SUCCESS) << first.activation().result_json();
  }
  for (v1::StartKind kind : {v1::ZYGOTE, v1::RESTORE}) {
    for (const char* ns : {"team", ""}) {
      v1::Request r = test::invoke_request("hello");
      r.mutable_invoke()->set_start(kind);
      auto a = as(ns, r);
      ASSERT_TRUE(a.has_activation()) << a.error().message();
      EXPECT_EQ(a.activation().status(), v1::SUCCESS) << a.activation().result_json();
      EXPECT_EQ(a.activation().start_kind(), kind) << ns << " " << v1::StartKind_Name(kind) << "\n" << agent_->log_text();
      EXPECT_EQ(json::parse(a.activation().result_json())["tag"], *ns ? "T" : "G");
    }
  }
}

}  // namespace
}  // namespace stoke
