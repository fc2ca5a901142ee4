#include "agent/config.h"

#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/un.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <string>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "api/wire/protocol.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Payloads, results and code travel inside one API frame together with their
// envelope (ids, names, logs); a cap that leaves no room for it would let the
// agent accept what it can never send back.
constexpr uint64_t kEnvelopeHeadroom = 1 * kMiB;
constexpr uint64_t kMaxInFrame = wire::kMaxFrameBytes - kEnvelopeHeadroom;

// (uid_t)-1 is the kernel's "no id"; a mapped range must stop before it.
constexpr uint64_t kNoId = 0xFFFFFFFFu;

constexpr uint32_t kMaxWorkerThreads = 256;
constexpr uint32_t kMaxPrewarm = 1024;

// The first error the text parser reports, as "source:line:column: message".
// Later errors are usually consequences of the first, so only it is kept.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  explicit FirstError(std::string_view source) : source_(source) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!first_.empty()) return;
    // The parser counts from zero; editors count from one.
    first_ = source_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " +
             message;
  }
  const std::string& first() const { return first_; }

 private:
  std::string source_;
  std::string first_;
};

Error invalid(std::string detail) { return plain_error("invalid config", std::move(detail)); }

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

Status check_path(const char* field, const std::string& value) {
  if (value.empty() || value[0] != '/')
    return invalid(std::string(field) + " (" + quoted(value) + ") must be an absolute path");
  if (value.find('\0') != std::string::npos)
    return invalid(std::string(field) + " must not contain a NUL byte");
  return {};
}

Status check_positive(const char* field, uint64_t value) {
  if (value == 0) return invalid(std::string(field) + " must be > 0");
  return {};
}

Status check_fits_frame(const char* field, uint64_t value) {
  if (value > kMaxInFrame)
    return invalid(std::string(field) + " (" + std::to_string(value) + ") must be at most " +
                   std::to_string(kMaxInFrame) + " (an API frame is " +
                   std::to_string(wire::kMaxFrameBytes) + " bytes including its envelope)");
  return {};
}

Status check_places(const AgentConfig& c) {
  STOKE_TRY(check_path("state_dir", c.state_dir()));
  // The agent removes leftovers under its state dir on start; "/" would be
  // a disaster, not a configuration.
  if (c.state_dir().find_first_not_of('/') == std::string::npos)
    return invalid("state_dir must not be the root directory");
  STOKE_TRY(check_path("socket_path", c.socket_path()));
  constexpr size_t kSunPath = sizeof(sockaddr_un::sun_path);
  if (c.socket_path().size() >= kSunPath)
    return invalid("socket_path (" + quoted(c.socket_path()) + ") is " +
                   std::to_string(c.socket_path().size()) + " bytes; a Unix socket path must be " +
                   "shorter than " + std::to_string(kSunPath));
  if (c.socket_group().find_first_of(std::string(":/ \t\n\0", 6)) != std::string::npos)
    return invalid("socket_group (" + quoted(c.socket_group()) + ") is not a group name");
  if (!c.cgroup_root().empty()) {
    const std::string& root = c.cgroup_root();
    STOKE_TRY(check_path("cgroup_root", root));
    const std::string prefix = "/sys/fs/cgroup/";
    bool below = root.rfind(prefix, 0) == 0 && root.size() > prefix.size();
    // Every component a real name: no "", "." or "..".
    for (size_t at = prefix.size(); below && at <= root.size();) {
      size_t end = std::min(root.find('/', at), root.size());
      std::string part = root.substr(at, end - at);
      if (part.empty() || part == "." || part == "..") below = false;
      at = end + 1;
    }
    if (!below) return invalid("cgroup_root (" + quoted(root) + ") must be a group below /sys/fs/cgroup/");
  }
  return {};
}

