#include "tests/util/restore_util.h"

#include <fcntl.h>
#include <poll.h>

#include <filesystem>
#include <unistd.h>

#include "sandbox/base/file_util.h"
#include "sandbox/id_map.h"

namespace stoke::test {
namespace {

using Clock = std::chrono::steady_clock;

struct Pipe {
  unique_fd read, write;
};

Result<Pipe> make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe2");
  return Pipe{unique_fd(fds[0]), unique_fd(fds[1])};
}

}  // namespace

std::string runtimes_dir() {
  return std::filesystem::path(std::string(STOKE_BIN_DIR) + "/../share/stoke/runtimes").lexically_normal().string();
}

SandboxSpec restore_test_spec(uint32_t host_id) {
  SandboxSpec s;
  s.argv = {"/usr/bin/python3", "/code/restore_driver.py", "5"};
  s.env = default_sandbox_env();
  s.env.push_back("PYTHONPATH=/runtime/python");
  s.env.push_back("PYTHONDONTWRITEBYTECODE=1");
  s.binds = {{runtimes_dir(), "/runtime", false},
             {std::string(STOKE_SOURCE_DIR) + "/tests/priv", "/code", false},
             {std::string(STOKE_BIN_DIR) + "/stoke-probe", "/probe", false}};
  s.host_uid = s.host_gid = host_id;
  return s;
}

Result<image::ImageInfo> make_driver_image(Spawner& spawner, const std::string& images_dir) {
  std::string dump_path = images_dir + "/driver.dump";
  STOKE_TRY(make_dirs(images_dir, 0755));
  unique_fd dump(::open(dump_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!dump) return sys_error("create " + dump_path);
  SandboxSpec spec = restore_test_spec(host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid())));
  // The sandbox's root is an unprivileged host uid: let it write the dump.
  if (fchown(dump.get(), spec.host_uid, spec.host_gid) != 0) return sys_error("fchown " + dump_path);
  spec.fds.push_back({dump.get(), 5});
  auto inst = Instance::spawn(spawner, spec);
  if (!inst.ok()) return inst.error();
  auto line = inst.value()->read_json(std::chrono::seconds(20));
  if (!line.ok()) return line.error().context("checkpoint");
  if (!line.value().value("checkpointed", false))
    return plain_error("checkpoint", "unexpected first line " + line.value().dump());
  auto st = inst.value()->wait(std::chrono::seconds(10));
  if (!st.ok()) return st.error();
  ::unlink(dump_path.c_str());
  return image::finalize_image(dump.get(), images_dir, {.function_id = "restore-driver", .function_version = "1"});
}

Result<std::unique_ptr<Instance>> Instance::spawn(Spawner& spawner, SandboxSpec spec) {
  auto in = make_pipe();
  auto out = make_pipe();
  auto err = make_pipe();
  if (!in.ok()) return in.error();
  if (!out.ok()) return out.error();
  if (!err.ok()) return err.error();
  // Replace 0-2, keep any extra fds of the spec.
  std::vector<FdMapping> fds{{in->read.get(), 0}, {out->write.get(), 1}, {err->write.get(), 2}};
  for (const auto& m : spec.fds)
    if (m.target > 2) fds.push_back(m);
  spec.fds = fds;
  // Spawner::spawn hangs in ~Sandbox when validation fails (it returns before
  // marking the unborn sandbox reaped): validate here first.
  STOKE_TRY(validate_spec(spec));
  auto sb = spawner.spawn(spec);
  if (!sb.ok()) return sb.error();
  std::unique_ptr<Instance> inst(new Instance());
  inst->sandbox_ = std::move(sb.value());
  inst->stdin_ = std::move(in->write);
  inst->stdout_ = std::move(out->read);
  inst->stderr_ = std::move(err->read);
  fcntl(inst->stderr_.get(), F_SETFL, O_NONBLOCK);
  return inst;
}

Result<std::unique_ptr<Instance>> Instance::restore(Spawner& spawner, SandboxSpec spec, const std::string& image) {
  unique_fd img(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!img) return sys_error("open " + image);
  spec.argv = {image::kRestorerPathInSandbox};
  spec.fds.push_back({img.get(), image::kRestoreImageFd});
  return spawn(spawner, std::move(spec));
}

std::string Instance::drain_stderr() {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(stderr_.get(), buf, sizeof buf);
    if (n <= 0) break;
    err_buf_.append(buf, static_cast<size_t>(n));
  }
  return err_buf_;
}

Result<nlohmann::json> Instance::read_json(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    size_t nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      try {
        return nlohmann::json::parse(line);
      } catch (const std::exception&) {
        return plain_error("read_json", "not JSON: " + line + "; stderr: " + drain_stderr());
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return plain_error("read_json", "timed out; stderr: " + drain_stderr());
    pollfd p{stdout_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[65536];
    ssize_t n = ::read(stdout_.get(), buf, sizeof buf);
    if (n <= 0) return plain_error("read_json", "EOF on stdout; stderr: " + drain_stderr());
    out_buf_.append(buf, static_cast<size_t>(n));
  }
}

Status Instance::send(const nlohmann::json& command) {
  std::string line = command.dump() + "\n";
  if (::write(stdin_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) return sys_error("write stdin");
  return {};
}

Result<nlohmann::json> Instance::request(const nlohmann::json& command, std::chrono::milliseconds timeout) {
  STOKE_TRY(send(command));
  return read_json(timeout);
}

Result<ExitStatus> Instance::wait(std::chrono::milliseconds timeout) {
  stdin_.reset();
  auto st = sandbox_->wait(Clock::now() + timeout);
  drain_stderr();
  return st;
}

}  // namespace stoke::test
