#include "agent/instance.h"

#include <fcntl.h>
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

// The three pipes of the runtime protocol (header comment).
struct Instance::Pipes {
  Pipe request, result, log;
  static Result<Pipes> make() {
    Pipes p;
    auto request = make_pipe(/*agent_reads=*/false);
    if (!request.ok()) return request.error();
    auto result = make_pipe(true);
    if (!result.ok()) return result.error();
    auto log = make_pipe(true);
    if (!log.ok()) return log.error();
    p.request = std::move(request.value());
    p.result = std::move(result.value());
    p.log = std::move(log.value());
    return p;
  }
  // The sandbox's ends at the runtime's fds: 0, 1 and 2 (one log pipe), 3.
  std::vector<FdMapping> sandbox_fds() const {
    return {{request.sandbox_end.get(), 0},
            {log.sandbox_end.get(), 1},
            {log.sandbox_end.get(), 2},
            {result.sandbox_end.get(), 3}};
  }
};

std::unique_ptr<Instance> Instance::assemble(std::unique_ptr<Sandbox> sandbox, Pipes& pipes, const InstanceSpec& spec,
                                             std::chrono::steady_clock::time_point started) {
  std::unique_ptr<Instance> inst(new Instance());
  inst->sandbox_ = std::move(sandbox);
  inst->request_ = std::move(pipes.request.agent_end);
  inst->result_ = std::move(pipes.result.agent_end);
  inst->log_ = std::move(pipes.log.agent_end);
  // The sandbox ends close when `pipes` goes out of scope: the sandbox holds
  // its own copies, so EOF on ours means the runtime is gone.
  inst->code_dir_ = spec.code_dir;
  inst->init_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  return inst;
}

Result<std::unique_ptr<Instance>> Instance::start(Spawner& spawner, const InstanceSpec& spec) {
  auto t0 = std::chrono::steady_clock::now();
  auto pipes = Pipes::make();
  if (!pipes.ok()) return pipes.error();
  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.fds = pipes->sandbox_fds();
  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error();
  return assemble(std::move(sandbox.value()), pipes.value(), spec, t0);
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


Result<std::unique_ptr<Instance>> Instance::restore(Spawner& spawner, const InstanceSpec& spec,
                                                    const std::string& image_path) {
  auto t0 = std::chrono::steady_clock::now();
  unique_fd image(::open(image_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!image) return sys_error("restore image: open " + image_path);
  auto pipes = Pipes::make();
  if (!pipes.ok()) return pipes.error();
  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.argv = {image::kRestorerPathInSandbox};
  s.fds = pipes->sandbox_fds();
  s.fds.push_back({image.get(), image::kRestoreImageFd});
  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error();
  return assemble(std::move(sandbox.value()), pipes.value(), spec, t0);
}

Result<std::unique_ptr<Instance>> Instance::fork_from(std::shared_ptr<FunctionZygote> zygote, CgroupBackend& cgroups,
                                                      const InstanceSpec& spec) {
  auto t0 = std::chrono::steady_clock::now();
  auto pipes = Pipes::make();
  if (!pipes.ok()) return pipes.error();
  InstanceFork fork;
  fork.stdin_fd = pipes->request.sandbox_end.get();
  fork.log_fd = pipes->log.sandbox_end.get();
  fork.result_fd = pipes->result.sandbox_end.get();
  fork.limits = CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = spec.cpus, .pids = spec.pids};
  fork.tmp_bytes = spec.tmp_bytes;
  auto sandbox = zygote->fork_instance(fork, cgroups);
  if (!sandbox.ok()) return sandbox.error();
  auto inst = assemble(std::move(sandbox.value()), pipes.value(), spec, t0);
  inst->origin_ = std::move(zygote);
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
