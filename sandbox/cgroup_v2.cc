// cgroup v2 backend: one directory in the unified tree,
// <caller's own group>/<parent_name>/<name>.
//
// The memory, cpu and pids controllers are enabled (those the caller's group
// offers in cgroup.controllers) in <self>/cgroup.subtree_control and in
// <self>/<parent_name>/cgroup.subtree_control. A controller that is missing is
// skipped — unless a limit needs it: then create() fails, because a sandbox must
// never run without a limit it asked for. Limits: memory.max, memory.swap.max=0,
// cpu.max "<quota> <period>", pids.max. Usage: cpu.stat, memory.peak,
// memory.events.
//
// No-internal-processes rule: a non-root group with processes cannot enable
// controllers for its children. When that happens (EBUSY) and the options allow
// it, the caller moves itself into the leaf <parent_name>/supervisor and retries.
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

constexpr uint64_t kCpuPeriodUs = 100000;
constexpr uint64_t kMinCpuQuotaUs = 1000;
constexpr const char* kSupervisorLeaf = "supervisor";

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Space-separated names, as in cgroup.controllers / cgroup.subtree_control.
Result<std::set<std::string>> read_name_set(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.error();
  std::set<std::string> out;
  std::string word;
  for (char ch : *text + " ") {
    if (ch == ' ' || ch == '\n' || ch == '\t') {
      if (!word.empty() && word[0] == '+') word.erase(0, 1);  // as a fake tree may hold them
      if (!word.empty()) out.insert(word);
      word.clear();
    } else {
      word.push_back(ch);
    }
  }
  return out;
}

class CgroupV2Group final : public CgroupGroup {
 public:
  CgroupV2Group(std::string name, std::string dir, std::string parent_dir, std::set<std::string> controllers,
                std::shared_ptr<const std::atomic<bool>> parent_kept_by = nullptr)
      : name_(std::move(name)),
        dir_(std::move(dir)),
        parent_dir_(std::move(parent_dir)),
        parent_kept_by_(std::move(parent_kept_by)),
        procs_files_{dir_ + "/cgroup.procs"},
        controllers_(std::move(controllers)),
        counters_{CounterFile(dir_ + "/cpu.stat", false), CounterFile(dir_ + "/memory.peak", true),
                  CounterFile(dir_ + "/memory.events", false), CounterFile(dir_ + "/pids.peak", false)} {}
  ~CgroupV2Group() override { (void)destroy(); }

  const std::string& name() const override { return name_; }

  std::vector<int> attach_fds() const override {
    if (!attach_) return {};
    return {attach_.get()};
  }

  Status open_attach_fd() {
    auto fd = open_for_attach(dir_ + "/cgroup.procs");
    if (!fd) return fd.error();
    attach_ = std::move(fd.value());
    return {};
  }

  Status write_limits(const CgroupLimits& limits) {
    if (controllers_.count("memory")) {
      STOKE_TRY(write_file(dir_ + "/memory.max", limits.memory_bytes > 0 ? std::to_string(limits.memory_bytes)
                                                                         : std::string("max")));
      // Absent when the kernel has no swap accounting; then there is no swap to turn off.
      if (file_exists(dir_ + "/memory.swap.max"))
        STOKE_TRY(write_file(dir_ + "/memory.swap.max", "0"));
      else
        spdlog::debug("cgroup v2: {} has no memory.swap.max; not limiting swap", dir_);
      // An OOM kills the whole group (4.19+), not one process of it: a sandbox
      // never goes on with part of its processes gone, and none is left to
      // hold the runtime's pipes open.
      if (file_exists(dir_ + "/memory.oom.group")) STOKE_TRY(write_file(dir_ + "/memory.oom.group", "1"));
    }
    if (controllers_.count("cpu")) {
      std::string quota = "max";
      if (limits.cpus > 0) {
        auto q = static_cast<uint64_t>(std::llround(limits.cpus * static_cast<double>(kCpuPeriodUs)));
        quota = std::to_string(std::max(q, kMinCpuQuotaUs));
      }
      STOKE_TRY(write_file(dir_ + "/cpu.max", quota + " " + std::to_string(kCpuPeriodUs)));
    }
    if (controllers_.count("pids")) {
      STOKE_TRY(
          write_file(dir_ + "/pids.max", limits.pids > 0 ? std::to_string(limits.pids) : std::string("max")));
    }
    return {};
  }

  Status set_limits(const CgroupLimits& limits) override { return write_limits(limits); }

  // Writing memory.peak resets it (Linux 6.12+) for later reads through the
  // same open file only: hence the one kept open (CounterFile). Older kernels
  // refuse the write and the peak stays cumulative for the group's life.
  Status reset_peak() override {
    if (Status s = counters_.memory_peak.write("reset"); !s.ok() && s.error().err != ENOENT &&
                                                          s.error().err != EINVAL && s.error().err != EACCES &&
                                                          s.error().err != EBADF)
      return s;
    return {};
  }

