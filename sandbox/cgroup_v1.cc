// cgroup v1 backend: one directory per hierarchy stoke uses (memory, cpu,
// cpuacct, pids — co-mounted controllers share one directory).
//
// Layout: <mount of controller>/<caller's own group>/<parent_name>/<name>.
// Limits: memory.limit_in_bytes, then memory.memsw.limit_in_bytes to the same
// value (swap off) when the kernel has swap accounting; cpu.cfs_period_us and
// cpu.cfs_quota_us; pids.max. Usage: cpuacct.usage_user / usage_sys (ns on this
// kernel; cpuacct.stat is in USER_HZ ticks), memory.max_usage_in_bytes, and the
// oom_kill line of memory.oom_control.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "sandbox/base/file_util.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace stoke {


namespace {

using namespace cgroup_internal;

constexpr uint64_t kCfsPeriodUs = 100000;
constexpr uint64_t kMinCfsQuotaUs = 1000;  // the kernel's lower bound

// One mounted hierarchy stoke uses.
struct Hierarchy {
  std::string controllers;  // e.g. "cpu,cpuacct" (for messages)
  std::string self_dir;     // the caller's own group in it
  std::string parent_dir;   // self_dir/<parent_name>
};

// Index of the hierarchy that carries each controller, -1 when absent.
struct ControllerMap {
  int memory = -1;
  int cpu = -1;
  int cpuacct = -1;
  int pids = -1;
};

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Writes limit then memsw (swap off). The kernel insists memsw >= limit at every
// moment, so when the limit write is refused (a reused group whose memsw is lower)
// write memsw first.
Status write_memory_limit(const std::string& dir, const std::string& value) {
  std::string limit = dir + "/memory.limit_in_bytes";
  std::string memsw = dir + "/memory.memsw.limit_in_bytes";
  bool has_memsw = file_exists(memsw);
  Status s = write_file(limit, value);
  if (s.ok()) return has_memsw ? write_file(memsw, value) : Status{};
  if (!has_memsw || s.error().err != EINVAL) return s;
  STOKE_TRY(write_file(memsw, value));
  return write_file(limit, value);
}

class CgroupV1Group final : public CgroupGroup {
 public:
  CgroupV1Group(std::string name, std::vector<std::string> dirs, std::vector<std::string> parent_dirs,
                ControllerMap cm, std::shared_ptr<const std::atomic<bool>> parent_kept_by)
      : name_(std::move(name)),
        dirs_(std::move(dirs)),
        parent_dirs_(std::move(parent_dirs)),
        cm_(cm),
        parent_kept_by_(std::move(parent_kept_by)) {
    for (const auto& d : dirs_) procs_files_.push_back(d + "/cgroup.procs");
    if (cm_.cpuacct >= 0) {
      const std::string& d = dirs_[cm_.cpuacct];
      counters_.cpu_user = CounterFile(d + "/cpuacct.usage_user", false);
      counters_.cpu_sys = CounterFile(d + "/cpuacct.usage_sys", false);
      counters_.cpu_total = CounterFile(d + "/cpuacct.usage", false);
    }
    if (cm_.memory >= 0) {
      counters_.memory_peak = CounterFile(dirs_[cm_.memory] + "/memory.max_usage_in_bytes", true);
      counters_.oom_control = CounterFile(dirs_[cm_.memory] + "/memory.oom_control", false);
    }
    if (cm_.pids >= 0) counters_.pids_peak = CounterFile(dirs_[cm_.pids] + "/pids.peak", false);
  }
  ~CgroupV1Group() override { (void)destroy(); }

  const std::string& name() const override { return name_; }

  std::vector<int> attach_fds() const override {
    std::vector<int> out;
    for (const auto& fd : attach_) out.push_back(fd.get());
    return out;
  }

  Status open_attach_fds() {
    for (const auto& d : dirs_) {
      auto fd = open_for_attach(d + "/tasks");
      if (!fd) return fd.error();
      attach_.push_back(std::move(fd.value()));
    }
    return {};
  }

