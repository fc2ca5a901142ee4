#include "agent/zygote.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include <nlohmann/json.hpp>

#include "agent/json_limits.h"
#include "agent/zygote_verify.h"
#include "sandbox/base/file_util.h"
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
    e.step = "the zygote refused";
    e.cause = ErrorCause::kPeerRefused;
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

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return sys_error("write");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
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

// ---- function zygote: start -------------------------------------------------

Result<std::unique_ptr<FunctionZygote>> FunctionZygote::start(Spawner& spawner, const FunctionZygoteSpec& spec) {
  const std::string what = "start the zygote of " + spec.function;
  if (!spec.id) return plain_error(what, "no id index given");
  std::unique_ptr<FunctionZygote> fz(new FunctionZygote());
  fz->id_ = spec.id;
  fz->function_ = spec.function;
  fz->version_ = spec.version;
  fz->host_id_ = spec.host_id_base + spec.id->index();

  auto pair = seqpacket_pair();
  if (!pair.ok()) return pair.error().context(what);
  auto null = open_dev_null();
  if (!null.ok()) return null.error().context(what);
  auto zygote_filter = seccomp_program(SeccompProfile::kFunctionZygote);
  if (!zygote_filter.ok()) return zygote_filter.error().context(what);
  auto instance_filter = seccomp_program(SeccompProfile::kDefault);
  if (!instance_filter.ok()) return instance_filter.error().context(what);
  // The zygote's filter reaches its maker as a file: the maker stacks it on
  // the zygote before exec, before anything of the tenant's exists there.
  unique_fd filter_file(::memfd_create("stoke-zygote-filter", MFD_CLOEXEC));
  if (!filter_file) return sys_error(what + ": memfd for the zygote's filter");
  const auto& insns = zygote_filter.value()->instructions;
  if (Status w = write_all(filter_file.get(), std::string_view(reinterpret_cast<const char*>(insns.data()),
                                                               insns.size() * sizeof(sock_filter)));
      !w.ok())
    return w.error().context(what);

  SandboxSpec s;
  s.argv = {"/runtime/zygote/stoke-zygote-maker", std::to_string(spec.tmp_bytes), "--", "/usr/bin/python3",
            "/runtime/python/stoke_zygote.py"};
  s.argv.insert(s.argv.end(), spec.preload.begin(), spec.preload.end());
  s.env = default_sandbox_env();  // the function's own env goes to the zygote alone, below
  s.workdir = "/code";
  s.hostname = "stoke";
  s.binds = {{spec.runtimes_dir, "/runtime", false}, {spec.code_dir, "/code", false}};
  s.tmp_size_bytes = spec.tmp_bytes;
  s.limits = CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = spec.cpus, .pids = spec.pids};
  s.host_uid = s.host_gid = fz->host_id_;
  s.host_id_count = 1;
  s.zygote = true;
  s.fds = {{null->get(), 0}, {null->get(), 1}, {null->get(), 2}, {pair->second.get(), 3}, {filter_file.get(), 4}};
  auto sb = spawner.spawn(s);
  if (!sb.ok()) return sb.error().context(what);
  fz->sandbox_ = std::move(sb.value());
  fz->control_ = std::move(pair->first);
  pair->second.reset();
  auto fail = [&](Error e) -> Result<std::unique_ptr<FunctionZygote>> {
    fz->condemn();
    (void)fz->sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline);
    return e;
  };
  // The maker never runs tenant code: its filter count is the base every
  // fork is checked against (+ the zygote's filter + the instance's).
  const int base_filters = seccomp_filter_count(fz->sandbox_->pid());
  if (base_filters < 1) return fail(plain_error(what, "its maker runs without a seccomp filter"));
  fz->min_instance_filters_ = base_filters + 2;

  // Before any tenant code, the zygote names itself with a pidfd. Proven, not
  // believed: the maker's child, inside the zygote's cgroup.
  auto started = receive_message(fz->control_.get(), kStartTimeout, what);
  if (!started.ok()) return fail(started.error());
  if (!started->fd) return fail(plain_error(what, "the zygote sent no pidfd of itself"));
  auto proven = verify_pidfd_in_group(started->fd.get(), fz->sandbox_->cgroup().paths());
  if (!proven.ok()) return fail(proven.error().context(what));
  if (parent_pid_of(proven.value()) != fz->sandbox_->pid())
    return fail(plain_error(what, "the process that answered is not its maker's child"));
  fz->zygote_pid_ = proven.value();
  fz->zygote_pidfd_ = std::move(started->fd);

  // The function's environment (its secrets) goes to its own zygote only.
  json env = json::object();
  for (const auto& kv : spec.env) {
    size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  json request = {{"op", "function"},
                  {"code_path", spec.code_path},
                  {"entry", spec.entry},
                  {"env", env},
                  {"instance_seccomp", hex_of(*instance_filter.value())}};
  if (Status sent = send_message(fz->control_.get(), request, {}); !sent.ok()) return fail(sent.error().context(what));
  auto ready = receive_message(fz->control_.get(), spec.init_timeout, what);
  if (!ready.ok()) {
    // Its own answer (the code failed to load, threads at import) is final
    // for this code; anything else (it died, no answer) may be transient.
    Error e = ready.error();
    if (e.cause == ErrorCause::kPeerRefused) e.step = "function zygote refused";
    return fail(e);
  }
  return fz;
}

// ---- function zygote -------------------------------------------------------

FunctionZygote::~FunctionZygote() {
  bool gone = true;
  if (sandbox_) {
    condemn();
    gone = sandbox_->wait(std::chrono::steady_clock::now() + kZygoteTeardownDeadline).ok();
  }
  // Its id goes back with id_ (destroyed after this body), unless something
  // owned by it may still be there.
  if (!gone && id_) id_->keep_forever();
}

// ---- id block --------------------------------------------------------------

std::shared_ptr<ZygoteIdBlock> ZygoteIdBlock::make(uint32_t count) {
  std::shared_ptr<ZygoteIdBlock> b(new ZygoteIdBlock(count));
  if (count > 0) b->used_[0] = true;  // never handed out
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
      e.step = "zygote fork failed verification";
      e.cause = ErrorCause::kPeerUntrusted;
      condemn();
    }
    return e;
  };
  if (broken_) return fail(plain_error(what, "the zygote is out of step or condemned"), false);
  json request = {{"op", "fork"}};
  std::vector<int> fds = {fork.stdin_fd, fork.log_fd, fork.result_fd};
  for (int fd : made->attach_fds()) fds.push_back(fd);
  if (Status sent = send_message(control_.get(), request, fds); !sent.ok()) {
    broken_ = true;
    return fail(sent.error(), false);
  }
  auto reply = receive_message(control_.get(), kForkTimeout, what);
  if (!reply.ok()) {
    if (reply.error().cause != ErrorCause::kPeerRefused) broken_ = true;  // lost or late: out of step
    return fail(reply.error(), false);
  }
  if (!reply->fd) return fail(plain_error(what, "the zygote sent no pidfd"), true);
  // The zygote runs the tenant's code: its answer is proven, not believed.
  auto proven = verify_instance_fork(
      reply->fd.get(), ForkExpectation{.maker_pid = sandbox_->pid(),
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
