#include "agent/zygote.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "agent/code_store.h"
#include "agent/json_limits.h"
#include "agent/zygote_verify.h"
#include "sandbox/base/file_util.h"
#include "sandbox/id_map.h"
#include "sandbox/seccomp_profile.h"

namespace stoke::agent {
namespace {

using json = nlohmann::json;

constexpr std::chrono::milliseconds kStartTimeout{10'000};
constexpr std::chrono::milliseconds kForkTimeout{5'000};
constexpr size_t kMaxMessage = 1 << 16;
// A zygote's answers are flat objects; nesting is refused before parsing.
constexpr size_t kMaxMessageDepth = 8;
// Step of an error the zygote itself answered (as opposed to a lost or late
// answer, after which the exchange is out of step and the zygote unusable).
constexpr const char* kAnswered = "the zygote refused";

Status send_message(int fd, const json& message, const std::vector<int>& fds) {
  std::string data = message.dump();
  iovec iov{data.data(), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) >= 0) return {};
    if (errno != EINTR) return sys_error("send to zygote");
  }
}

struct Message {
  json body;
  unique_fd fd;  // the first fd that came with it, if any
};

Result<Message> receive_message(int fd, std::chrono::milliseconds timeout, const std::string& waiting_for) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("wait for zygote");
    if (n == 0) return plain_error(waiting_for, "no answer from the zygote within " + std::to_string(timeout.count()) + " ms");
    break;
  }
  std::string data(kMaxMessage, '\0');
  iovec iov{data.data(), data.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_error(waiting_for);
  Message m;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
    for (size_t i = 0; i < count; ++i) {
      if (!m.fd) m.fd.reset(fds[i]);
      else ::close(fds[i]);
    }
  }
  if (n == 0) return plain_error(waiting_for, "the zygote closed its control socket (it died)");
  data.resize(static_cast<size_t>(n));
  // A zygote's answers are flat objects; anything deeper is refused before a
  // DOM exists (json_limits.h).
  auto body = parse_json_bounded(data, kMaxMessageDepth);
  if (!body.ok()) return plain_error(waiting_for, "the zygote sent bad JSON: " + body.error().message());
  m.body = std::move(body.value());
  if (!m.body.is_object()) return plain_error(waiting_for, "the zygote sent something that is not a JSON object");
  if (m.body.contains("error")) {
    // The zygote's own answer (its step says so): the protocol is still in step.
    Error e = plain_error(waiting_for, m.body["error"].is_string() ? m.body["error"].get<std::string>()
                                                                   : m.body["error"].dump());
    e.detail = e.step + ": " + e.detail;
    e.step = kAnswered;
    return e;
  }
  return m;
}

std::string hex_of(const SeccompProgram& p) {
  static const char* digits = "0123456789abcdef";
  const auto* bytes = reinterpret_cast<const unsigned char*>(p.instructions.data());
  size_t size = p.instructions.size() * sizeof(sock_filter);
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 15]);
  }
  return out;
}

Result<std::pair<unique_fd, unique_fd>> seqpacket_pair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return sys_error("zygote control socket");
  return std::pair{unique_fd(sv[0]), unique_fd(sv[1])};
}

Result<unique_fd> open_dev_null() {
  unique_fd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!fd) return sys_error("open /dev/null");
  return fd;
}

}  // namespace

