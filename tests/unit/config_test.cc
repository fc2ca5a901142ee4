// agent/config: the text-format file, its defaults, its checks and overrides.
#include "agent/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "api/wire/protocol.h"
#include "sandbox/base/file_util.h"
#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

// Says what was expected and what the message actually was on failure.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

std::string message_of(const Result<AgentConfig>& r) { return r.ok() ? "" : r.error().message(); }

TEST(AgentConfig, DefaultsWorkOutOfTheBox) {
  AgentConfig c = default_config();
  EXPECT_EQ(c.state_dir(), "/var/lib/stoke");
  EXPECT_EQ(c.socket_path(), "/run/stoke/stoke.sock");
  EXPECT_EQ(c.socket_group(), "");
  EXPECT_EQ(c.allowed_uids_size(), 0);
  EXPECT_EQ(c.allowed_gids_size(), 0);
  EXPECT_EQ(c.default_memory_bytes(), 256u << 20);
  EXPECT_EQ(c.default_timeout_ms(), 60000u);
  EXPECT_EQ(c.max_timeout_ms(), 300000u);
  EXPECT_EQ(c.default_concurrency(), 1u);
  EXPECT_EQ(c.max_payload_bytes(), 1u << 20);
  EXPECT_EQ(c.max_result_bytes(), 1u << 20);
  EXPECT_EQ(c.max_log_bytes(), 64u << 10);
  EXPECT_EQ(c.max_log_lines(), 1000u);
  EXPECT_EQ(c.max_code_bytes(), 48u << 20);
  EXPECT_EQ(c.max_code_unpacked_bytes(), 256u << 20);
  EXPECT_EQ(c.node_memory_budget_bytes(), 0u);
  EXPECT_EQ(c.host_uid_range_first(), 1100000u);
  EXPECT_EQ(c.host_uid_range_count(), 65536u);
  EXPECT_EQ(c.worker_threads(), 2u);
  EXPECT_TRUE(c.watchdog());
  EXPECT_EQ(c.log_level(), "info");
  EXPECT_EQ(c.billing_unit_ms(), 1u);
  EXPECT_EQ(c.keep_alive_ms(), 600000u);
  EXPECT_EQ(c.pools().python(), 2u);  // two stem cells per language runtime
  EXPECT_EQ(c.pools().node(), 2u);
  EXPECT_EQ(c.pools().exec(), 0u);
  Status valid = validate_config(c);
  EXPECT_TRUE(valid.ok()) << valid.error().message();
}

// The wire protocol states the same defaults for clients; they must agree.
TEST(AgentConfig, DefaultsAgreeWithTheWireProtocol) {
  AgentConfig c = default_config();
  EXPECT_EQ(c.socket_path(), wire::kDefaultSocketPath);
  EXPECT_EQ(c.max_payload_bytes(), wire::kMaxPayloadBytes);
  EXPECT_EQ(c.max_code_bytes(), wire::kMaxCodeBytes);
}

TEST(AgentConfig, NoPathAndNoDefaultFileGivesDefaults) {
  test::TempDir dir;
  auto r = load_config(std::nullopt, dir.file("absent.conf"));
  ASSERT_TRUE(r.ok()) << message_of(r);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*r, default_config()));
}

TEST(AgentConfig, NoPathReadsTheDefaultFileWhenPresent) {
  test::TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir.file("stoked.conf"), "worker_threads: 7\n").ok());
  auto r = load_config(std::nullopt, dir.file("stoked.conf"));
  ASSERT_TRUE(r.ok()) << message_of(r);
  EXPECT_EQ(r->worker_threads(), 7u);
}

TEST(AgentConfig, ExplicitPathMustExist) {
  test::TempDir dir;
  std::string path = dir.file("missing.conf");
  auto r = load_config(path, dir.file("other.conf"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.error().message(), path));
  EXPECT_EQ(r.error().err, ENOENT);
}

TEST(AgentConfig, EmptyFileIsTheDefaults) {
  auto r = parse_config("# nothing but a comment\n\n", "empty.conf");
  ASSERT_TRUE(r.ok()) << message_of(r);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*r, default_config()));
}