  Result<CgroupUsage> usage() const override {
    CgroupUsage u;
    auto cpu = counters_.cpu_stat.read_keyed();  // present without the cpu controller too
    if (!cpu) return cpu.error();
    // usage_usec is exact; the kernel already scales user/system to it.
    u.cpu_user_sampled_ns = (*cpu)["user_usec"] * 1000;
    u.cpu_system_sampled_ns = (*cpu)["system_usec"] * 1000;
    u.cpu_total_ns = (*cpu)["usage_usec"] * 1000;
    if (u.cpu_total_ns == 0) u.cpu_total_ns = u.cpu_user_sampled_ns + u.cpu_system_sampled_ns;
    CpuSplit split = split_cpu_time(u.cpu_total_ns, u.cpu_user_sampled_ns, u.cpu_system_sampled_ns);
    u.cpu_user_ns = split.user_ns;
    u.cpu_system_ns = split.system_ns;
    if (auto peak = counters_.memory_peak.read_u64(); peak) {  // since 5.19, needs memory controller
      u.memory_peak_bytes = *peak;
    } else if (peak.error().err != ENOENT) {
      return peak.error();
    }
    if (auto events = counters_.memory_events.read_keyed(); events) {
      u.oom_kills = (*events)["oom_kill"];
    } else if (events.error().err != ENOENT) {
      return events.error();
    }
    if (auto peak = counters_.pids_peak.read_u64(); peak) {  // needs the pids controller
      u.pids_peak = *peak;
    } else if (peak.error().err != ENOENT) {
      return peak.error();
    }
    return u;
  }

  Result<std::vector<int>> pids() const override { return read_pids(procs_files_); }

  Status kill_all() override {
    // cgroup.kill (5.14) signals the members in the kernel, with no pid that
    // could be reused on the way; then only wait. Older kernels: per pidfd.
    std::string kill_file = dir_ + "/cgroup.kill";
    Status s = write_file(kill_file, "1");
    if (s) return wait_until_empty(procs_files_);
    if (s.error().err != ENOENT)
      spdlog::debug("cgroup v2: {}: {}; falling back to SIGKILL", kill_file, s.error().message());
    return kill_until_empty(procs_files_);
  }

  Status destroy() override {
    attach_.reset();
    counters_.close();
    if (removed_) return {};
    STOKE_TRY(remove_group_dir(dir_, procs_files_));
    removed_ = true;
    if (group_removes_parent(parent_kept_by_)) remove_parent_if_empty(parent_dir_);
    return {};
  }

  std::vector<std::string> paths() const override { return {dir_}; }

 private:
  std::string name_;
  std::string dir_;
  std::string parent_dir_;
  std::shared_ptr<const std::atomic<bool>> parent_kept_by_;  // null: destroy() tries the parent
  std::vector<std::string> procs_files_;
  std::set<std::string> controllers_;  // enabled for this group
  // Read on every warm activation: kept open (CounterFile). usage() is const
  // to callers; re-reading a counter changes nothing they can see.
  struct Counters {
    CounterFile cpu_stat, memory_peak, memory_events, pids_peak;
    void close() {
      for (CounterFile* f : {&cpu_stat, &memory_peak, &memory_events, &pids_peak}) f->close();
    }
  };
  mutable Counters counters_;
  unique_fd attach_;
  bool removed_ = false;
};

class CgroupV2Backend final : public CgroupBackend {
 public:
  CgroupV2Backend(std::string self_dir, const CgroupOptions& options)
      : self_dir_(std::move(self_dir)),
        parent_dir_(self_dir_ + "/" + options.parent_name),
        move_self_to_leaf_(options.v2_move_self_to_leaf),
        keep_parent_(options.keep_parent) {}
  ~CgroupV2Backend() override { alive_->store(false); }

  void remove_empty_parents() override { remove_parent_if_empty(parent_dir_); }

  std::string_view version() const override { return "v2"; }

  std::vector<std::string> controllers() const override {
    std::vector<std::string> out;
    auto available = read_name_set(self_dir_ + "/cgroup.controllers");
    if (!available) return out;
    for (const char* c : {"memory", "cpu", "pids"})
      if (available->count(c)) out.push_back(c);
    return out;
  }