Status check_function_limits(const AgentConfig& c) {
  if (c.default_memory_bytes() < kMiB)
    return invalid("default_memory_bytes (" + std::to_string(c.default_memory_bytes()) +
                   ") must be at least 1 MiB (" + std::to_string(kMiB) + ")");
  STOKE_TRY(check_positive("default_timeout_ms", c.default_timeout_ms()));
  STOKE_TRY(check_positive("max_timeout_ms", c.max_timeout_ms()));
  if (c.default_timeout_ms() > c.max_timeout_ms())
    return invalid("default_timeout_ms (" + std::to_string(c.default_timeout_ms()) +
                   ") must not exceed max_timeout_ms (" + std::to_string(c.max_timeout_ms()) +
                   ")");
  if (c.max_memory_bytes() < c.default_memory_bytes())
    return invalid("max_memory_bytes (" + std::to_string(c.max_memory_bytes()) + ") must be at least default_memory_bytes (" +
                   std::to_string(c.default_memory_bytes()) + ")");
  STOKE_TRY(check_positive("default_concurrency", c.default_concurrency()));
  if (c.max_concurrency() < c.default_concurrency())
    return invalid("max_concurrency (" + std::to_string(c.max_concurrency()) + ") must be at least default_concurrency (" +
                   std::to_string(c.default_concurrency()) + ")");
  STOKE_TRY(check_positive("max_queue_per_function", c.max_queue_per_function()));
  STOKE_TRY(check_positive("stop_grace_ms", c.stop_grace_ms()));
  STOKE_TRY(check_positive("max_payload_bytes", c.max_payload_bytes()));
  STOKE_TRY(check_fits_frame("max_payload_bytes", c.max_payload_bytes()));
  STOKE_TRY(check_positive("max_result_bytes", c.max_result_bytes()));
  STOKE_TRY(check_fits_frame("max_result_bytes", c.max_result_bytes()));
  // An activation record carries its result and its logs in one response.
  if (c.max_result_bytes() + c.max_log_bytes() > kMaxInFrame)
    return invalid("max_result_bytes + max_log_bytes (" +
                   std::to_string(c.max_result_bytes() + c.max_log_bytes()) +
                   ") must be at most " + std::to_string(kMaxInFrame) +
                   " (one activation record must fit an API frame)");
  STOKE_TRY(check_positive("max_code_bytes", c.max_code_bytes()));
  STOKE_TRY(check_fits_frame("max_code_bytes", c.max_code_bytes()));
  STOKE_TRY(check_positive("max_code_unpacked_bytes", c.max_code_unpacked_bytes()));
  STOKE_TRY(check_positive("activation_prune_interval_ms", c.activation_prune_interval_ms()));
  return {};
}

Status check_node(const AgentConfig& c) {
  if (c.node_memory_budget_bytes() != 0 &&
      c.node_memory_budget_bytes() < c.default_memory_bytes())
    return invalid("node_memory_budget_bytes (" + std::to_string(c.node_memory_budget_bytes()) +
                   ") must be 0 (3/4 of RAM) or at least default_memory_bytes (" +
                   std::to_string(c.default_memory_bytes()) + ")");
  if (c.host_uid_range_first() == 0)
    return invalid("host_uid_range_first must be > 0 (sandboxes never map to host root)");
  STOKE_TRY(check_positive("host_uid_range_count", c.host_uid_range_count()));
  uint64_t end = uint64_t{c.host_uid_range_first()} + c.host_uid_range_count();
  if (end > kNoId)
    return invalid("host_uid_range_first + host_uid_range_count (" + std::to_string(end) +
                   ") must be at most " + std::to_string(kNoId) +
                   " (the range must end below the kernel's \"no id\" 4294967295)");
  if (c.worker_threads() < 1 || c.worker_threads() > kMaxWorkerThreads)
    return invalid("worker_threads (" + std::to_string(c.worker_threads()) + ") must be 1.." +
                   std::to_string(kMaxWorkerThreads));
  if (std::none_of(std::begin(kLogLevels), std::end(kLogLevels),
                   [&](const char* l) { return c.log_level() == l; })) {
    std::string names;
    for (const char* l : kLogLevels) names += std::string(names.empty() ? "" : ", ") + l;
    return invalid("log_level (" + quoted(c.log_level()) + ") must be one of " + names);
  }
  STOKE_TRY(check_positive("billing_unit_ms", c.billing_unit_ms()));
  const config::Pools& p = c.pools();
  if (p.exec() != 0)
    return invalid("pools.exec (" + std::to_string(p.exec()) +
                   ") must be 0: an exec function's process is its own code, there is no runtime to start ahead");
  for (auto [field, count] : {std::pair{"pools.python", p.python()}, std::pair{"pools.node", p.node()},
                              std::pair{"pools.exec", p.exec()}}) {
    if (count > kMaxPrewarm)
      return invalid(std::string(field) + " (" + std::to_string(count) + ") must be at most " +
                     std::to_string(kMaxPrewarm));
  }
  for (const auto& module : c.zygotes().preload()) {
    // Dotted Python module names only: they become the zygote's argv.
    bool ok = !module.empty() && module.size() <= 200 && module.front() != '.' && module.back() != '.';
    for (char ch : module) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.');
    if (!ok || std::isdigit(static_cast<unsigned char>(module.front())))
      return invalid("zygotes.preload (" + quoted(module) + ") must be a dotted Python module name");
  }
  if (c.zygotes().memory_budget_bytes() > 0 && c.zygotes().memory_budget_bytes() < (16ULL << 20))
    return invalid("zygotes.memory_budget_bytes must be at least 16 MiB");
  if (c.zygotes().forked_ahead() > 16)
    return invalid("zygotes.forked_ahead (" + std::to_string(c.zygotes().forked_ahead()) + ") must be at most 16");
  return {};
}

