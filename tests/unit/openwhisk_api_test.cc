// The OpenWhisk REST translation with a fake agent: what each route asks the
// agent (key and namespace forwarded, names as given), and the HTTP status
// and JSON shape of each answer, errors included.
#include "api/gateway/openwhisk_api.h"

#include <deque>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace stoke::gateway {
namespace {

using json = nlohmann::json;

struct FakeAgent {
  std::vector<v1::Request> seen;
  std::deque<Result<v1::Response>> answers;
  AgentCall call() {
    return [this](v1::Request r) -> Result<v1::Response> {
      seen.push_back(r);
      if (answers.empty()) return plain_error("call", "no answer scripted");
      auto a = std::move(answers.front());
      answers.pop_front();
      return a;
    };
  }
};

v1::Response agent_error(v1::Error::Code code, const std::string& message) {
  v1::Response r;
  r.mutable_error()->set_code(code);
  r.mutable_error()->set_message(message);
  return r;
}

v1::Response function(const std::string& name, uint32_t version) {
  v1::Response r;
  auto* f = r.mutable_function();
  f->set_name(name);
  f->set_namespace_("team");
  f->set_version(version);
  f->set_runtime(v1::PYTHON);
  f->set_memory_bytes(256 << 20);
  f->set_timeout_ms(60000);
  return r;
}

HttpRequest req(const std::string& method, const std::string& path, const std::string& body = "",
                std::map<std::string, std::string> query = {}) {
  return HttpRequest{method, path, std::move(query), body, "uuid:secret"};
}

TEST(OpenWhiskApi, NoCredentialsIs401WithoutAskingTheAgent) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  HttpRequest r = req("GET", "/api/v1/namespaces/_/actions");
  r.api_key.clear();
  HttpResponse resp = api.handle(r);
  EXPECT_EQ(resp.status, 401);
  json body = json::parse(resp.body);
  EXPECT_TRUE(body["error"].is_string());
  EXPECT_TRUE(body["code"].is_string());
  EXPECT_TRUE(agent.seen.empty());
}

TEST(OpenWhiskApi, PutCreatesAndWithOverwriteUpdatesAnExistingAction) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  const std::string doc = R"({"exec": {"kind": "python:3.11", "code": "def main(a):\n    return a\n", "main": "main"},
                              "limits": {"timeout": 5000, "memory": 128, "concurrency": 2}})";
  agent.answers.push_back(function("f", 1));
  HttpResponse created = api.handle(req("PUT", "/api/v1/namespaces/_/actions/f", doc));
  EXPECT_EQ(created.status, 200) << created.body;
  ASSERT_EQ(agent.seen.size(), 1u);
  const v1::Request& c = agent.seen[0];
  EXPECT_EQ(c.api_key(), "uuid:secret");
  EXPECT_EQ(c.namespace_(), "") << "'_' is the key's own";
  EXPECT_EQ(c.create_function().name(), "f");
  EXPECT_EQ(c.create_function().config().runtime(), v1::PYTHON);
  EXPECT_EQ(c.create_function().config().code_format(), v1::SINGLE_FILE);
  EXPECT_EQ(c.create_function().config().timeout_ms(), 5000u);
  EXPECT_EQ(c.create_function().config().memory_bytes(), 128u << 20);
  EXPECT_EQ(c.create_function().config().concurrency(), 2u);
  EXPECT_EQ(json::parse(created.body)["version"], "0.0.1");

  agent.answers.push_back(agent_error(v1::Error::ALREADY_EXISTS, "exists"));
  EXPECT_EQ(api.handle(req("PUT", "/api/v1/namespaces/_/actions/f", doc)).status, 409);
  agent.answers.push_back(agent_error(v1::Error::ALREADY_EXISTS, "exists"));
  agent.answers.push_back(function("f", 2));
  HttpResponse updated = api.handle(req("PUT", "/api/v1/namespaces/team/actions/f", doc, {{"overwrite", "true"}}));
  EXPECT_EQ(updated.status, 200);
  EXPECT_EQ(agent.seen.back().update_function().name(), "f");
  EXPECT_EQ(agent.seen.back().namespace_(), "team");
  EXPECT_EQ(json::parse(updated.body)["version"], "0.0.2");
}

TEST(OpenWhiskApi, AZipIsRecognisedWithOrWithoutTheBinaryFlag) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  // "PK\x03\x04rest" in base64.
  for (const char* binary : {"true", "false"}) {
    agent.answers.push_back(function("z", 1));
    std::string doc = std::string(R"({"exec": {"kind": "python:3", "code": "UEsDBHJlc3Q=", "binary": )") + binary + "}}";
    ASSERT_EQ(api.handle(req("PUT", "/api/v1/namespaces/_/actions/z", doc)).status, 200);
    EXPECT_EQ(agent.seen.back().create_function().config().code_format(), v1::ZIP) << binary;
    EXPECT_EQ(agent.seen.back().create_function().config().code(), std::string("PK\x03\x04rest", 8));
  }
}

