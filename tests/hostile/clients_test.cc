// Hostile API clients against a real stoked: connection floods, a client that
// pipelines requests and never reads the replies, slowloris frames and huge
// declared frame lengths. Each must leave the agent up, its memory and fds
// bounded, and another tenant's warm p99 where it was (the Bystander).
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "api/wire/frame.h"
#include "tests/hostile/bystander.h"
#include "tests/util/sanitizers.h"

namespace stoke {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A raw connection to the agent's socket; non-blocking when asked. -1 (errno
// set) when the connect fails, e.g. EAGAIN on a full backlog.
int raw_connect(const std::string& path, bool nonblocking) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// Blocking hello on a raw fd; true when the agent answered with its hello.
bool greet(int fd) {
  v1::Request hello;
  hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
  if (!wire::write_frame(fd, hello).ok()) return false;
  auto payload = wire::read_frame(fd);
  if (!payload.ok()) return false;
  auto response = wire::parse_response(*payload);
  return response.ok() && response->has_hello();
}

std::string frame_of(const v1::Request& r) { return wire::encode_frame(r).value(); }

// Kilobytes from /proc/<pid>/status (VmRSS, VmHWM, ...).
long status_kb(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

size_t open_fds(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// What a non-blocking socket shows without consuming anything: data waiting,
// end of stream, or nothing yet (still open and idle).
enum class Peek { kData, kClosed, kIdle };
Peek peek(int fd) {
  char b;
  ssize_t n = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return Peek::kData;
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return Peek::kClosed;
  return Peek::kIdle;
}

// Waits until the agent hangs up `fd` (shuts the connection down); reads
// nothing, so a client that never reads stays one. True if it did within
// `limit`.
bool closed_by_agent_within(int fd, milliseconds limit) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    pollfd p{fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 50) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return true;
  }
  return false;
}

// Sends as much of `data` as the socket takes within `limit`, round after
// round; returns the bytes sent. The attacker never reads.
size_t push_for(int fd, const std::string& data, milliseconds limit, size_t max_bytes = SIZE_MAX) {
  size_t sent = 0, offset = 0;
  auto end = Clock::now() + limit;
  while (Clock::now() < end && sent < max_bytes) {
    ssize_t n = ::send(fd, data.data() + offset, data.size() - offset, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      offset = (offset + static_cast<size_t>(n)) % data.size();
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, 20);
  }
  return sent;
}

// Samples the agent's VmRSS every 100 ms while `work` runs; the peak in KiB.
template <typename Work>
long peak_rss_kb_during(pid_t pid, Work work) {
  std::atomic<bool> done{false};
  std::atomic<long> peak{status_kb(pid, "VmRSS")};
  std::thread sampler([&] {
    while (!done) {
      long now = status_kb(pid, "VmRSS");
      if (now > peak) peak = now;
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  work();
  done = true;
  sampler.join();
  long now = status_kb(pid, "VmRSS");
  return std::max(peak.load(), now);
}

class HostileClients : public test::AgentTest {
 protected:
  void SetUp() override {
    // Thousands of sockets in this process; the agent inherits the same
    // limit, so without its caps it would take them all.
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    saved_nofile_ = r;
    r.rlim_cur = std::min<rlim_t>(r.rlim_max, 16384);
    setrlimit(RLIMIT_NOFILE, &r);
    test::AgentTest::SetUp();
  }
  void TearDown() override { setrlimit(RLIMIT_NOFILE, &saved_nofile_); }
  std::string extra_config() override {
    return "zygotes { enabled: false }\ncheckpoints: false\npools { python: 0 node: 0 }\n" + limits_;
  }
  std::string limits_;
  rlimit saved_nofile_{};
};

// Opens `count` non-blocking connections as `uid` (euid only, this thread
// only: SO_PEERCRED reports the euid at connect; the fsuid stays 0 so the
// root-only socket path can still be reached).
std::vector<int> connect_many_as(const std::string& path, uid_t uid, size_t count) {
  std::vector<int> fds;
  std::thread t([&] {
    if (syscall(SYS_setresuid, -1, uid, -1) != 0 || syscall(SYS_setfsuid, 0) < 0) return;
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      for (int attempt = 0; attempt < 200 && fd < 0; ++attempt) {
        fd = raw_connect(path, true);
        if (fd < 0 && errno != EAGAIN) break;
        if (fd < 0) std::this_thread::sleep_for(milliseconds(1));  // backlog full: the agent is accepting
      }
      if (fd >= 0) fds.push_back(fd);
    }
  });
  t.join();
  return fds;
}

TEST_F(HostileClients, ThousandsOfIdleConnectionsAreCappedPerUidAndOthersKeepService) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  const size_t fds_before = open_fds(agent_->pid());

  bystander.start();
  std::vector<int> attack = connect_many_as(agent_->socket(), 65534, 3000);
  std::this_thread::sleep_for(milliseconds(1500));  // the agent accepts (and refuses) them all
  size_t idle = 0, refused = 0;
  int a_refused = -1;
  for (int fd : attack) {
    Peek p = peek(fd);
    if (p == Peek::kIdle) ++idle;
    else if (p == Peek::kData) {
      ++refused;
      a_refused = fd;
    }
  }
  const size_t fds_during = open_fds(agent_->pid());
  // Root, a different uid, still gets in and is served.
  auto fresh = agent_->connect().call([] {
    v1::Request r;
    r.mutable_get_status();
    return r;
  }());
  auto during = bystander.stop();
  std::printf("attacker: %zu connections made, %zu held idle, %zu refused; agent fds %zu -> %zu\n", attack.size(),
              idle, refused, fds_before, fds_during);

  EXPECT_GT(attack.size(), 1000u) << "the attack did not get its connections in";
  EXPECT_LE(idle, 128u) << "one uid holds more connections than max_connections_per_uid";
  EXPECT_LE(fds_during, fds_before + 128 + 16) << "the agent holds an fd per attacking connection";
  ASSERT_GE(a_refused, 0) << "no refused connection was told why";
  ::fcntl(a_refused, F_SETFL, 0);
  auto why = wire::read_frame(a_refused);
  ASSERT_TRUE(why.ok()) << why.error().message();
  auto response = wire::parse_response(*why);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->error().code(), v1::Error::RESOURCE_EXHAUSTED) << response->DebugString();
  EXPECT_NE(response->error().message().find("max_connections_per_uid"), std::string::npos);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  EXPECT_TRUE(fresh->has_status()) << fresh->DebugString();
  test::Bystander::expect_kept_p99(reference, during);
  for (int fd : attack) ::close(fd);
  EXPECT_TRUE(agent_->running());
}

TEST_F(HostileClients, PipelinedRequestsNeverReadKeepAgentMemoryBounded) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  int fd = raw_connect(agent_->socket(), false);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(greet(fd));
  // 64 KiB of tiny requests (no body: each is answered at once with an
  // error, about ten times its own size), sent round after round.
  std::string batch;
  for (uint64_t id = 1; batch.size() < (64u << 10); ++id) {
    v1::Request r;
    r.set_id(id);
    batch += frame_of(r);
  }
  const long rss_before = status_kb(agent_->pid(), "VmRSS");
  size_t sent = 0;
  bystander.start();
  long peak = peak_rss_kb_during(agent_->pid(), [&] { sent = push_for(fd, batch, milliseconds(5000)); });
  auto during = bystander.stop();
  std::printf("attacker sent %zu bytes of requests; agent VmRSS %ld -> peak %ld KiB\n", sent, rss_before, peak);
  if (!test::kUnderSanitizer) {  // ASan's quarantine keeps freed memory: RSS says nothing there
    EXPECT_LT(peak - rss_before, 32 * 1024) << "the agent's memory grew with requests whose replies are never read";
  }
  test::Bystander::expect_kept_p99(reference, during);
  // Back-pressure, not an error storm: the connection is still open.
  EXPECT_NE(peek(fd), Peek::kClosed);
  ::close(fd);
  EXPECT_TRUE(agent_->running());
}

