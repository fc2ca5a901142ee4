// kill -9 of a process writing the registry, at random moments: what a
// write reported as committed must be there after reopening, and nothing may
// be half written. (This proves atomicity and durability against a process
// crash; power loss additionally relies on synchronous=FULL and the disk.)
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "agent/registry.h"
#include "agent/sqlite.h"
#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

FunctionRecord record(int n) {
  FunctionRecord r;
  r.runtime = v1::NODE;
  r.entry = "main";
  r.memory_bytes = 64ull << 20;
  r.timeout_ms = 1000 + static_cast<uint64_t>(n);
  r.concurrency = 1;
  r.env = {{"N", std::to_string(n)}};
  r.code_sha256 = std::string(64, static_cast<char>('a' + n % 6));
  r.code_size = 100;
  return r;
}

// One line per write, sent only after the call that committed it returned.
// A pipe write of at most PIPE_BUF bytes is atomic, so a kill never leaves
// half a line.
void report(int fd, const std::string& line) {
  std::string l = line + "\n";
  if (::write(fd, l.data(), l.size()) < 0) ::_exit(3);
}

// The child: writes forever (until killed), reporting every commit.
[[noreturn]] void child_writer(const std::string& path, int round, int fd) {
  auto fail = [fd](const Error& e) {
    report(fd, "X " + e.message());
    ::_exit(1);
  };
  auto reg = Registry::open(path);
  if (!reg.ok()) fail(reg.error());
  auto& r = *reg.value();
  for (int i = 0; i < 1000000; ++i) {
    std::string fn = "r" + std::to_string(round) + "-f" + std::to_string(i);
    auto created = r.create_function(fn, record(i));
    if (!created.ok()) fail(created.error());
    report(fd, "F " + fn + " 1");
    if (i % 3 == 0) {
      auto updated = r.update_function(fn, record(i + 1));
      if (!updated.ok()) fail(updated.error());
      report(fd, "F " + fn + " " + std::to_string(updated->version()));
    }
    v1::Activation a;
    a.set_activation_id("r" + std::to_string(round) + "-a" + std::to_string(i));
    a.set_function(fn);
    a.set_version(1);
    a.set_start_ms(1000000 + i);
    a.set_start_kind(v1::WARM);
    auto begun = r.begin_activation(a);
    if (!begun.ok()) fail(begun.error());
    report(fd, "B " + a.activation_id());
    a.set_end_ms(a.start_ms() + 5);
    a.set_duration_ms(5);
    a.set_status(v1::SUCCESS);
    a.set_result_json(R"({"i":)" + std::to_string(i) + "}");
    for (int l = 0; l < 3; ++l) a.add_logs("log line " + std::to_string(l));
    a.mutable_usage()->set_billed_ms(100);
    auto done = r.finish_activation(a);
    if (!done.ok()) fail(done.error());
    report(fd, "E " + a.activation_id());
  }
  ::_exit(0);
}

struct Reported {
  std::map<std::string, uint32_t> functions;  // name -> highest committed version
  std::set<std::string> begun, finished;
  std::string failure;  // the child's own error, if any
};

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void parse_reports(const std::string& text, Reported* out) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 2) continue;
    std::string rest = line.substr(2);
    switch (line[0]) {
      case 'F': {
        auto sp = rest.rfind(' ');
        out->functions[rest.substr(0, sp)] = static_cast<uint32_t>(std::stoul(rest.substr(sp + 1)));
        break;
      }
      case 'B': out->begun.insert(rest); break;
      case 'E': out->finished.insert(rest); break;
      case 'X': out->failure = rest; break;
    }
  }
}

// Forks a writer on path, lets it run for delay, kills it with SIGKILL and
// returns what it reported.
Reported run_and_kill(const std::string& path, int round, std::chrono::microseconds delay) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::close(fds[0]);
    child_writer(path, round, fds[1]);
  }
  ::close(fds[1]);
  std::this_thread::sleep_for(delay);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  Reported r;
  parse_reports(read_all(fds[0]), &r);
  ::close(fds[0]);
  return r;
}