  Result<std::unique_ptr<CgroupGroup>> create(const std::string& name, const CgroupLimits& limits) override {
    const std::string step = "cgroup v2 create " + name;
    STOKE_TRY(check_name("group name", name));
    if (name == kSupervisorLeaf) return plain_error(step, "the name 'supervisor' is reserved");
    if (!(limits.cpus >= 0) || !std::isfinite(limits.cpus))
      return plain_error(step, "invalid cpu count " + std::to_string(limits.cpus));

    auto available = read_name_set(self_dir_ + "/cgroup.controllers");
    if (!available) return available.error().context(step);
    std::set<std::string> enabled;
    struct Wanted {
      const char* controller;
      const char* limit;
      bool requested;
    };
    const Wanted wanted[] = {{"memory", "memory limit", limits.memory_bytes > 0},
                             {"cpu", "CPU quota", limits.cpus > 0},
                             {"pids", "pids limit", limits.pids > 0}};
    for (const Wanted& w : wanted) {
      if (available->count(w.controller)) {
        enabled.insert(w.controller);
        continue;
      }
      if (w.requested)
        return plain_error(step, std::string("a ") + w.limit + " was requested but the '" + w.controller +
                                     "' controller is not available in " + self_dir_ + "/cgroup.controllers");
      spdlog::debug(
          "cgroup v2: controller '{}' is not available in {}; its limits and accounting are skipped",
          w.controller, self_dir_);
    }

    auto setup_parent = [&] { return prepare_parent(enabled); };
    if (Status s = setup_parent(); !s) return s.error().context(step);
    auto made = make_child_dir(parent_dir_, name, setup_parent);
    if (!made) return made.error().context(step);
    std::string dir = parent_dir_ + "/" + name;
    if (!*made) {
      // Only an empty leftover of the same name is taken over; its limits are reset below.
      auto inside = read_pids({dir + "/cgroup.procs"});
      if (!inside || !inside->empty()) return Error{step, EEXIST, dir + " already exists and is in use"};
      spdlog::debug("cgroup v2: reusing existing empty group {}", dir);
    }
    // An empty parent path tells the group's destroy() to leave the parent be.
    // keep_parent: destroy() leaves the parent to this backend while it lives.
    auto group = std::make_unique<CgroupV2Group>(name, dir, parent_dir_, enabled, keep_parent_ ? alive_ : nullptr);
    if (Status s = group->write_limits(limits); !s) {
      (void)group->destroy();
      return s.error().context(step);
    }
    if (Status s = group->open_attach_fd(); !s) {
      (void)group->destroy();
      return s.error().context(step);
    }
    spdlog::debug("cgroup v2: created {} (memory={} cpus={} pids={})", dir, limits.memory_bytes, limits.cpus,
                  limits.pids);
    return std::unique_ptr<CgroupGroup>(std::move(group));
  }

  Result<std::vector<std::string>> list() const override {
    auto sub = list_subdirs(parent_dir_);
    if (!sub) return sub.error().context("cgroup v2 list");
    std::erase(sub.value(), kSupervisorLeaf);
    return sub;
  }

  Status remove_stale(const std::string& name) override {
    STOKE_TRY(check_name("group name", name));
    if (name == kSupervisorLeaf)
      return plain_error("cgroup v2 remove_stale", "'supervisor' holds the agent itself");
    CgroupV2Group group(name, parent_dir_ + "/" + name, parent_dir_, {});
    if (Status s = group.kill_all(); !s) return s.error().context("cgroup v2 remove_stale " + name);
    if (Status s = group.destroy(); !s) return s.error().context("cgroup v2 remove_stale " + name);
    spdlog::debug("cgroup v2: removed stale group {}", name);
    return {};
  }

  std::vector<std::string> parent_dirs() const override { return {parent_dir_}; }