class HostileClientsSmallOutput : public HostileClients {
 protected:
  void SetUp() override {
    limits_ = "api_limits { max_output_bytes: 4194304 max_requests_in_flight: 16 }\n";
    HostileClients::SetUp();
  }
};

TEST_F(HostileClientsSmallOutput, ClientThatNeverReadsLargeRepliesIsDisconnected) {
  std::string path = dir_.file("big.py");
  std::ofstream(path) << "def main(args):\n    return {\"x\": \"a\" * 300000}\n";
  auto created = send(test::create_request("big", v1::PYTHON, path, "main.py"));
  ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK) << created.error().message();
  auto big = invoke_with("big");
  ASSERT_EQ(big.status(), v1::SUCCESS) << big.result_json().substr(0, 200);

  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  std::string batch;
  for (uint64_t id = 1; id <= 200; ++id) {
    v1::Request r;
    r.set_id(id);
    r.mutable_get_activation()->set_activation_id(big.activation_id());
    batch += frame_of(r);
  }
  const long rss_before = status_kb(agent_->pid(), "VmRSS");
  size_t rounds = 0, disconnected = 0;
  bystander.start();
  // Round after round for 3 s: connect, ask for 200 copies of the large
  // result, never read, wait to be hung up on, come back 250 ms later. (Back
  // to back, the rounds' registry reads saturate the shared worker pool and
  // the bystander's invokes queue behind them: a worker-fairness issue, not
  // one of memory or the loop; see docs/security/api-limits.md.)
  long peak = peak_rss_kb_during(agent_->pid(), [&] {
    auto end = Clock::now() + milliseconds(3000);
    while (Clock::now() < end) {
      int fd = raw_connect(agent_->socket(), false);
      if (fd < 0 || !greet(fd)) break;
      ++rounds;
      push_for(fd, batch, milliseconds(2000), batch.size());
      if (closed_by_agent_within(fd, milliseconds(5000))) ++disconnected;
      ::close(fd);
      std::this_thread::sleep_for(milliseconds(250));
    }
  });
  auto during = bystander.stop();
  std::printf("%zu rounds, %zu disconnected; agent VmRSS %ld -> peak %ld KiB\n", rounds, disconnected, rss_before,
              peak);
  EXPECT_GT(rounds, 0u);
  EXPECT_EQ(disconnected, rounds) << "a client that does not read its replies stayed connected";
  EXPECT_NE(agent_->log_text().find("does not read its replies"), std::string::npos)
      << "no disconnect was logged for a client that does not read";
  if (!test::kUnderSanitizer) {
    EXPECT_LT(peak - rss_before, 64 * 1024);
  }
  test::Bystander::expect_kept_p99(reference, during);
  EXPECT_TRUE(agent_->running());
}

