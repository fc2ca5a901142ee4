// The agent's settings come from its config, and only from it: every config
// field changes the settings the agent runs with (none is parsed and then
// ignored), config.proto is the one source of defaults, and the packaged
// stoked.conf says what the defaults are.
#include "agent/settings.h"

#include <gtest/gtest.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace stoke::agent {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr uint64_t kRam = 16ULL << 30;

// Every leaf field of the config, as a path of descriptors from the root.
void leaf_fields(const google::protobuf::Descriptor* d, std::vector<const FieldDescriptor*> prefix,
                 std::vector<std::vector<const FieldDescriptor*>>& out) {
  for (int i = 0; i < d->field_count(); ++i) {
    auto path = prefix;
    path.push_back(d->field(i));
    if (d->field(i)->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) leaf_fields(d->field(i)->message_type(), path, out);
    else out.push_back(path);
  }
}

std::string dotted(const std::vector<const FieldDescriptor*>& path) {
  std::string s;
  for (auto* f : path) s += (s.empty() ? "" : ".") + f->name();
  return s;
}

// Values a few fields need to stay valid (a path, a group name, a budget of
// at least one function); the rest: a flipped bool, a number one above its
// default, one more element in a list.
const std::map<std::string, std::string> kStringValues = {
    {"state_dir", "/srv/stoke"},        {"socket_path", "/run/stoke-test/api.sock"},
    {"socket_group", "stoke"},          {"runtimes_dir", "/opt/stoke/runtimes"},
    {"cgroup_root", "/sys/fs/cgroup/stoke"}, {"log_level", "debug"},
    {"zygotes.preload", "os"},
};
const std::map<std::string, uint64_t> kNumberValues = {{"node_memory_budget_bytes", 1ULL << 30}};

// The default config with the field at `path` changed; "" or an error text.
std::string change(AgentConfig& config, const std::vector<const FieldDescriptor*>& path) {
  Message* m = &config;
  for (size_t i = 0; i + 1 < path.size(); ++i) m = m->GetReflection()->MutableMessage(m, path[i]);
  const FieldDescriptor* f = path.back();
  const Reflection* r = m->GetReflection();
  const std::string name = dotted(path);
  auto number = [&](uint64_t def) { return kNumberValues.count(name) ? kNumberValues.at(name) : def + 1; };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      if (f->is_repeated()) return "a repeated bool";
      r->SetBool(m, f, !f->default_value_bool());
      return "";
    case FieldDescriptor::CPPTYPE_UINT32:
      if (f->is_repeated()) r->AddUInt32(m, f, 1000);
      else r->SetUInt32(m, f, static_cast<uint32_t>(number(f->default_value_uint32())));
      return "";
    case FieldDescriptor::CPPTYPE_UINT64:
      if (f->is_repeated()) r->AddUInt64(m, f, 1000);
      else r->SetUInt64(m, f, number(f->default_value_uint64()));
      return "";
    case FieldDescriptor::CPPTYPE_STRING:
      if (!kStringValues.count(name)) return "no test value for string field " + name + ": add one to kStringValues";
      if (f->is_repeated()) r->AddString(m, f, kStringValues.at(name));
      else r->SetString(m, f, kStringValues.at(name));
      return "";
    default:
      return "field " + name + " has a type this test does not change yet: teach it";
  }
}

bool listed(const auto& list, const std::string& name) {
  return std::find_if(std::begin(list), std::end(list), [&](const char* n) { return name == n; }) != std::end(list);
}

TEST(Settings, EveryConfigFieldChangesTheSettingsTheAgentRunsWith) {
  const AgentSettings defaults = settings_from_config(default_config(), kRam);
  std::vector<std::vector<const FieldDescriptor*>> fields;
  leaf_fields(AgentConfig::descriptor(), {}, fields);
  ASSERT_GT(fields.size(), 40u);
  for (const auto& path : fields) {
    const std::string name = dotted(path);
    AgentConfig config = default_config();
    std::string why = change(config, path);
    ASSERT_EQ(why, "");
    Status valid = validate_config(config);
    if (listed(kConfigFieldsFixedToTheirDefault, name)) {
      EXPECT_FALSE(valid.ok()) << name << " may only take its default, yet another value was accepted";
      continue;
    }
    ASSERT_TRUE(valid.ok()) << name << ": " << valid.error().message();
    const bool changed = !(settings_from_config(config, kRam) == defaults);
    if (listed(kConfigFieldsAppliedByMain, name)) {
      EXPECT_FALSE(changed) << name << " is said to be applied by main, yet it is in the settings: drop it from the list";
    } else {
      EXPECT_TRUE(changed) << "config field " << name
                           << " is parsed but changes nothing the agent runs with: use it (agent/settings.cc), "
                              "or say why not in kConfigFieldsAppliedByMain";
    }
  }
}

TEST(Settings, TheMemoryBudgetIsThreeQuartersOfRamUnlessSet) {
  EXPECT_EQ(settings_from_config(default_config(), kRam).memory_budget_bytes, kRam / 4 * 3);
  AgentConfig c = default_config();
  c.set_node_memory_budget_bytes(1ULL << 30);
  EXPECT_EQ(settings_from_config(c, kRam).memory_budget_bytes, 1ULL << 30);
}

TEST(Settings, ZygotesPreloadTheDocumentedModulesUnlessTold) {
  auto preload = settings_from_config(default_config(), kRam).zygote_preload;
  EXPECT_EQ(preload, (std::vector<std::string>{"json", "re", "decimal", "email.parser", "http.client"}));
  AgentConfig c = default_config();
  c.mutable_zygotes()->add_preload("os");
  EXPECT_EQ(settings_from_config(c, kRam).zygote_preload, std::vector<std::string>{"os"});
}

// The packaged file spells out every default: an operator reading it reads
// what the agent does without it.
TEST(Settings, ThePackagedConfigSaysWhatTheDefaultsAre) {
  std::ifstream in(std::string(STOKE_SOURCE_DIR) + "/packaging/stoked.conf");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  auto packaged = parse_config(text.str(), "packaging/stoked.conf");
  ASSERT_TRUE(packaged.ok()) << packaged.error().message();
  EXPECT_TRUE(settings_from_config(packaged.value(), kRam) == settings_from_config(default_config(), kRam));
  EXPECT_EQ(packaged->log_level(), default_config().log_level());
  EXPECT_EQ(packaged->watchdog(), default_config().watchdog());
}

TEST(Settings, LimitsBelowTheirDefaultsAreRefused) {
  AgentConfig c = default_config();
  c.set_max_memory_bytes(c.default_memory_bytes() - 1);
  EXPECT_FALSE(validate_config(c).ok());
  c = default_config();
  c.set_default_concurrency(10);
  c.set_max_concurrency(5);
  Status s = validate_config(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("max_concurrency (5) must be at least default_concurrency (10)"), std::string::npos)
      << s.error().message();
  c = default_config();
  c.mutable_pools()->set_exec(1);
  s = validate_config(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("pools.exec"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace stoke::agent