  Status write_limits(const CgroupLimits& limits) {
    if (cm_.memory >= 0) {
      const std::string& dir = dirs_[cm_.memory];
      STOKE_TRY(
          write_memory_limit(dir, limits.memory_bytes > 0 ? std::to_string(limits.memory_bytes) : "-1"));
      // Without a limit memsw cannot keep swap out; swappiness 0 does (best effort).
      if (limits.memory_bytes == 0 && file_exists(dir + "/memory.swappiness"))
        STOKE_TRY(write_file(dir + "/memory.swappiness", "0"));
    }
    if (cm_.cpu >= 0) {
      const std::string& dir = dirs_[cm_.cpu];
      std::string quota = "-1";
      if (limits.cpus > 0) {
        auto q = static_cast<uint64_t>(std::llround(limits.cpus * static_cast<double>(kCfsPeriodUs)));
        quota = std::to_string(std::max(q, kMinCfsQuotaUs));
      }
      STOKE_TRY(write_file(dir + "/cpu.cfs_period_us", std::to_string(kCfsPeriodUs)));
      STOKE_TRY(write_file(dir + "/cpu.cfs_quota_us", quota));
    }
    if (cm_.pids >= 0) {
      STOKE_TRY(write_file(dirs_[cm_.pids] + "/pids.max",
                           limits.pids > 0 ? std::to_string(limits.pids) : std::string("max")));
    }
    return {};
  }

  Result<CgroupUsage> usage() const override {
    CgroupUsage u;
    if (cm_.cpuacct >= 0) {
      const std::string& dir = dirs_[cm_.cpuacct];
      auto user = counters_.cpu_user.read_u64();
      if (user) {
        u.cpu_user_sampled_ns = *user;
        auto sys = counters_.cpu_sys.read_u64();
        if (!sys) return sys.error();
        u.cpu_system_sampled_ns = *sys;
      } else if (user.error().err == ENOENT) {
        // Kernels before 4.7 have only cpuacct.stat, in USER_HZ ticks.
        auto stat = read_keyed(dir + "/cpuacct.stat");
        if (!stat) return stat.error();
        uint64_t ns_per_tick = 1000000000ull / static_cast<uint64_t>(std::max(1L, ::sysconf(_SC_CLK_TCK)));
        u.cpu_user_sampled_ns = (*stat)["user"] * ns_per_tick;
        u.cpu_system_sampled_ns = (*stat)["system"] * ns_per_tick;
      } else {
        return user.error();
      }
      // cpuacct.usage is the scheduler's exact runtime; the user/system
      // figures above only move when a tick lands, so they split it.
      if (auto total = counters_.cpu_total.read_u64(); total) u.cpu_total_ns = *total;
      else if (total.error().err == ENOENT) u.cpu_total_ns = u.cpu_user_sampled_ns + u.cpu_system_sampled_ns;
      else return total.error();
      CpuSplit split = split_cpu_time(u.cpu_total_ns, u.cpu_user_sampled_ns, u.cpu_system_sampled_ns);
      u.cpu_user_ns = split.user_ns;
      u.cpu_system_ns = split.system_ns;
    }
    if (cm_.memory >= 0) {
      auto peak = counters_.memory_peak.read_u64();
      if (!peak) return peak.error();
      u.memory_peak_bytes = *peak;
      auto oom = counters_.oom_control.read_keyed();
      if (!oom) return oom.error();
      if (auto it = oom->find("oom_kill"); it != oom->end()) u.oom_kills = it->second;  // since 4.13
    }
    if (cm_.pids >= 0) {
      if (auto peak = counters_.pids_peak.read_u64(); peak) u.pids_peak = *peak;
      else if (peak.error().err != ENOENT) return peak.error();
    }
    return u;
  }

  Result<std::vector<int>> pids() const override { return read_pids(procs_files_); }

  Status kill_all() override { return kill_until_empty(procs_files_); }

  Status set_limits(const CgroupLimits& limits) override { return write_limits(limits); }

  Status reset_peak() override {
    if (cm_.memory < 0) return {};
    return counters_.memory_peak.write("0");
  }

  Status destroy() override {
    attach_.clear();
    counters_.close();
    while (!dirs_left_.empty()) {
      STOKE_TRY(remove_group_dir(dirs_left_.back(), procs_files_));
      dirs_left_.pop_back();
    }
    if (group_removes_parent(parent_kept_by_))
      for (const auto& p : parent_dirs_) remove_parent_if_empty(p);
    return {};
  }

  std::vector<std::string> paths() const override { return dirs_; }

  // Directories destroy() still has to remove.
  void set_dirs_to_remove(std::vector<std::string> dirs) { dirs_left_ = std::move(dirs); }