std::string zygote_group_name() {
  // Above the spawner's counter (it counts from 1 per process).
  static std::atomic<uint64_t> counter{1'000'000'000};
  return "sb-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
}

// ---- runtime zygote --------------------------------------------------------

Result<std::unique_ptr<RuntimeZygote>> RuntimeZygote::start(Spawner& spawner, const RuntimeZygoteSpec& spec) {
  std::unique_ptr<RuntimeZygote> z(new RuntimeZygote());
  z->spec_ = spec;
  std::error_code ec;
  std::filesystem::remove_all(spec.work_dir, ec);
  STOKE_TRY(make_dirs(spec.work_dir + "/functions", 0711));
  STOKE_TRY(make_dirs(spec.work_dir + "/code", 0755));  // where function zygotes bind their code
  auto pair = seqpacket_pair();
  if (!pair.ok()) return pair.error();
  auto null = open_dev_null();
  if (!null.ok()) return null.error();

  SandboxSpec s;
  s.argv = {"/usr/bin/python3", "/runtime/python/stoke_zygote.py"};
  s.argv.insert(s.argv.end(), spec.preload.begin(), spec.preload.end());
  s.env = default_sandbox_env();
  s.hostname = "stoke";
  s.binds = {{spec.runtimes_dir, "/runtime", false},
             {spec.work_dir + "/functions", "/functions", false},
             {spec.work_dir + "/code", "/code", false}};
  s.tmp_size_bytes = 16ULL << 20;
  s.limits = CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = 1.0, .pids = 64};
  s.host_uid = s.host_gid = spec.host_id;
  s.host_id_count = spec.host_id_count;
  s.zygote = true;
  s.fds = {{null->get(), 0}, {null->get(), 1}, {null->get(), 2}, {pair->second.get(), 3}};
  auto sb = spawner.spawn(s);
  if (!sb.ok()) return sb.error().context("start the python runtime zygote");
  z->sandbox_ = std::move(sb.value());
  z->control_ = std::move(pair->first);
  pair->second.reset();
  auto ready = receive_message(z->control_.get(), kStartTimeout, "start the python runtime zygote");
  if (!ready.ok()) {
    (void)z->sandbox_->kill();
    (void)z->sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline);
    return ready.error();
  }
  // It never runs tenant code: its count is the base its forks' are checked against.
  z->base_filters_ = seccomp_filter_count(z->sandbox_->pid());
  if (z->base_filters_ < 1) {
    (void)z->sandbox_->kill();
    (void)z->sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline);
    return plain_error("start the python runtime zygote", "it runs without a seccomp filter");
  }
  return z;
}

RuntimeZygote::~RuntimeZygote() {
  if (sandbox_) {
    (void)sandbox_->kill();
    (void)sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline);
  }
  std::error_code ec;
  std::filesystem::remove_all(spec_.work_dir, ec);
}

bool RuntimeZygote::alive() const { return sandbox_ && sandbox_->alive() && !broken_; }