Status check_api_limits(const AgentConfig& c) {
  const config::ApiLimits& l = c.api_limits();
  STOKE_TRY(check_positive("api_limits.max_connections", l.max_connections()));
  STOKE_TRY(check_positive("api_limits.max_connections_per_uid", l.max_connections_per_uid()));
  STOKE_TRY(check_positive("api_limits.frame_timeout_ms", l.frame_timeout_ms()));
  if (l.max_requests_in_flight() == 0 || l.max_requests_in_flight() > 65536)
    return invalid("api_limits.max_requests_in_flight (" + std::to_string(l.max_requests_in_flight()) +
                   ") must be 1..65536");
  for (auto [field, value] : {std::pair{"api_limits.max_output_bytes", l.max_output_bytes()},
                              std::pair{"api_limits.max_buffered_bytes", l.max_buffered_bytes()}}) {
    if (value < (1ULL << 20)) return invalid(std::string(field) + " (" + std::to_string(value) + ") must be at least 1 MiB");
  }
  return {};
}

}  // namespace

AgentConfig default_config() { return AgentConfig(); }

Status validate_config(const AgentConfig& cfg) {
  STOKE_TRY(check_places(cfg));
  STOKE_TRY(check_function_limits(cfg));
  STOKE_TRY(check_node(cfg));
  STOKE_TRY(check_api_limits(cfg));
  return {};
}

Result<AgentConfig> parse_config(std::string_view text, std::string_view source) {
  AgentConfig cfg;
  FirstError errors(source);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  // Unknown keys are typos more often than not; a typo silently ignored is a
  // limit silently not applied. (This is the parser's default; said here so
  // nobody "fixes" it.)
  parser.AllowUnknownField(false);
  if (!parser.ParseFromString(std::string(text), &cfg)) {
    std::string what = errors.first().empty() ? std::string(source) + ": not a valid config"
                                              : errors.first();
    return plain_error("parse config", what);
  }
  Status valid = validate_config(cfg);
  if (!valid.ok()) {
    Error e = valid.error();
    e.step.append(" ").append(source);
    return e;
  }
  return cfg;
}

Result<AgentConfig> load_config(const std::optional<std::string>& path,
                                const std::string& default_path) {
  std::string file;
  if (path) {
    file = *path;
  } else {
    struct stat st;
    if (::stat(default_path.c_str(), &st) != 0) {
      if (errno == ENOENT) return default_config();
      return sys_error("load config: stat " + default_path);
    }
    file = default_path;
  }
  Result<std::string> text = read_file(file);
  if (!text.ok()) return text.error().context("load config");
  return parse_config(*text, file);
}

Status apply_overrides(AgentConfig& cfg, const ConfigOverrides& o) {
  if (o.state_dir) cfg.set_state_dir(*o.state_dir);
  if (o.socket_path) cfg.set_socket_path(*o.socket_path);
  return validate_config(cfg);
}

uint64_t node_memory_budget(const AgentConfig& cfg, uint64_t total_ram) {
  if (cfg.node_memory_budget_bytes() != 0) return cfg.node_memory_budget_bytes();
  return total_ram / 4 * 3;
}

Result<uint64_t> total_ram_bytes() {
  struct sysinfo si;
  if (::sysinfo(&si) != 0) return sys_error("sysinfo");
  return uint64_t{si.totalram} * si.mem_unit;
}


}  // namespace stoke::agent