 private:
  std::string name_;
  std::vector<std::string> dirs_;  // one per hierarchy, in attach order
  std::vector<std::string> parent_dirs_;
  std::vector<std::string> procs_files_;
  std::vector<std::string> dirs_left_;
  ControllerMap cm_;
  std::shared_ptr<const std::atomic<bool>> parent_kept_by_;  // null: destroy() tries the parents
  std::vector<unique_fd> attach_;
  // Read on every warm activation: kept open (CounterFile). usage() is const
  // to callers; re-reading a counter changes nothing they can see.
  struct Counters {
    CounterFile cpu_user, cpu_sys, cpu_total, memory_peak, oom_control, pids_peak;
    void close() {
      for (CounterFile* f : {&cpu_user, &cpu_sys, &cpu_total, &memory_peak, &oom_control, &pids_peak}) f->close();
    }
  };
  mutable Counters counters_;
};

class CgroupV1Backend final : public CgroupBackend {
 public:
  CgroupV1Backend(std::vector<Hierarchy> hierarchies, ControllerMap cm, bool keep_parent)
      : hier_(std::move(hierarchies)), cm_(cm), keep_parent_(keep_parent) {}
  ~CgroupV1Backend() override { alive_->store(false); }

  void remove_empty_parents() override {
    for (const auto& h : hier_) remove_parent_if_empty(h.parent_dir);
  }

  std::string_view version() const override { return "v1"; }

  std::vector<std::string> controllers() const override {
    std::vector<std::string> out;
    if (cm_.memory >= 0) out.push_back("memory");
    if (cm_.cpu >= 0) out.push_back("cpu");
    if (cm_.cpuacct >= 0) out.push_back("cpuacct");
    if (cm_.pids >= 0) out.push_back("pids");
    return out;
  }

  Result<std::unique_ptr<CgroupGroup>> create(const std::string& name, const CgroupLimits& limits) override {
    STOKE_TRY(check_name("group name", name));
    if (!(limits.cpus >= 0) || !std::isfinite(limits.cpus))
      return plain_error("cgroup v1 create " + name, "invalid cpu count " + std::to_string(limits.cpus));
    if (limits.cpus > 0 && cm_.cpu < 0)
      return plain_error("cgroup v1 create " + name,
                         "a CPU quota was requested but the 'cpu' controller is not mounted");
    if (limits.pids > 0 && cm_.pids < 0)
      return plain_error("cgroup v1 create " + name,
                         "a pids limit was requested but the 'pids' controller is not mounted");

    std::vector<std::string> dirs, parents, created;
    for (const auto& h : hier_) {
      dirs.push_back(h.parent_dir + "/" + name);
      parents.push_back(h.parent_dir);
    }
    // keep_parent: destroy() leaves the parents to this backend while it lives.
    auto group = std::make_unique<CgroupV1Group>(name, dirs, parents, cm_, keep_parent_ ? alive_ : nullptr);
    for (size_t i = 0; i < hier_.size(); ++i) {
      const Hierarchy& h = hier_[i];
      // The parent is made on the first ENOENT (and again if another owner removes it).
      Result<bool> made = make_child_dir(h.parent_dir, name, [&h] { return make_parent(h); });
      if (!made) {
        group->set_dirs_to_remove(created);
        (void)group->destroy();
        return made.error().context("cgroup v1 create " + name);
      }
      if (*made) {
        created.push_back(dirs[i]);
      } else {
        // Only an empty leftover of the same name is taken over; its limits are reset below.
        auto inside = read_pids({dirs[i] + "/cgroup.procs"});
        if (!inside || !inside->empty()) {
          group->set_dirs_to_remove(created);
          (void)group->destroy();
          return Error{"cgroup v1 create " + name, EEXIST, dirs[i] + " already exists and is in use"};
        }
        spdlog::debug("cgroup v1: reusing existing empty group {}", dirs[i]);
        created.push_back(dirs[i]);
      }
    }
    group->set_dirs_to_remove(created);
    if (Status s = group->write_limits(limits); !s) {
      (void)group->destroy();
      return s.error().context("cgroup v1 create " + name);
    }
    if (Status s = group->open_attach_fds(); !s) {
      (void)group->destroy();
      return s.error().context("cgroup v1 create " + name);
    }
    spdlog::debug("cgroup v1: created {} in {} hierarchies (memory={} cpus={} pids={})", name, hier_.size(),
                  limits.memory_bytes, limits.cpus, limits.pids);
    return std::unique_ptr<CgroupGroup>(std::move(group));
  }

