#include "agent/instance.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>

#include "sandbox/image/restore_abi.h"

namespace stoke::agent {
namespace {

// A pipe whose agent-side end is non-blocking (io_uring then polls instead of
// parking a kernel worker on it) and close-on-exec; the sandbox side is
// handed to the spawner, which places it at the runtime's fd.
struct Pipe {
  unique_fd agent_end, sandbox_end;
};

Result<Pipe> make_pipe(bool agent_reads) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return sys_error("create runtime pipe");
  Pipe p;
  p.agent_end.reset(agent_reads ? fds[0] : fds[1]);
  p.sandbox_end.reset(agent_reads ? fds[1] : fds[0]);
  int flags = fcntl(p.agent_end.get(), F_GETFL);
  if (flags < 0 || fcntl(p.agent_end.get(), F_SETFL, flags | O_NONBLOCK) != 0)
    return sys_error("make runtime pipe non-blocking");
  return p;
}

}  // namespace

Result<std::unique_ptr<Instance>> Instance::start(Spawner& spawner, const InstanceSpec& spec) {
  auto t0 = std::chrono::steady_clock::now();
  auto request = make_pipe(/*agent_reads=*/false);
  if (!request.ok()) return request.error();
  auto result = make_pipe(true);
  if (!result.ok()) return result.error();
  auto log = make_pipe(true);
  if (!log.ok()) return log.error();

  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.fds = {{request->sandbox_end.get(), 0},
           {log->sandbox_end.get(), 1},
           {log->sandbox_end.get(), 2},
           {result->sandbox_end.get(), 3}};

  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error();
  std::unique_ptr<Instance> inst(new Instance());
  inst->sandbox_ = std::move(sandbox.value());
  inst->request_ = std::move(request->agent_end);
  inst->result_ = std::move(result->agent_end);
  inst->log_ = std::move(log->agent_end);
  // The sandbox ends close when `request`, `result`, `log` go out of scope: the
  // sandbox holds its own copies, so EOF on ours means the runtime is gone.
  inst->code_dir_ = spec.code_dir;
  inst->init_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return inst;
}

Result<SandboxSpec> sandbox_spec_for(const InstanceSpec& spec) {
  SandboxSpec s;
  switch (spec.runtime) {
    case v1::EXEC:
      s.argv = {spec.executable};
      break;
    case v1::PYTHON:
      // Debian's interpreter by absolute path (a PATH lookup could find another).
      s.argv = {"/usr/bin/python3", "/runtime/python/stoke_runtime.py", spec.code_path, spec.entry};
      break;
    case v1::NODE:
      s.argv = {"/usr/bin/node", "/runtime/node/stoke_runtime.js", spec.code_path, spec.entry};
      break;
    default:
      return plain_error("start instance", "unknown runtime " + v1::Runtime_Name(spec.runtime));
  }
  if (spec.runtime != v1::EXEC) s.binds.push_back({spec.runtimes_dir, "/runtime", false});
  s.env = default_sandbox_env();
  s.env.insert(s.env.end(), spec.env.begin(), spec.env.end());
  s.workdir = "/code";
  s.hostname = "stoke";
  s.binds.push_back({spec.code_dir, "/code", false});
  s.tmp_size_bytes = spec.tmp_bytes;
  s.limits.memory_bytes = spec.memory_bytes;
  s.limits.cpus = spec.cpus;
  s.limits.pids = spec.pids;
  s.host_uid = s.host_gid = spec.host_uid;
  return s;
}