TEST(AgentConfig, FullFileParses) {
  test::TempDir dir;
  std::string path = dir.file("full.conf");
  ASSERT_TRUE(write_file_atomic(path, R"(# every field, none at its default
state_dir: "/srv/stoke"
socket_path: "/run/stoke-test/api.sock"
socket_group: "stoke"
allowed_uids: 1000
allowed_uids: [1001, 1002]
allowed_gids: 2000
default_memory_bytes: 134217728
default_timeout_ms: 30000
max_timeout_ms: 600000
default_concurrency: 4
max_payload_bytes: 2097152
max_result_bytes: 524288
max_log_bytes: 131072
max_log_lines: 5000
max_code_bytes: 10485760
max_code_unpacked_bytes: 104857600
node_memory_budget_bytes: 8589934592
host_uid_range_first: 2000000
host_uid_range_count: 1000
worker_threads: 8
watchdog: false
log_level: "debug"
billing_unit_ms: 100
keep_alive_ms: 0
pools {
  python: 2
  node: 1
  exec: 0
}
)").ok());
  auto r = load_config(path);
  ASSERT_TRUE(r.ok()) << message_of(r);
  const AgentConfig& c = *r;
  EXPECT_EQ(c.state_dir(), "/srv/stoke");
  EXPECT_EQ(c.socket_path(), "/run/stoke-test/api.sock");
  EXPECT_EQ(c.socket_group(), "stoke");
  EXPECT_EQ(std::vector<uint32_t>(c.allowed_uids().begin(), c.allowed_uids().end()),
            (std::vector<uint32_t>{1000, 1001, 1002}));
  ASSERT_EQ(c.allowed_gids_size(), 1);
  EXPECT_EQ(c.allowed_gids(0), 2000u);
  EXPECT_EQ(c.default_memory_bytes(), 128u << 20);
  EXPECT_EQ(c.default_timeout_ms(), 30000u);
  EXPECT_EQ(c.max_timeout_ms(), 600000u);
  EXPECT_EQ(c.default_concurrency(), 4u);
  EXPECT_EQ(c.max_payload_bytes(), 2u << 20);
  EXPECT_EQ(c.max_result_bytes(), 512u << 10);
  EXPECT_EQ(c.max_log_bytes(), 128u << 10);
  EXPECT_EQ(c.max_log_lines(), 5000u);
  EXPECT_EQ(c.max_code_bytes(), 10u << 20);
  EXPECT_EQ(c.max_code_unpacked_bytes(), 100u << 20);
  EXPECT_EQ(c.node_memory_budget_bytes(), uint64_t{8} << 30);
  EXPECT_EQ(c.host_uid_range_first(), 2000000u);
  EXPECT_EQ(c.host_uid_range_count(), 1000u);
  EXPECT_EQ(c.worker_threads(), 8u);
  EXPECT_FALSE(c.watchdog());
  EXPECT_EQ(c.log_level(), "debug");
  EXPECT_EQ(c.billing_unit_ms(), 100u);
  EXPECT_EQ(c.keep_alive_ms(), 0u);
  EXPECT_EQ(c.pools().python(), 2u);
  EXPECT_EQ(c.pools().node(), 1u);
  EXPECT_EQ(c.pools().exec(), 0u);
}

// packaging/stoked.conf documents every field at its default: it must parse,
// equal the built-in defaults, and leave no singular field out.
TEST(AgentConfig, PackagedConfigSpellsOutEveryDefault) {
  std::string path = std::string(STOKE_SOURCE_DIR) + "/packaging/stoked.conf";
  auto r = load_config(path);
  ASSERT_TRUE(r.ok()) << message_of(r);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equivalent(*r, default_config()))
      << r->DebugString();
  const google::protobuf::Reflection* refl = r->GetReflection();
  const google::protobuf::Descriptor* d = r->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;  // empty lists can only be shown as comments
    EXPECT_TRUE(refl->HasField(*r, f)) << "packaging/stoked.conf does not set " << f->name();
  }
  const config::Pools& pools = r->pools();
  const google::protobuf::Descriptor* pd = pools.GetDescriptor();
  for (int i = 0; i < pd->field_count(); ++i)
    EXPECT_TRUE(pools.GetReflection()->HasField(pools, pd->field(i)))
        << "packaging/stoked.conf does not set pools." << pd->field(i)->name();
}