// Rows that only a torn write could leave: a function without its current
// version, a version gap, a finished activation missing its end, status,
// result or logs, or a running one with an outcome.
void expect_no_partial_rows(const std::string& path) {
  auto db = SqliteDb::open(path);
  ASSERT_TRUE(db.ok()) << db.error().message();
  auto q = [&](const char* sql) {
    auto n = db->query_int64(sql);
    EXPECT_TRUE(n.ok()) << sql << ": " << n.error().message();
    return n.ok() ? *n : -1;
  };
  EXPECT_EQ(q("SELECT COUNT(*) FROM functions f WHERE NOT EXISTS (SELECT 1 FROM versions v "
              "WHERE v.function = f.name AND v.version = f.current_version)"),
            0);
  EXPECT_EQ(q("SELECT COUNT(*) FROM functions f WHERE (SELECT COUNT(*) FROM versions v "
              "WHERE v.function = f.name) != f.current_version"),
            0);
  EXPECT_EQ(q("SELECT COUNT(*) FROM versions v WHERE NOT EXISTS (SELECT 1 FROM functions f "
              "WHERE f.name = v.function)"),
            0);
  EXPECT_EQ(q("SELECT COUNT(*) FROM activations WHERE state = 'finished' AND (end_ms = 0 OR status = 0 "
              "OR result_json = '' OR (status = 1 AND logs = '[]'))"),
            0);
  EXPECT_EQ(q("SELECT COUNT(*) FROM activations WHERE state = 'running' AND (end_ms != 0 OR status != 0)"), 0);
}

TEST(RegistryCrash, RegistryKeepsEveryCommittedWriteAfterKill9) {
  test::TempDir dir;
  const std::string path = dir.file("state.db");
  unsigned seed = static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_us(0, 60000);

  Reported all;
  size_t committed_total = 0;
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Reported r = run_and_kill(path, round, std::chrono::microseconds(delay_us(rng)));
    ASSERT_TRUE(r.failure.empty()) << "the writer failed by itself: " << r.failure;
    committed_total += r.functions.size() + r.finished.size();

    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().message();
    auto integrity = reg.value()->check_integrity();
    ASSERT_TRUE(integrity.ok()) << integrity.error().message();
    for (const auto& [name, version] : r.functions) all.functions[name] = version;
    all.begun.insert(r.begun.begin(), r.begun.end());
    all.finished.insert(r.finished.begin(), r.finished.end());

    // Everything reported in this and earlier rounds is still there.
    for (const auto& [name, version] : all.functions) {
      auto f = reg.value()->get_function(name);
      ASSERT_TRUE(f.ok()) << name << ": " << f.error().message();
      EXPECT_GE(f->version(), version) << name;
    }
    for (const auto& id : all.begun) EXPECT_TRUE(reg.value()->get_activation(id).ok()) << id;
    for (const auto& id : all.finished) {
      auto a = reg.value()->get_activation(id);
      ASSERT_TRUE(a.ok()) << id << ": " << a.error().message();
      EXPECT_EQ(a->status(), v1::SUCCESS) << id;
      EXPECT_EQ(a->logs_size(), 3) << id;
    }
    expect_no_partial_rows(path);

    // What the agent does at start; the next round writes on top of it.
    auto failed = reg.value()->fail_interrupted_activations("agent was killed");
    ASSERT_TRUE(failed.ok()) << failed.error().message();
    EXPECT_LE(*failed, 1) << "one writer has at most one activation in flight";
  }
  // The random delays must have let the writers commit something, or the test proved little.
  EXPECT_GT(committed_total, 0u);
  std::cout << "[          ] " << committed_total << " committed writes survived 8 kills\n";
}

TEST(RegistryCrash, RegistryOpensCleanlyAfterKill9DuringItsCreation) {
  // Kills land early: while the schema is created or the first rows written.
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  std::uniform_int_distribution<int> delay_us(0, 4000);
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    test::TempDir dir;
    const std::string path = dir.file("state.db");
    Reported r = run_and_kill(path, round, std::chrono::microseconds(delay_us(rng)));
    ASSERT_TRUE(r.failure.empty()) << r.failure;
    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().message();
    EXPECT_EQ(reg.value()->schema_version().value(), Registry::kSchemaVersion);
    EXPECT_TRUE(reg.value()->check_integrity().ok());
    for (const auto& [name, version] : r.functions) EXPECT_TRUE(reg.value()->get_function(name).ok()) << name;
    expect_no_partial_rows(path);
  }
}

}  // namespace
}  // namespace stoke::agent
