#include "agent/checkpoint_build.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include <openssl/evp.h>

#include "api/wire/protocol.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {
namespace {

constexpr int kDumpFd = 4;  // where the runtime finds its dump file

// An unnamed file in `dir` (gone when its last fd closes), also where the
// state dir's filesystem has no O_TMPFILE (overlayfs before Linux 6.6).
Result<unique_fd> temp_file(const std::string& dir) { return unnamed_file_in(dir); }

// The build's stdout and stderr: only the tail is ever shown (in the error of
// a failed build), so it is kept in memory from a pipe instead of a file on
// the state filesystem, which a chatty import could fill.
constexpr size_t kLogTailBytes = 2000;

void keep_tail(std::string& tail, const char* data, size_t n) {
  tail.append(data, n);
  if (tail.size() > 2 * kLogTailBytes) tail.erase(0, tail.size() - kLogTailBytes);
}

std::string trimmed_tail(std::string tail) {
  if (tail.size() > kLogTailBytes) tail.erase(0, tail.size() - kLogTailBytes);
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  return tail;
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

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 0xf];
  }
  return hex;
}

// Each field framed by its length: no two distinct tuples serialise alike.
void frame(std::string& out, const std::string& field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
  out += ';';
}

std::string code_sha_of(const InstanceSpec& spec) { return spec.code_dir.substr(spec.code_dir.rfind('/') + 1); }

}  // namespace

uint64_t checkpoint_dump_limit(const InstanceSpec& spec) {
  uint64_t memory = spec.memory_bytes ? spec.memory_bytes : 256ULL << 20;
  return memory + (32ULL << 20);
}

std::string image_key(const InstanceSpec& spec, const std::string& runtime_id) {
  std::string text;
  frame(text, "stoke-image-key-v1");
  frame(text, spec.function);
  frame(text, std::to_string(static_cast<int>(spec.runtime)));
  frame(text, code_sha_of(spec));
  frame(text, spec.code_path);
  frame(text, spec.entry);
  std::vector<std::string> env = spec.env;
  std::sort(env.begin(), env.end());
  frame(text, std::to_string(env.size()));
  for (const auto& kv : env) frame(text, kv);
  frame(text, runtime_id);
  return sha256_hex(text);
}

std::string runtime_shim_id(const std::string& runtimes_dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(runtimes_dir + "/python", ec))
    if (e.is_regular_file(ec)) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string text;
  frame(text, wire::kAgentVersion);
  for (const auto& f : files) {
    auto data = read_file(f);
    frame(text, f);
    frame(text, data.ok() ? sha256_hex(data.value()) : "unreadable");
  }
  return sha256_hex(text);
}

Status check_image_labels(const image::Manifest& manifest, const InstanceSpec& spec, const std::string& key) {
  const auto& labels = manifest.labels();
  auto extra = [&](const char* name) -> std::string {
    auto it = labels.extra().find(name);
    return it == labels.extra().end() ? "" : it->second;
  };
  const std::string step = "image of another function version";
  if (labels.function_id() != spec.function)
    return plain_error(step, "it was made for function '" + labels.function_id() + "'");
  if (extra("key") != key) return plain_error(step, "its code, entry, env or runtime differ from this version's");
  if (extra("code") != code_sha_of(spec) || extra("entry") != spec.entry)
    return plain_error(step, "its code or entry differ from this version's");
  return {};
}