Result<std::unique_ptr<FunctionZygote>> RuntimeZygote::fork_function(const FunctionZygoteSpec& spec,
                                                                     CgroupBackend& cgroups) {
  const std::string what = "start the zygote of " + spec.function;
  if (!spec.id) return plain_error(what, "no id index given");
  const uint32_t id_index = spec.id->index();
  if (id_index == 0 || id_index >= spec_.host_id_count)
    return plain_error(what, "id index " + std::to_string(id_index) + " is outside the zygote's id block");
  const uint32_t host_id = spec_.host_id + id_index;
  std::unique_ptr<FunctionZygote> fz(new FunctionZygote());
  fz->id_ = spec.id;
  fz->function_ = spec.function;
  fz->version_ = spec.version;
  fz->host_id_ = host_id;
  // The runtime zygote's filters, the function zygote's, the instance's default one.
  fz->min_instance_filters_ = base_filters_ + 2;

  // Its code, in a directory only its own uid can enter (the runtime zygote
  // binds all of them; the others' are closed to it).
  // Named per zygote as well as per id: ids outlive a runtime zygote.
  const std::string code_dir_name = std::to_string(id_index) + "-" + std::to_string(++made_);
  fz->code_link_dir_ = spec_.work_dir + "/functions/" + code_dir_name;
  std::error_code ec;
  std::filesystem::remove_all(fz->code_link_dir_, ec);
  STOKE_TRY(make_dirs(fz->code_link_dir_, 0755));
  STOKE_TRY(link_code_tree(spec.code_dir, fz->code_link_dir_));
  if (::chown(fz->code_link_dir_.c_str(), host_id, host_id) != 0 || ::chmod(fz->code_link_dir_.c_str(), 0500) != 0)
    return sys_error("give the zygote's code directory to its uid");

  auto group = cgroups.create(zygote_group_name(),
                              CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = spec.cpus, .pids = spec.pids});
  if (!group.ok()) return group.error().context(what);
  auto pair = seqpacket_pair();
  if (!pair.ok()) return pair.error();
  auto null = open_dev_null();
  if (!null.ok()) return null.error();

  auto zygote_filter = seccomp_program(SeccompProfile::kFunctionZygote);
  if (!zygote_filter.ok()) return zygote_filter.error();
  auto instance_filter = seccomp_program(SeccompProfile::kDefault);
  if (!instance_filter.ok()) return instance_filter.error();
  json env = json::object();
  for (const auto& kv : spec.env) {
    size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  json request = {{"op", "function"},
                  {"code_source", "/functions/" + code_dir_name},
                  {"id_index", id_index},
                  {"code_path", spec.code_path},
                  {"entry", spec.entry},
                  {"hostname", "stoke"},
                  {"tmp_bytes", spec.tmp_bytes},
                  {"zygote_seccomp", hex_of(*zygote_filter.value())},
                  {"instance_seccomp", hex_of(*instance_filter.value())}};
  std::vector<int> fds = {pair->second.get(), null->get()};
  for (int fd : group.value()->attach_fds()) fds.push_back(fd);

  unique_fd pidfd;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return plain_error(what, "the runtime zygote is out of step (an earlier answer was lost)");
    Status sent = send_message(control_.get(), request, fds);
    if (!sent.ok()) {
      broken_ = true;
      return sent.error();
    }
    auto reply = receive_message(control_.get(), kForkTimeout, what);
    if (!reply.ok()) {
      if (reply.error().step != kAnswered) broken_ = true;
      return reply.error();
    }
    if (!reply->fd) return plain_error(what, "the runtime zygote sent no pidfd");
    pidfd = std::move(reply->fd);
  }
  pair->second.reset();
  fz->sandbox_ = Sandbox::adopt("fz-" + spec.function, std::move(pidfd), std::move(group.value()));
  fz->control_ = std::move(pair->first);
  auto fail = [&](Error e) -> Result<std::unique_ptr<FunctionZygote>> {
    fz->condemn();
    (void)fz->sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline);
    return e;
  };
  // The function's environment (its secrets) goes to its own zygote only, on
  // its own socket, after the fork: the runtime zygote, whose memory every
  // function zygote starts from, never holds any function's env.
  if (Status sent = send_message(fz->control_.get(), json{{"op", "env"}, {"env", env}}, {}); !sent.ok())
    return fail(sent.error().context(what));
  auto ready = receive_message(fz->control_.get(), spec.init_timeout, what);
  if (!ready.ok()) {
    // Its own answer (the code failed to load, threads at import) is final
    // for this code; anything else (it died, no answer) may be transient.
    Error e = ready.error();
    if (e.step == kAnswered) e.step = kFunctionRefused;
    return fail(e);
  }
  // Joined its cgroup by now (before it imported anything); checked, like
  // every fork, rather than taken on trust.
  auto proven = verify_pidfd_in_group(fz->sandbox_->pidfd(), fz->sandbox_->cgroup().paths());
  if (!proven.ok() || proven.value() != fz->sandbox_->pid())
    return fail(proven.ok() ? plain_error(what, "its pidfd changed process") : proven.error().context(what));
  return fz;
}

// ---- function zygote -------------------------------------------------------

FunctionZygote::~FunctionZygote() {
  bool gone = true;
  if (sandbox_) {
    condemn();
    gone = sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline).ok();
  }
  if (!code_link_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(code_link_dir_, ec);
    if (ec || std::filesystem::exists(code_link_dir_, ec)) gone = false;
  }
  // Its id goes back with id_ (destroyed after this body), unless something
  // owned by it may still be there.
  if (!gone && id_) id_->keep_forever();
}

// ---- id block --------------------------------------------------------------

std::shared_ptr<ZygoteIdBlock> ZygoteIdBlock::make(uint32_t count) {
  std::shared_ptr<ZygoteIdBlock> b(new ZygoteIdBlock(count));
  if (count > 0) b->used_[0] = true;  // the runtime zygote's own
  return b;
}

std::shared_ptr<ZygoteIdBlock::Lease> ZygoteIdBlock::take() {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 1; i < used_.size(); ++i) {
    if (used_[i]) continue;
    used_[i] = true;
    return std::shared_ptr<Lease>(new Lease(shared_from_this(), i));
  }
  return nullptr;
}