class HostileClientsShortFrameTimeout : public HostileClients {
 protected:
  void SetUp() override {
    limits_ = "api_limits { frame_timeout_ms: 1000 max_buffered_bytes: 16777216 }\n";
    HostileClients::SetUp();
  }
};

TEST_F(HostileClientsShortFrameTimeout, SlowlorisPartialFramesAndMissingHellosAreClosed) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  std::vector<int> slow, silent;
  for (int i = 0; i < 20; ++i) {
    int fd = raw_connect(agent_->socket(), false);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(greet(fd));
    // A header announcing 100 bytes, then a trickle that never completes it.
    std::string head = wire::encode_frame_header(100) + "ab";
    ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    slow.push_back(fd);
    int quiet = raw_connect(agent_->socket(), false);  // connects, never says hello
    ASSERT_GE(quiet, 0);
    silent.push_back(quiet);
  }
  bystander.start();
  auto start = Clock::now();
  std::vector<bool> closed(slow.size(), false);
  // Trickle one byte per connection every 200 ms for 3 s: progress, but the
  // frame never completes.
  while (Clock::now() - start < milliseconds(3000)) {
    for (size_t i = 0; i < slow.size(); ++i)
      if (!closed[i] && ::send(slow[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) closed[i] = true;
    std::this_thread::sleep_for(milliseconds(200));
  }
  auto during = bystander.stop();
  for (size_t i = 0; i < slow.size(); ++i) {
    EXPECT_TRUE(closed[i] || closed_by_agent_within(slow[i], milliseconds(100))) << "slowloris " << i << " still open";
    EXPECT_TRUE(closed_by_agent_within(silent[i], milliseconds(100))) << "hello-less connection " << i << " still open";
    ::close(slow[i]);
    ::close(silent[i]);
  }
  EXPECT_NE(agent_->log_text().find("no complete frame within 1000 ms"), std::string::npos);
  EXPECT_NE(agent_->log_text().find("no hello within 1000 ms"), std::string::npos);
  test::Bystander::expect_kept_p99(reference, during);
  EXPECT_TRUE(agent_->running());
}

TEST_F(HostileClientsShortFrameTimeout, HugeDeclaredFramesAreRefusedAndPartialOnesStayWithinTheBudget) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  // Over the wire limit: refused at the header, nothing buffered.
  int huge = raw_connect(agent_->socket(), false);
  ASSERT_GE(huge, 0);
  ASSERT_TRUE(greet(huge));
  std::string header = wire::encode_frame_header(0xffffffffu);
  ASSERT_EQ(::send(huge, header.data(), header.size(), MSG_NOSIGNAL), 4);
  auto refusal = wire::read_frame(huge);
  ASSERT_TRUE(refusal.ok()) << refusal.error().message();
  auto refused = wire::parse_response(*refusal);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->error().code(), v1::Error::PROTOCOL_ERROR);
  EXPECT_TRUE(closed_by_agent_within(huge, milliseconds(1000)));
  ::close(huge);

  // Within the limit (60 MiB declared) from 8 connections, 8 MiB sent by each
  // and then silence: 64 MiB would be held; the budget is 16 MiB.
  std::vector<int> big;
  for (int i = 0; i < 8; ++i) {
    int fd = raw_connect(agent_->socket(), false);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(greet(fd));
    big.push_back(fd);
  }
  std::string chunk = wire::encode_frame_header(60u << 20) + std::string((1u << 20) - 4, 'z');
  const long rss_before = status_kb(agent_->pid(), "VmRSS");
  bystander.start();
  long peak = peak_rss_kb_during(agent_->pid(), [&] {
    std::vector<std::thread> senders;
    for (int fd : big)
      senders.emplace_back([fd, &chunk] {
        std::string rest(1u << 20, 'z');
        size_t sent = push_for(fd, chunk, milliseconds(800), chunk.size());
        if (sent == chunk.size()) push_for(fd, rest, milliseconds(800), 7u << 20);
      });
    for (auto& t : senders) t.join();
    std::this_thread::sleep_for(milliseconds(300));
  });
  auto during = bystander.stop();
  std::printf("agent VmRSS %ld -> peak %ld KiB with 8 stalled partial frames\n", rss_before, peak);
  if (!test::kUnderSanitizer) {
    EXPECT_LT(peak - rss_before, 40 * 1024) << "partial frames were buffered beyond max_buffered_bytes";
  }
  for (int fd : big) {
    EXPECT_TRUE(closed_by_agent_within(fd, milliseconds(3000))) << "a stalled partial frame was kept";
    ::close(fd);
  }
  test::Bystander::expect_kept_p99(reference, during);
  EXPECT_TRUE(agent_->running());
}

}  // namespace
}  // namespace stoke
