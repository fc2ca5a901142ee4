#include "sandbox/spec.h"

#include <set>

#include "rootfs/lean_rootfs.h"
#include "sandbox/id_map.h"

namespace stoke {
namespace {

bool is_normalised_absolute(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  if (p.size() > 1 && p.back() == '/') return false;
  if (p.find("//") != std::string::npos) return false;
  size_t start = 1;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    std::string part = p.substr(start, end - start);
    if (part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

bool is_under(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

}  // namespace

std::vector<std::string> default_sandbox_env() {
  return {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/tmp", "LANG=C.UTF-8"};
}

Status validate_spec(const SandboxSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) return plain_error("check sandbox spec", "no command given");
  for (const auto& kv : spec.env) {
    size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos)
      return plain_error("check sandbox spec", "environment entry '" + kv + "' is not KEY=VALUE");
  }
  if (!is_normalised_absolute(spec.workdir))
    return plain_error("check sandbox spec", "workdir '" + spec.workdir + "' must be an absolute path without . or ..");
  if (spec.hostname.empty() || spec.hostname.size() > 64)
    return plain_error("check sandbox spec", "hostname must be 1 to 64 characters");
  for (char c : spec.hostname)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'))
      return plain_error("check sandbox spec", "hostname '" + spec.hostname + "' may only hold letters, digits, '-' and '.'");
  std::set<std::string> targets;
  for (const auto& b : spec.binds) {
    if (!is_normalised_absolute(b.source))
      return plain_error("check sandbox spec", "bind source '" + b.source + "' must be an absolute path without . or ..");
    if (!is_normalised_absolute(b.target) || b.target == "/")
      return plain_error("check sandbox spec", "bind target '" + b.target + "' must be an absolute path below / without . or ..");
    for (const auto& sys : lean_rootfs_system_paths())
      if (is_under(b.target, sys))
        return plain_error("check sandbox spec", "bind target '" + b.target + "' is inside the system path " + sys);
    if (!targets.insert(b.target).second)
      return plain_error("check sandbox spec", "bind target '" + b.target + "' is given twice");
  }
  if (spec.tmp_size_bytes < 4096) return plain_error("check sandbox spec", "tmp size must be at least 4K");
  if (spec.limits.memory_bytes != 0 && spec.limits.memory_bytes < (4ULL << 20))
    return plain_error("check sandbox spec", "memory limit must be at least 4M");
  STOKE_TRY(check_host_id_range(spec.host_uid, spec.host_gid));
  if (spec.host_id_count == 0 || spec.host_id_count > 65536)
    return plain_error("check sandbox spec", "host id count must be between 1 and 65536");
  if (spec.host_id_count > 1 && !spec.zygote)
    return plain_error("check sandbox spec", "only a zygote maps more than one host id");
  if (spec.host_id_count > 1)
    STOKE_TRY(check_host_id_range(spec.host_uid + spec.host_id_count - 1, spec.host_gid + spec.host_id_count - 1));
  if (spec.oom_score_adj < -1000 || spec.oom_score_adj > 1000)
    return plain_error("check sandbox spec", "oom_score_adj must be between -1000 and 1000");
  if (spec.fds.size() > 16) return plain_error("check sandbox spec", "at most 16 fds can be passed");
  std::set<int> fd_targets;
  for (const auto& m : spec.fds) {
    if (m.source < 0 || m.target < 0 || m.target >= 1000)
      return plain_error("check sandbox spec", "fd mapping " + std::to_string(m.source) + "->" + std::to_string(m.target) + " is out of range");
    if (!fd_targets.insert(m.target).second)
      return plain_error("check sandbox spec", "fd " + std::to_string(m.target) + " is mapped twice");
  }
  return {};
}

}  // namespace stoke
