// Namespaces at the API's edge: which namespace a request acts in (keys,
// operators, peers that must show a key), its names qualified and shown back
// unqualified; and the keys themselves (format, hashing, a changed key).
#include "agent/namespace_scope.h"

#include <set>

#include <gtest/gtest.h>

#include "agent/names.h"

namespace stoke::agent {
namespace {

constexpr uid_t kGateway = 990;

struct Fixture {
  AccessPolicy access;
  NamespaceKeys keys;
  NamespaceKey team_key;
  Fixture() {
    access.key_required_uids.insert(kGateway);
    team_key = new_namespace_key().value();
    keys.set("team", {team_key.uuid, key_secret_sha256(team_key.secret)});
  }
  RequestScope scope(uid_t uid, const v1::Request& r, ScopeError& e) const {
    return resolve_scope(access, Peer{1, uid, uid}, r, keys, e);
  }
};

v1::Request invoke(const std::string& fn) {
  v1::Request r;
  r.mutable_invoke()->set_function(fn);
  return r;
}

TEST(NamespaceKeys, KeysAreUuidColonSixtyFourLettersAndEachIsNew) {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    auto key = new_namespace_key();
    ASSERT_TRUE(key.ok());
    EXPECT_EQ(key->uuid.size(), 36u);
    EXPECT_EQ(key->uuid[14], '4') << "a version-4 uuid";
    EXPECT_EQ(key->secret.size(), 64u);
    auto parsed = parse_namespace_key(key->text());
    ASSERT_TRUE(parsed.has_value()) << key->text();
    EXPECT_EQ(parsed->secret, key->secret);
    EXPECT_TRUE(seen.insert(key->text()).second);
  }
  for (const char* bad : {"", "x:y", "23bc46b1-71f6-4ed5-8c54-816aa4f8c502",
                          "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:short",
                          "23BC46B1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP",
                          "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIw!"})
    EXPECT_FALSE(parse_namespace_key(bad).has_value()) << bad;
  // OpenWhisk's well-known guest key has exactly this shape.
  EXPECT_TRUE(parse_namespace_key("23bc46b1-71f6-4ed5-8c54-816aa4f8c502:"
                                  "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP")
                  .has_value());
}

TEST(NamespaceKeys, OnlyTheCurrentKeyOfANamespaceAuthenticates) {
  NamespaceKeys keys;
  auto a = new_namespace_key().value();
  keys.set("a", {a.uuid, key_secret_sha256(a.secret)});
  EXPECT_EQ(keys.authenticate(a.text()), "a");
  NamespaceKey wrong = a;
  wrong.secret[10] = wrong.secret[10] == 'x' ? 'y' : 'x';
  EXPECT_FALSE(keys.authenticate(wrong.text()).has_value()) << "the uuid alone is not enough";
  auto b = new_namespace_key().value();
  keys.set("a", {b.uuid, key_secret_sha256(b.secret)});
  EXPECT_FALSE(keys.authenticate(a.text()).has_value()) << "a replaced key stops working";
  EXPECT_EQ(keys.authenticate(b.text()), "a");
  keys.erase("a");
  EXPECT_FALSE(keys.authenticate(b.text()).has_value());
  EXPECT_TRUE(equal_in_constant_time("abc", "abc"));
  EXPECT_FALSE(equal_in_constant_time("abc", "abd"));
  EXPECT_FALSE(equal_in_constant_time("abc", "ab"));
}

TEST(NamespaceScope, AKeyActsInItsOwnNamespaceOnly) {
  Fixture f;
  v1::Request r = invoke("hello");
  r.set_api_key(f.team_key.text());
  ScopeError e;
  auto s = f.scope(kGateway, r, e);
  EXPECT_EQ(e.code, v1::Error::OK) << e.message;
  EXPECT_EQ(s.ns, "team");
  EXPECT_FALSE(s.operator_);
  for (const char* same : {"", "_", "team"}) {
    r.set_namespace_(same);
    ScopeError ok;
    EXPECT_EQ(f.scope(kGateway, r, ok).ns, "team") << same;
    EXPECT_EQ(ok.code, v1::Error::OK);
  }
  r.set_namespace_("other");
  f.scope(kGateway, r, e);
  EXPECT_EQ(e.code, v1::Error::PERMISSION_DENIED);
}

TEST(NamespaceScope, TheGatewaysUidGetsNothingWithoutAValidKey) {
  Fixture f;
  v1::Request r = invoke("hello");
  ScopeError e;
  f.scope(kGateway, r, e);
  EXPECT_EQ(e.code, v1::Error::UNAUTHENTICATED) << "no key: not an operator either";
  r.set_namespace_("team");
  ScopeError e2;
  f.scope(kGateway, r, e2);
  EXPECT_EQ(e2.code, v1::Error::UNAUTHENTICATED) << "naming a namespace is no key";
  r.set_api_key(f.team_key.uuid + ":" + std::string(64, 'A'));
  ScopeError e3;
  f.scope(kGateway, r, e3);
  EXPECT_EQ(e3.code, v1::Error::UNAUTHENTICATED);
  EXPECT_EQ(e3.message, "the namespace key is not valid") << "nothing about why";
}

TEST(NamespaceScope, OperatorsActInTheDefaultOrANamedExistingNamespaceAndAloneManageThem) {
  Fixture f;
  v1::Request r = invoke("hello");
  ScopeError e;
  auto s = f.scope(0, r, e);
  EXPECT_EQ(e.code, v1::Error::OK);
  EXPECT_EQ(s.ns, "guest");
  EXPECT_TRUE(s.operator_);
  r.set_namespace_("team");
  EXPECT_EQ(f.scope(1000, r, e).ns, "team");
  r.set_namespace_("nobody");
  ScopeError missing;
  f.scope(0, r, missing);
  EXPECT_EQ(missing.code, v1::Error::NOT_FOUND);
  r.set_namespace_("../x");
  ScopeError bad;
  f.scope(0, r, bad);
  EXPECT_EQ(bad.code, v1::Error::INVALID_ARGUMENT);

  v1::Request manage;
  manage.mutable_create_namespace()->set_name("new");
  ScopeError ok;
  EXPECT_TRUE(f.scope(0, manage, ok).operator_);
  EXPECT_EQ(ok.code, v1::Error::OK);
  manage.set_api_key(f.team_key.text());
  ScopeError denied;
  f.scope(0, manage, denied);
  EXPECT_EQ(denied.code, v1::Error::PERMISSION_DENIED) << "not with a key, even from root";
  v1::Request list;
  list.mutable_list_namespaces();
  list.set_api_key(f.team_key.text());
  ScopeError listed;
  EXPECT_EQ(f.scope(kGateway, list, listed).ns, "team") << "a key may list its own";
  EXPECT_EQ(listed.code, v1::Error::OK);
  v1::Request status;
  status.mutable_get_status();
  status.set_api_key(f.team_key.text());
  ScopeError node_wide;
  f.scope(kGateway, status, node_wide);
  EXPECT_EQ(node_wide.code, v1::Error::PERMISSION_DENIED) << "the status names other namespaces' functions";
}

TEST(NamespaceScope, NamesAreQualifiedOnTheWayInAndShownPlainOnTheWayOut) {
  ScopeError e;
  v1::Request r = invoke("hello");
  ASSERT_TRUE(qualify_request(r, "team", e));
  EXPECT_EQ(r.invoke().function(), "team/hello");
  v1::Request g = invoke("hello");
  ASSERT_TRUE(qualify_request(g, "guest", e));
  EXPECT_EQ(g.invoke().function(), "hello") << "the default namespace's names stay as they were";
  v1::Request sneaky = invoke("other/hello");
  EXPECT_FALSE(qualify_request(sneaky, "team", e)) << "a '/' would reach into another namespace";
  EXPECT_EQ(e.code, v1::Error::INVALID_ARGUMENT);
  v1::Request all;
  all.mutable_list_activations();
  ASSERT_TRUE(qualify_request(all, "team", e));
  EXPECT_EQ(all.list_activations().function(), "") << "all of the namespace's: scoped by the registry";

  v1::Response resp;
  resp.mutable_activation()->set_function("team/hello");
  present_response(resp);
  EXPECT_EQ(resp.activation().function(), "hello");
  EXPECT_EQ(resp.activation().namespace_(), "team");
  v1::Response list;
  list.mutable_function_list()->add_functions()->set_name("plain");
  present_response(list);
  EXPECT_EQ(list.function_list().functions(0).name(), "plain");
  EXPECT_EQ(list.function_list().functions(0).namespace_(), "guest");
  EXPECT_TRUE(in_namespace("team/hello", "team"));
  EXPECT_FALSE(in_namespace("team/hello", "guest"));
  EXPECT_FALSE(in_namespace("teamx/hello", "team"));
  EXPECT_TRUE(in_namespace("hello", "guest"));
}

}  // namespace
}  // namespace stoke::agent