Result<image::ImageInfo> build_checkpoint_image(Spawner& spawner, const InstanceSpec& spec,
                                                const std::string& images_dir, std::chrono::milliseconds timeout,
                                                const std::string& key) {
  const std::string what = "checkpoint " + spec.function + " v" + std::to_string(spec.version);
  if (spec.runtime != v1::PYTHON) return plain_error(what, "only Python functions can be checkpointed");
  STOKE_TRY(make_dirs(images_dir, 0700));
  // Unnamed: whatever happens, the dump's space goes back when this returns.
  auto dump = temp_file(images_dir);
  if (!dump.ok()) return dump.error();
  int result[2];
  if (pipe2(result, O_CLOEXEC) != 0) return sys_error("checkpoint result pipe");
  unique_fd result_read(result[0]), result_write(result[1]);
  int log_pipe[2];
  if (pipe2(log_pipe, O_CLOEXEC) != 0) return sys_error("checkpoint log pipe");
  unique_fd logs_read(log_pipe[0]), logs_write(log_pipe[1]);
  unique_fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return sys_error("open /dev/null");

  auto built = sandbox_spec_for(spec);
  if (!built.ok()) return built.error();
  SandboxSpec s = std::move(built.value());
  s.argv = {"/usr/bin/python3", "/runtime/python/stoke_runtime.py", "--checkpoint", std::to_string(kDumpFd),
            spec.code_path, spec.entry};
  s.fds = {{null.get(), 0}, {logs_write.get(), 1}, {logs_write.get(), 2}, {result_write.get(), 3}, {dump->get(), kDumpFd}};
  auto sandbox = spawner.spawn(s);
  if (!sandbox.ok()) return sandbox.error().context(what);
  result_write.reset();
  logs_write.reset();

  // One line on fd 3: {"checkpointed": true}, or {"error": ...}; then it
  // exits. Its output is drained meanwhile (a full pipe would stall it).
  // The dump's disk use is watched meanwhile: a real dump writes only the
  // process's resident non-zero pages (its file is sparse), so more blocks
  // than the memory limit plus a margin means the function's own code is
  // writing to the dump fd to fill the state filesystem: stopped, refused.
  std::string line, log_tail, overgrown;
  const uint64_t dump_limit = checkpoint_dump_limit(spec);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (line.find('\n') == std::string::npos) {
    struct stat dst {};
    if (::fstat(dump->get(), &dst) == 0 && static_cast<uint64_t>(dst.st_blocks) * 512 > dump_limit) {
      overgrown = "its dump took more than " + std::to_string(dump_limit >> 20) + " MiB of disk";
      (void)(*sandbox)->kill();
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p[2] = {{result_read.get(), POLLIN, 0}, {logs_read.get(), POLLIN, 0}};
    int ready = ::poll(p, logs_read ? 2 : 1, static_cast<int>(std::min<int64_t>(left.count(), 50)));
    if (ready < 0) break;
    if (ready == 0) continue;
    if (logs_read && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = ::read(logs_read.get(), buf, sizeof buf);
      if (n > 0) keep_tail(log_tail, buf, static_cast<size_t>(n));
      else logs_read.reset();  // closed: no more output
    }
    if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char c;
      ssize_t n = ::read(result_read.get(), &c, 1);
      if (n <= 0) break;
      line.push_back(c);
    }
  }
  // Whatever it still prints goes nowhere (EPIPE), not into a file.
  if (logs_read) {
    ::fcntl(logs_read.get(), F_SETFL, O_NONBLOCK);
    for (ssize_t n; (n = ::read(logs_read.get(), buf, sizeof buf)) > 0;) keep_tail(log_tail, buf, static_cast<size_t>(n));
    logs_read.reset();
  }
  auto st = (*sandbox)->wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  if (!overgrown.empty()) return plain_error(what, "the runtime did not checkpoint: " + overgrown);
  if (line.rfind("{\"checkpointed\": true}", 0) != 0) {
    std::string said = line.empty() ? trimmed_tail(log_tail) : line.substr(0, line.find('\n'));
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
  labels.extra["code"] = code_sha_of(spec);
  labels.extra["entry"] = spec.entry;
  labels.extra["key"] = key;
  auto info = image::finalize_image(dump->get(), images_dir, labels);
  if (!info.ok()) return info.error().context(what);
  prefault(info->path);
  return info;
}

}  // namespace stoke::agent
