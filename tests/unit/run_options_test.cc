#include "api/cli/run_options.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace stoke::cli {
namespace {

TEST(RunOptions, ParsesEveryOption) {
  auto r = parse_run_options({"--memory", "128M", "--cpus=0.5", "--pids", "32", "--tmp-size", "8M", "--timeout",
                              "1.5s", "--bind", "/srv/code:/code", "--bind", "/srv/out:/out:rw", "--env", "A=1",
                              "--workdir", "/code", "--hostname", "fn-1", "--report", "/tmp/r.json", "--", "python3",
                              "-c", "pass"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& o = r.value();
  EXPECT_EQ(o.spec.limits.memory_bytes, 128u << 20);
  EXPECT_DOUBLE_EQ(o.spec.limits.cpus, 0.5);
  EXPECT_EQ(o.spec.limits.pids, 32u);
  EXPECT_EQ(o.spec.tmp_size_bytes, 8u << 20);
  EXPECT_EQ(o.timeout->count(), 1500);
  ASSERT_EQ(o.spec.binds.size(), 2u);
  EXPECT_FALSE(o.spec.binds[0].writable);
  EXPECT_TRUE(o.spec.binds[1].writable);
  EXPECT_EQ(o.spec.binds[1].target, "/out");
  EXPECT_NE(std::find(o.spec.env.begin(), o.spec.env.end(), "A=1"), o.spec.env.end());
  EXPECT_EQ(o.spec.workdir, "/code");
  EXPECT_EQ(o.spec.hostname, "fn-1");
  EXPECT_EQ(o.report_path, "/tmp/r.json");
  EXPECT_EQ(o.spec.argv, (std::vector<std::string>{"python3", "-c", "pass"}));
}

TEST(RunOptions, DefaultsAreSafe) {
  auto r = parse_run_options({"--", "/bin/true"});
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->spec.limits.memory_bytes, 0u);
  EXPECT_GT(r->spec.limits.pids, 0u);
  EXPECT_GT(r->spec.limits.cpus, 0.0);
  EXPECT_TRUE(r->spec.binds.empty());
  EXPECT_FALSE(r->timeout.has_value());
  for (const auto& kv : r->spec.env) EXPECT_TRUE(kv.rfind("PATH=", 0) == 0 || kv.rfind("HOME=", 0) == 0 || kv.rfind("LANG=", 0) == 0) << kv;
}

TEST(RunOptions, EnvOverridesDefaultsInsteadOfDuplicating) {
  auto r = parse_run_options({"--env", "PATH=/x", "--", "true"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::count_if(r->spec.env.begin(), r->spec.env.end(), [](auto& e) { return e.rfind("PATH=", 0) == 0; }), 1);
  EXPECT_NE(std::find(r->spec.env.begin(), r->spec.env.end(), "PATH=/x"), r->spec.env.end());
}

TEST(RunOptions, CommandMayStartWithoutDoubleDash) {
  auto r = parse_run_options({"--pids", "4", "/bin/echo", "--not-an-option"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->spec.argv, (std::vector<std::string>{"/bin/echo", "--not-an-option"}));
}

TEST(RunOptions, ErrorsNameTheOption) {
  struct Case { std::vector<std::string> args; const char* needle; };
  for (const auto& c : std::vector<Case>{{{"--memory", "12X", "--", "true"}, "--memory"},
                                          {{"--frobnicate", "--", "true"}, "--frobnicate"},
                                          {{"--timeout", "soon", "--", "true"}, "--timeout"},
                                          {{"--pids", "0", "--", "true"}, "--pids"},
                                          {{"--bind", "/a", "--", "true"}, "--bind"},
                                          {{"--bind", "/a:/b:rx", "--", "true"}, "rw or ro"},
                                          {{"--env", "NOVALUE", "--", "true"}, "--env"},
                                          {{"--memory"}, "needs a value"},
                                          {{"--memory", "1G"}, "no command"}}) {
    auto r = parse_run_options(c.args);
    ASSERT_FALSE(r.ok()) << c.needle;
    EXPECT_NE(r.error().message().find(c.needle), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace stoke::cli