  // Move this whole process (all threads: its pid to cgroup.procs) into the
  // leaf <parent>/supervisor, making both directories as needed.
  Status move_self_to_leaf() {
    std::string leaf = parent_dir_ + "/" + kSupervisorLeaf;
    if (::mkdir(parent_dir_.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir " + parent_dir_);
    if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir " + leaf);
    STOKE_TRY(write_file(leaf + "/cgroup.procs", std::to_string(::getpid())));
    spdlog::debug("cgroup v2: moved this process into {} (no-internal-processes rule)", leaf);
    return {};
  }

 private:
  // "+a +b" into dir/cgroup.subtree_control for those of `controllers` not yet on.
  static Status enable_controllers(const std::string& dir, const std::set<std::string>& controllers) {
    if (controllers.empty()) return {};
    std::string path = dir + "/cgroup.subtree_control";
    auto on = read_name_set(path);
    if (!on) return on.error();
    std::string req;
    for (const auto& c : controllers)
      if (!on->count(c)) req += (req.empty() ? "+" : " +") + c;
    if (req.empty()) return {};
    return write_file(path, req);
  }

  // mkdir <parent_name> and enable the controllers on the way down to it. Another
  // owner's destroy() may remove the (empty) parent at any moment: start over then.
  // A write to cgroup.subtree_control of a parent being removed fails with
  // ENODEV (found in the v2 VM, scripts/test-v2): also "start over".
  Status prepare_parent(const std::set<std::string>& controllers) {
    for (int attempt = 0;; ++attempt) {
      Status s = prepare_parent_once(controllers);
      if (s.ok() || !parent_vanished(s.error()) || attempt >= 100) return s;
      sleep_briefly(attempt);
    }
  }

  Status prepare_parent_once(const std::set<std::string>& controllers) {
    if (::mkdir(parent_dir_.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir " + parent_dir_);
    Status s = enable_controllers(self_dir_, controllers);
    if (!s && s.error().err == EBUSY && move_self_to_leaf_) {
      STOKE_TRY(move_self_to_leaf());
      s = enable_controllers(self_dir_, controllers);
    }
    if (!s && s.error().err == EBUSY) {
      std::string why =
          "this process's cgroup has processes in it, so it cannot enable controllers for children "
          "(no-internal-processes rule)";
      why += move_self_to_leaf_
                 ? "; others remain after this process moved to " + parent_dir_ + "/" + kSupervisorLeaf
                 : "; set v2_move_self_to_leaf to move this process out of the way";
      why += " (in " + self_dir_ + ": " + describe_members(self_dir_) + ")";
      return Error{s.error().step, EBUSY, why};
    }
    if (!s) return s;
    return enable_controllers(parent_dir_, controllers);
  }

  // "pid 12 (name), ..." of a group's first members, for an error an operator can act on.
  static std::string describe_members(const std::string& dir) {
    auto pids = read_pids({dir + "/cgroup.procs"});
    if (!pids) return "members unreadable";
    if (pids->empty()) return "no process now";
    std::string out;
    size_t shown = 0;
    for (int pid : *pids) {
      if (shown++ == 5) {
        out += ", ...";
        break;
      }
      auto comm = read_file("/proc/" + std::to_string(pid) + "/comm");
      std::string name = comm ? *comm : std::string("?");
      while (!name.empty() && name.back() == '\n') name.pop_back();
      out += (out.empty() ? "" : ", ") + std::string("pid ") + std::to_string(pid) + " (" + name + ")";
    }
    return out;
  }

  std::string self_dir_;
  std::string parent_dir_;
  bool move_self_to_leaf_;
  bool keep_parent_;
  BackendAlive alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace

Result<std::unique_ptr<CgroupBackend>> open_cgroup_v2(const CgroupOptions& options) {
  STOKE_TRY(check_name("parent_name", options.parent_name));
  std::string self = options.v2_self_dir;
  bool in_own_group = false;  // this process is in `self` itself, not in its leaf
  if (self.empty()) {
    auto detected = detect_self_dirs();
    if (!detected) return detected.error().context("cgroup v2");
    auto it = detected->find("");
    if (it == detected->end())
      return plain_error("cgroup v2: cannot find this process's cgroup2 group",
                         "no cgroup2 mount in /proc/self/mountinfo or no '0::' line in /proc/self/cgroup");
    self = it->second;
    // After an earlier move into <parent_name>/supervisor, our own group is that
    // leaf; stoke's groups still belong beside it, not beneath it.
    std::string suffix = "/" + options.parent_name + "/" + kSupervisorLeaf;
    if (self.size() > suffix.size() && self.compare(self.size() - suffix.size(), suffix.size(), suffix) == 0)
      self.resize(self.size() - suffix.size());
    else
      in_own_group = true;
  }
  while (self.size() > 1 && self.back() == '/') self.pop_back();
  if (!file_exists(self + "/cgroup.controllers"))
    return sys_error("cgroup v2: " + self + " is not a cgroup2 group (no cgroup.controllers)", ENOENT);
  // Into the leaf now, before any child exists: a sandbox's first process is
  // cloned into our group and joins its own one a moment later, so a later
  // move would leave it behind in our group, and enabling controllers for
  // children would fail (EBUSY) while it is there. Found under systemd, whose
  // restart of a Delegate=yes unit puts the new agent back into the unit's
  // group with its controllers for children turned off. (Not from the root
  // group, the one without cgroup.type: the rule does not apply there.)
  const bool move_now = in_own_group && options.v2_move_self_to_leaf && file_exists(self + "/cgroup.type");
  spdlog::debug("cgroup v2: stoke's groups go under {}/{}", self, options.parent_name);
  auto backend = std::make_unique<CgroupV2Backend>(self, options);
  if (move_now) {
    if (Status moved = backend->move_self_to_leaf(); !moved.ok())
      spdlog::debug("cgroup v2: not moved into the supervisor leaf yet: {}", moved.error().message());
  }
  return std::unique_ptr<CgroupBackend>(std::move(backend));
}

}  // namespace stoke