size_t ZygoteIdBlock::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(std::count(used_.begin(), used_.end(), true));
}

void ZygoteIdBlock::give_back(uint32_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  if (index < used_.size()) used_[index] = false;
}

ZygoteIdBlock::Lease::~Lease() {
  if (!forever_) block_->give_back(index_);
}

bool FunctionZygote::alive() const { return sandbox_ && sandbox_->alive() && !broken_; }

void FunctionZygote::condemn() {
  broken_ = true;
  (void)sandbox_->kill();
  // Its pid namespace dies with it; anything it moved elsewhere in its own
  // cgroup goes too.
  (void)sandbox_->cgroup().kill_all();
}

bool FunctionZygote::wait_gone(std::chrono::milliseconds timeout) const {
  if (!alive()) return true;
  pollfd p{sandbox_->pidfd(), POLLIN, 0};
  int n;
  do n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  while (n < 0 && errno == EINTR);
  return n > 0;
}

Result<std::unique_ptr<Sandbox>> FunctionZygote::fork_instance(const InstanceFork& fork, CgroupBackend& cgroups) {
  const std::string what = "fork an instance of " + function_ + " from its zygote";
  std::lock_guard<std::mutex> lock(mu_);
  std::string name;
  std::unique_ptr<CgroupGroup> made;
  const CgroupLimits& l = fork.limits;
  if (spare_group_ && spare_limits_.memory_bytes == l.memory_bytes && spare_limits_.cpus == l.cpus &&
      spare_limits_.pids == l.pids) {
    made = std::move(spare_group_);
    name = std::move(spare_name_);
  } else {
    name = zygote_group_name();
    auto group = cgroups.create(name, l);
    if (!group.ok()) return group.error().context(what);
    made = std::move(group.value());
  }
  // A failed fork leaves nothing behind: whatever joined the group is killed
  // with it.
  auto fail = [&](Error e, bool untrusted) -> Result<std::unique_ptr<Sandbox>> {
    (void)made->destroy();
    if (untrusted) {
      e.detail = e.step + ": " + e.detail;
      e.step = kZygoteUntrusted;
      condemn();
    }
    return e;
  };
  if (broken_) return fail(plain_error(what, "the zygote is out of step or condemned"), false);
  json request = {{"op", "fork"}, {"hostname", "stoke"}, {"tmp_bytes", fork.tmp_bytes}};
  std::vector<int> fds = {fork.stdin_fd, fork.log_fd, fork.result_fd};
  for (int fd : made->attach_fds()) fds.push_back(fd);
  if (Status sent = send_message(control_.get(), request, fds); !sent.ok()) {
    broken_ = true;
    return fail(sent.error(), false);
  }
  auto reply = receive_message(control_.get(), kForkTimeout, what);
  if (!reply.ok()) {
    if (reply.error().step != kAnswered) broken_ = true;  // lost or late: out of step
    return fail(reply.error(), false);
  }
  if (!reply->fd) return fail(plain_error(what, "the zygote sent no pidfd"), true);
  // The zygote runs the tenant's code: its answer is proven, not believed.
  auto proven = verify_instance_fork(
      reply->fd.get(), ForkExpectation{.zygote_pid = sandbox_->pid(),
                                       .group_dirs = made->paths(),
                                       .host_uid = host_id_,
                                       .min_seccomp_filters = min_instance_filters_});
  if (!proven.ok()) return fail(proven.error().context(what), true);
  ++forks_;
  return Sandbox::adopt(name, std::move(reply->fd), std::move(made));
}

void FunctionZygote::prepare_group(const CgroupLimits& limits, CgroupBackend& cgroups) {
  std::lock_guard<std::mutex> lock(mu_);
  if (spare_group_) return;
  std::string name = zygote_group_name();
  auto group = cgroups.create(name, limits);
  if (!group.ok()) return;  // the next fork makes its own
  spare_group_ = std::move(group.value());
  spare_name_ = std::move(name);
  spare_limits_ = limits;
}

}  // namespace stoke::agent
