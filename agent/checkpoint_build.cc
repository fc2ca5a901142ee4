#include "agent/checkpoint_build.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <vector>

#include "sandbox/base/file_util.h"

namespace stoke::agent {
namespace {

constexpr int kDumpFd = 4;  // where the runtime finds its dump file

// An unnamed file in `dir` (gone when its last fd closes).
Result<unique_fd> temp_file(const std::string& dir) {
  unique_fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) return sys_error("create a temp file in " + dir);
  return fd;
}

std::string tail_of(int fd, size_t max) {
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) return "";
  off_t from = size > static_cast<off_t>(max) ? size - static_cast<off_t>(max) : 0;
  std::string out(static_cast<size_t>(size - from), '\0');
  ssize_t n = ::pread(fd, out.data(), out.size(), from);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// Reads the image once from here, so its page cache is charged to the
// agent's cgroup rather than to the first instance that touches it (whose
// group would then carry memory every restored copy shares).
void prefault(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return;
  std::vector<char> buf(1 << 20);
  while (::read(fd.get(), buf.data(), buf.size()) > 0) {
  }
}

}  // namespace

Result<image::ImageInfo> build_checkpoint_image(Spawner& spawner, const InstanceSpec& spec,
                                                const std::string& images_dir, std::chrono::milliseconds timeout) {
  const std::string what = "checkpoint " + spec.function + " v" + std::to_string(spec.version);
  if (spec.runtime != v1::PYTHON) return plain_error(what, "only Python functions can be checkpointed");
  STOKE_TRY(make_dirs(images_dir, 0700));
  auto dump = temp_file(images_dir);
  if (!dump.ok()) return dump.error();
  auto logs = temp_file(images_dir);
  if (!logs.ok()) return logs.error();
  int result[2];
  if (pipe2(result, O_CLOEXEC) != 0) return sys_error("checkpoint result pipe");
  unique_fd result_read(result[0]), result_write(result[1]);
  unique_fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return sys_error("open /dev/null");

  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.argv = {"/usr/bin/python3", "/runtime/python/stoke_runtime.py", "--checkpoint", std::to_string(kDumpFd),
            spec.code_path, spec.entry};
  s.fds = {{null.get(), 0}, {logs->get(), 1}, {logs->get(), 2}, {result_write.get(), 3}, {dump->get(), kDumpFd}};
  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error().context(what);
  result_write.reset();

  // One line on fd 3: {"checkpointed": true}, or {"error": ...}; then it exits.
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (char c; line.find('\n') == std::string::npos;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{result_read.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = ::read(result_read.get(), &c, 1);
    if (n <= 0) break;
    line.push_back(c);
  }
  auto st = (*sandbox)->wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  if (line.rfind("{\"checkpointed\": true}", 0) != 0) {
    std::string said = line.empty() ? tail_of(logs->get(), 2000) : line.substr(0, line.find('\n'));
    std::string how = !st.ok() ? st.error().message()
                      : st->timed_out ? "did not finish in time"
                      : st->signal   ? "killed by signal " + std::to_string(st->signal)
                                     : "exit code " + std::to_string(st->exit_code);
    return plain_error(what, "the runtime did not checkpoint (" + how + ")" + (said.empty() ? "" : ": " + said));
  }
  if (!st.ok()) return st.error().context(what);
  image::ImageLabels labels;
  labels.function_id = spec.function;
  labels.function_version = std::to_string(spec.version);
  labels.extra["code"] = spec.code_dir.substr(spec.code_dir.rfind('/') + 1);
  labels.extra["entry"] = spec.entry;
  auto info = image::finalize_image(dump->get(), images_dir, labels);
  if (!info.ok()) return info.error().context(what);
  prefault(info->path);
  return info;
}

}  // namespace stoke::agent