TEST(OpenWhiskApi, InvokeAnswers202WithAnIdOr200And502WithTheResult) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  v1::Response accepted;
  accepted.mutable_invoke_accepted()->set_activation_id("abc");
  agent.answers.push_back(accepted);
  HttpResponse async = api.handle(req("POST", "/api/v1/namespaces/_/actions/f", R"({"x": 1})"));
  EXPECT_EQ(async.status, 202);
  EXPECT_EQ(json::parse(async.body)["activationId"], "abc");
  EXPECT_TRUE(agent.seen.back().invoke().async());
  EXPECT_EQ(agent.seen.back().invoke().params_json(), R"({"x":1})");

  v1::Response failed;
  failed.mutable_activation()->set_status(v1::APPLICATION_ERROR);
  failed.mutable_activation()->set_result_json(R"({"error": "nope"})");
  agent.answers.push_back(failed);
  HttpResponse r = api.handle(req("POST", "/api/v1/namespaces/_/actions/f", "{}", {{"blocking", "true"}, {"result", "true"}}));
  EXPECT_EQ(r.status, 502);
  EXPECT_EQ(json::parse(r.body), json({{"error", "nope"}}));
  EXPECT_FALSE(agent.seen.back().invoke().async());

  v1::Response ok;
  ok.mutable_activation()->set_status(v1::SUCCESS);
  ok.mutable_activation()->set_result_json(R"({"y": 2})");
  ok.mutable_activation()->set_start_kind(v1::COLD);
  ok.mutable_activation()->set_init_ms(12);
  agent.answers.push_back(ok);
  HttpResponse full = api.handle(req("POST", "/api/v1/namespaces/_/actions/f", "{}", {{"blocking", "true"}}));
  EXPECT_EQ(full.status, 200);
  json a = json::parse(full.body);
  EXPECT_EQ(a["response"]["result"], json({{"y", 2}}));
  EXPECT_EQ(a["response"]["status"], "success");
  bool init_time = false;
  for (const auto& ann : a["annotations"]) init_time |= ann["key"] == "initTime";
  EXPECT_TRUE(init_time) << "a cold start says how long its init took";

  EXPECT_EQ(api.handle(req("POST", "/api/v1/namespaces/_/actions/f", "[1, 2]")).status, 400);
}

// A hostile body nested deeper than the agent's JSON limit is refused before
// any value is built (copying or dumping it would recurse off the stack).
TEST(OpenWhiskApi, ADeeplyNestedBodyIs400AndNeverReachesTheAgent) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  const std::string deep = "{\"a\": " + std::string(1 << 20, '[') + std::string(1 << 20, ']') + "}";
  EXPECT_EQ(api.handle(req("POST", "/api/v1/namespaces/_/actions/f", deep)).status, 400);
  EXPECT_EQ(api.handle(req("PUT", "/api/v1/namespaces/_/actions/f", deep)).status, 400);
  EXPECT_TRUE(agent.seen.empty());
}

TEST(OpenWhiskApi, AnActivationStillRunningIsNotFoundYetAsInOpenWhisk) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  v1::Response running;
  running.mutable_activation()->set_activation_id("abc");  // no status: in flight
  agent.answers.push_back(running);
  EXPECT_EQ(api.handle(req("GET", "/api/v1/namespaces/_/activations/abc")).status, 404);
  agent.answers.push_back(running);
  EXPECT_EQ(api.handle(req("GET", "/api/v1/namespaces/_/activations/abc/result")).status, 404);
  v1::Response done = running;
  done.mutable_activation()->set_status(v1::SUCCESS);
  done.mutable_activation()->set_result_json("{}");
  agent.answers.push_back(done);
  EXPECT_EQ(api.handle(req("GET", "/api/v1/namespaces/_/activations/abc")).status, 200);
}

TEST(OpenWhiskApi, AgentErrorsMapToOpenWhiskStatusesAndADownAgentIs503) {
  FakeAgent agent;
  OpenWhiskApi api(agent.call());
  const std::pair<v1::Error::Code, int> cases[] = {
      {v1::Error::UNAUTHENTICATED, 401}, {v1::Error::PERMISSION_DENIED, 403}, {v1::Error::NOT_FOUND, 404},
      {v1::Error::INVALID_ARGUMENT, 400}, {v1::Error::RESOURCE_EXHAUSTED, 429}, {v1::Error::INTERNAL, 500}};
  for (auto [code, status] : cases) {
    agent.answers.push_back(agent_error(code, "why"));
    HttpResponse r = api.handle(req("GET", "/api/v1/namespaces/_/actions/f"));
    EXPECT_EQ(r.status, status) << v1::Error::Code_Name(code);
    EXPECT_EQ(json::parse(r.body)["error"], "why");
  }
  HttpResponse down = api.handle(req("GET", "/api/v1/namespaces/_/actions/f"));  // nothing scripted: broken
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(api.handle(req("GET", "/api/v1/namespaces/_/rules")).status, 404);
  EXPECT_EQ(api.handle(req("GET", "/elsewhere")).status, 404);
  EXPECT_EQ(api.handle(req("PATCH", "/api/v1/namespaces/_/actions/f")).status, 405);
}

}  // namespace
}  // namespace stoke::gateway