namespace {

// One line from a runtime's non-blocking fd 3, within `timeout`.
Result<std::string> read_line(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line;
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);  // byte by byte: nothing after the line is taken
    if (n == 1) {
      if (c == '\n') return line;
      if (line.size() > 4096) return plain_error("read runtime line", "line too long");
      line.push_back(c);
      continue;
    }
    if (n == 0) return plain_error("read runtime line", "the runtime exited");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return sys_error("read runtime line");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return plain_error("read runtime line", "no answer within " + std::to_string(timeout.count()) + " ms");
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

std::string read_available(int fd, size_t max) {
  std::string out;
  char buf[512];
  ssize_t n;
  while (out.size() < max && (n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

Result<std::unique_ptr<Instance>> Instance::restore(Spawner& spawner, const InstanceSpec& spec,
                                                    const std::string& image_path, bool wait_ready) {
  auto t0 = std::chrono::steady_clock::now();
  unique_fd image(::open(image_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!image) return sys_error("restore image: open " + image_path);
  auto request = make_pipe(/*agent_reads=*/false);
  if (!request.ok()) return request.error();
  auto result = make_pipe(true);
  if (!result.ok()) return result.error();
  auto log = make_pipe(true);
  if (!log.ok()) return log.error();
  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.argv = {image::kRestorerPathInSandbox};
  s.fds = {{request->sandbox_end.get(), 0},
           {log->sandbox_end.get(), 1},
           {log->sandbox_end.get(), 2},
           {result->sandbox_end.get(), 3},
           {image.get(), image::kRestoreImageFd}};
  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error();
  std::unique_ptr<Instance> inst(new Instance());
  inst->sandbox_ = std::move(sandbox.value());
  inst->request_ = std::move(request->agent_end);
  inst->result_ = std::move(result->agent_end);
  inst->log_ = std::move(log->agent_end);
  inst->code_dir_ = spec.code_dir;
  request->sandbox_end.reset();
  result->sandbox_end.reset();
  log->sandbox_end.reset();
  if (!wait_ready) {
    inst->init_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return inst;
  }
  auto ready = read_line(inst->result_fd(), std::chrono::seconds(5));
  if (!ready.ok() || ready->rfind("{\"ready\": true, \"restored\": true}", 0) != 0) {
    std::string said = read_available(inst->log_fd(), 2048);
    (void)inst->sandbox_->kill();
    auto st = inst->sandbox_->wait();
    std::string how = !st.ok() ? st.error().message()
                      : st->signal ? "killed by signal " + std::to_string(st->signal)
                                   : "exit code " + std::to_string(st->exit_code);
    return plain_error("restore image", (ready.ok() ? "unexpected first line '" + ready.value() + "'" : ready.error().message()) +
                                            " (" + how + ")" + (said.empty() ? "" : ": " + said));
  }
  inst->init_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return inst;
}

Result<std::unique_ptr<Instance>> Instance::fork_from(std::shared_ptr<FunctionZygote> zygote, CgroupBackend& cgroups,
                                                      const InstanceSpec& spec) {
  auto t0 = std::chrono::steady_clock::now();
  auto request = make_pipe(/*agent_reads=*/false);
  if (!request.ok()) return request.error();
  auto result = make_pipe(true);
  if (!result.ok()) return result.error();
  auto log = make_pipe(true);
  if (!log.ok()) return log.error();
  InstanceFork fork;
  fork.stdin_fd = request->sandbox_end.get();
  fork.log_fd = log->sandbox_end.get();
  fork.result_fd = result->sandbox_end.get();
  fork.limits = CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = spec.cpus, .pids = spec.pids};
  fork.tmp_bytes = spec.tmp_bytes;
  auto sandbox = zygote->fork_instance(fork, cgroups);
  if (!sandbox.ok()) return sandbox.error();
  std::unique_ptr<Instance> inst(new Instance());
  inst->sandbox_ = std::move(sandbox.value());
  inst->request_ = std::move(request->agent_end);
  inst->result_ = std::move(result->agent_end);
  inst->log_ = std::move(log->agent_end);
  inst->code_dir_ = spec.code_dir;
  inst->origin_ = std::move(zygote);
  inst->init_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return inst;
}

Instance::~Instance() {
  // The sandbox first (its bind of the directory goes with its namespace).
  sandbox_.reset();
  if (!owned_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(owned_dir_, ec);
  }
}


}  // namespace stoke::agent