TEST(AgentConfig, UnknownFieldIsAnErrorNamingItsLine) {
  auto r = parse_config("state_dir: \"/srv/stoke\"\n\ndefault_timeout: 5\n", "stoked.conf");
  ASSERT_FALSE(r.ok());
  std::string m = r.error().message();
  EXPECT_TRUE(Contains(m, "stoked.conf:3:"));
  EXPECT_TRUE(Contains(m, "default_timeout"));

  auto nested = parse_config("pools {\n  ruby: 1\n}\n", "stoked.conf");
  ASSERT_FALSE(nested.ok());
  EXPECT_TRUE(Contains(nested.error().message(), "stoked.conf:2:"));
  EXPECT_TRUE(Contains(nested.error().message(), "ruby"));
}

TEST(AgentConfig, SyntaxAndTypeErrorsNameTheirLine) {
  struct Case {
    const char* text;
    const char* where;
  };
  for (const Case& c : {
           Case{"worker_threads: 2\nstate_dir /srv\n", "x.conf:2:"},           // missing ':'
           Case{"# c\nworker_threads: \"two\"\n", "x.conf:2:"},                // wrong type
           Case{"\n\n\nworker_threads: -1\n", "x.conf:4:"},                    // out of range
           Case{"worker_threads: 2\nworker_threads: 3\n", "x.conf:2:"},        // set twice
           // Not a bool: protobuf reports it where the next token starts, so
           // check the field is named instead of the line.
           Case{"watchdog: maybe\n", "boolean field \"watchdog\""},
       }) {
    auto r = parse_config(c.text, "x.conf");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_TRUE(Contains(r.error().message(), c.where)) << c.text;
  }
}

TEST(AgentConfig, InvalidValuesAreNamed) {
  struct Case {
    const char* text;
    const char* says;
  };
  for (const Case& c : {
           Case{"state_dir: \"var/lib/stoke\"", "state_dir (\"var/lib/stoke\") must be an absolute path"},
           Case{"state_dir: \"//\"", "state_dir must not be the root directory"},
           Case{"socket_path: \"\"", "socket_path"},
           Case{"socket_path: \"/run/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock\"",
                "shorter than 108"},
           Case{"socket_group: \"a b\"", "socket_group"},
           Case{"default_memory_bytes: 1000", "default_memory_bytes (1000) must be at least 1 MiB"},
           Case{"default_timeout_ms: 0", "default_timeout_ms must be > 0"},
           Case{"max_timeout_ms: 0 default_timeout_ms: 1", "max_timeout_ms must be > 0"},
           Case{"default_timeout_ms: 400000",
                "default_timeout_ms (400000) must not exceed max_timeout_ms (300000)"},
           Case{"default_concurrency: 0", "default_concurrency must be > 0"},
           Case{"zygotes { preload: \"os; import evil\" }", "zygotes.preload (\"os; import evil\") must be a dotted Python module name"},
           Case{"zygotes { preload: \".json\" }", "zygotes.preload"},
           Case{"zygotes { preload: \"--help\" }", "zygotes.preload"},
           Case{"zygotes { memory_budget_bytes: 4096 }", "zygotes.memory_budget_bytes must be at least 16 MiB"},
           Case{"max_payload_bytes: 0", "max_payload_bytes must be > 0"},
           Case{"max_payload_bytes: 100000000", "max_payload_bytes (100000000) must be at most"},
           Case{"max_result_bytes: 0", "max_result_bytes must be > 0"},
           Case{"max_result_bytes: 60000000 max_log_bytes: 10000000", "max_result_bytes + max_log_bytes"},
           Case{"max_code_bytes: 0", "max_code_bytes must be > 0"},
           Case{"max_code_unpacked_bytes: 0", "max_code_unpacked_bytes must be > 0"},
           Case{"node_memory_budget_bytes: 1048576",
                "node_memory_budget_bytes (1048576) must be 0 (3/4 of RAM) or at least default_memory_bytes"},
           Case{"host_uid_range_first: 0", "host_uid_range_first must be > 0"},
           Case{"host_uid_range_count: 0", "host_uid_range_count must be > 0"},
           Case{"host_uid_range_first: 4294967000 host_uid_range_count: 1000",
                "host_uid_range_first + host_uid_range_count"},
           Case{"worker_threads: 0", "worker_threads (0) must be 1..256"},
           Case{"worker_threads: 1000", "worker_threads (1000) must be 1..256"},
           Case{"log_level: \"verbose\"", "log_level (\"verbose\") must be one of trace, debug"},
           Case{"billing_unit_ms: 0", "billing_unit_ms must be > 0"},
           Case{"pools { node: 5000 }", "pools.node (5000) must be at most 1024"},
       }) {
    auto r = parse_config(c.text, "/etc/stoke/stoked.conf");
    ASSERT_FALSE(r.ok()) << c.text;
    std::string m = r.error().message();
    EXPECT_TRUE(Contains(m, c.says)) << c.text;
    EXPECT_TRUE(Contains(m, "invalid config /etc/stoke/stoked.conf")) << c.text;
  }
}