  Result<std::vector<std::string>> list() const override {
    std::set<std::string> names;
    for (const auto& h : hier_) {
      auto sub = list_subdirs(h.parent_dir);
      if (!sub) return sub.error().context("cgroup v1 list");
      names.insert(sub->begin(), sub->end());
    }
    return std::vector<std::string>(names.begin(), names.end());
  }

  Status remove_stale(const std::string& name) override {
    STOKE_TRY(check_name("group name", name));
    std::vector<std::string> dirs, parents;
    for (const auto& h : hier_) {
      dirs.push_back(h.parent_dir + "/" + name);
      parents.push_back(h.parent_dir);
    }
    CgroupV1Group group(name, dirs, parents, cm_, nullptr);
    group.set_dirs_to_remove(dirs);  // missing ones count as removed
    if (Status s = group.kill_all(); !s) return s.error().context("cgroup v1 remove_stale " + name);
    if (Status s = group.destroy(); !s) return s.error().context("cgroup v1 remove_stale " + name);
    spdlog::debug("cgroup v1: removed stale group {}", name);
    return {};
  }

  std::vector<std::string> parent_dirs() const override {
    std::vector<std::string> out;
    for (const auto& h : hier_) out.push_back(h.parent_dir);
    return out;
  }

 private:
  static Status make_parent(const Hierarchy& h) {
    if (::mkdir(h.parent_dir.c_str(), 0755) != 0 && errno != EEXIST)
      return sys_error("mkdir " + h.parent_dir);
    return {};
  }

  std::vector<Hierarchy> hier_;
  ControllerMap cm_;
  bool keep_parent_;
  BackendAlive alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace

Result<std::unique_ptr<CgroupBackend>> open_cgroup_v1(const CgroupOptions& options) {
  STOKE_TRY(check_name("parent_name", options.parent_name));
  std::map<std::string, std::string> self = options.v1_self_dirs;
  if (self.empty()) {
    auto detected = detect_self_dirs();
    if (!detected) return detected.error().context("cgroup v1");
    self = std::move(detected.value());
  }

  // Controllers in attach order; memory is required, the others optional.
  static const char* const kControllers[] = {"memory", "cpu", "cpuacct", "pids"};
  std::vector<Hierarchy> hier;
  std::vector<std::pair<dev_t, ino_t>> seen;
  ControllerMap cm;
  for (const char* c : kControllers) {
    auto it = self.find(c);
    if (it == self.end() || it->second.empty()) {
      if (std::string_view(c) == "memory")
        return plain_error("cgroup v1: the memory controller is not available",
                           "no v1 hierarchy with 'memory' is mounted for this process "
                           "(see /proc/self/cgroup and /proc/self/mountinfo)");
      spdlog::debug("cgroup v1: controller '{}' not mounted; skipping it", c);
      continue;
    }
    struct stat st;
    if (::stat(it->second.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      int e = errno;
      if (std::string_view(c) == "memory") return sys_error("cgroup v1: own memory group " + it->second, e);
      spdlog::debug("cgroup v1: own {} group {} is missing; skipping the controller", c, it->second);
      continue;
    }
    // Co-mounted controllers ("cpu,cpuacct") share one directory: create it once.
    int index = -1;
    for (size_t i = 0; i < seen.size(); ++i)
      if (seen[i] == std::make_pair(st.st_dev, st.st_ino)) index = static_cast<int>(i);
    if (index < 0) {
      index = static_cast<int>(hier.size());
      seen.emplace_back(st.st_dev, st.st_ino);
      hier.push_back(Hierarchy{c, it->second, it->second + "/" + options.parent_name});
    } else {
      hier[index].controllers += std::string(",") + c;
    }
    std::string_view name = c;
    (name == "memory"    ? cm.memory
     : name == "cpu"     ? cm.cpu
     : name == "cpuacct" ? cm.cpuacct
                         : cm.pids) = index;
  }
  for (const auto& h : hier) spdlog::debug("cgroup v1: {} -> {}", h.controllers, h.parent_dir);
  return std::unique_ptr<CgroupBackend>(new CgroupV1Backend(std::move(hier), cm, options.keep_parent));
}

}  // namespace stoke