TEST(AgentConfig, EdgeValuesAreAccepted) {
  for (const char* text : {
           "default_timeout_ms: 300000",  // == max
           "host_uid_range_first: 4294966295 host_uid_range_count: 1000",  // ends at 2^32-2
           "max_log_bytes: 0 max_log_lines: 0 keep_alive_ms: 0",
           "worker_threads: 256",
           "log_level: \"off\"",
           "node_memory_budget_bytes: 268435456",
           "pools { python: 1024 }",
       }) {
    auto r = parse_config(text, "x.conf");
    EXPECT_TRUE(r.ok()) << text << ": " << message_of(r);
  }
}

TEST(AgentConfig, OverridesWinAndAreValidated) {
  AgentConfig c = default_config();
  Status none = apply_overrides(c, {});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(c.state_dir(), "/var/lib/stoke");

  Status s = apply_overrides(c, {.state_dir = "/tmp/stoke-state", .socket_path = "/tmp/s.sock"});
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(c.state_dir(), "/tmp/stoke-state");
  EXPECT_EQ(c.socket_path(), "/tmp/s.sock");

  Status bad = apply_overrides(c, {.state_dir = std::nullopt, .socket_path = "relative.sock"});
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.error().message(), "socket_path (\"relative.sock\")"));
}

TEST(AgentConfig, NodeMemoryBudgetDefaultsToThreeQuartersOfRam) {
  AgentConfig c = default_config();
  EXPECT_EQ(node_memory_budget(c, uint64_t{16} << 30), uint64_t{12} << 30);
  c.set_node_memory_budget_bytes(uint64_t{2} << 30);
  EXPECT_EQ(node_memory_budget(c, uint64_t{16} << 30), uint64_t{2} << 30);
  auto ram = total_ram_bytes();
  ASSERT_TRUE(ram.ok()) << ram.error().message();
  EXPECT_GT(*ram, 0u);
}


}  // namespace
}  // namespace stoke::agent

namespace stoke::agent {
namespace {

TEST(AgentConfig, CgroupRootMustBeAGroupBelowTheCgroupFilesystem) {
  for (const char* bad : {"relative/group", "/tmp/x", "/sys/fs/cgroup", "/sys/fs/cgroup/", "/sys/fs/cgroup/../etc",
                          "/sys/fs/cgroup/a/.."}) {
    AgentConfig c = default_config();
    c.set_cgroup_root(bad);
    Status s = validate_config(c);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.error().message().find("cgroup_root"), std::string::npos) << s.error().message();
  }
  AgentConfig c = default_config();
  c.set_cgroup_root("/sys/fs/cgroup/stoke.slice/given");
  Status s = validate_config(c);
  EXPECT_TRUE(s.ok()) << s.error().message();
}

}  // namespace
}  // namespace stoke::agent
