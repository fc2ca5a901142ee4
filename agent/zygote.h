// Python function zygotes, the agent's side (docs/zygotes.md): one sandbox
// per function version, whose pid 1 is the zygote's *maker*
// (runtimes/zygote/maker.c, never runs tenant code) and whose zygote is a
// fresh python3 with the runtime shim, the preload modules and then the
// function's code imported. The zygote forks *instances*.
//
//   agent ──spawn (one host id H+k, zygote caps, maker seccomp)──▶ maker (pid 1)
//         maker: fork → zygote: every capability dropped, no_new_privs, the
//         function-zygote filter, exec python3 stoke_zygote.py MODULES...
//         ◀── {"started"} + the zygote's own pidfd (before any tenant code)
//   agent ──{"op": "function", code, env, instance filter}──▶ zygote
//         ◀── {"ready"} once the code is imported and its init ran
//   agent ──"fork" + [stdin, log, results, cgroup fds]──▶ zygote
//         zygote: joins namespaces its maker made ahead (setns), forks the
//         instance into them; the instance joins its cgroup, drops every
//         capability it holds there, stacks the default filter
//         ◀── pidfd ── proven by the agent before adoption (zygote_verify.h)
//
// The agent holds pidfds (Sandbox::adopt) and each fork's own cgroup, created
// here with the limits set before the child joins it.
//
// Blocking: every call here runs on a worker thread. A zygote serves one
// request at a time (a mutex per zygote); each exchange has a deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/spawner.h"

namespace stoke::agent {

// The indexes of the zygotes' id block (host id = block start + index) that
// are in use. Index 0 is never handed out. Any thread.
//
// An index is held by a lease. The function zygote keeps its lease until it
// is destroyed, which is after every instance it forked (each holds its
// zygote) and after its process is gone and its code directory (owned by that
// host id, mode 0500) removed: the index serves another function only when
// nothing derived from the old one is left (security finding #4).
class ZygoteIdBlock : public std::enable_shared_from_this<ZygoteIdBlock> {
 public:
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    uint32_t index() const { return index_; }
    // Never give the index back (its zygote could not be proven gone).
    void keep_forever() { forever_ = true; }

   private:
    friend class ZygoteIdBlock;
    Lease(std::shared_ptr<ZygoteIdBlock> block, uint32_t index) : block_(std::move(block)), index_(index) {}
    std::shared_ptr<ZygoteIdBlock> block_;
    uint32_t index_;
    std::atomic<bool> forever_{false};
  };

  static std::shared_ptr<ZygoteIdBlock> make(uint32_t count);
  // The lowest free index (>= 1), held until the lease is gone; null if none.
  std::shared_ptr<Lease> take();
  size_t in_use() const;

 private:
  explicit ZygoteIdBlock(uint32_t count) : used_(count, false) {}
  void give_back(uint32_t index);
  mutable std::mutex mu_;
  std::vector<bool> used_;
};

struct FunctionZygoteSpec {
  // Its index in the zygotes' id block: its host id (uid and gid) is
  // host_id_base + index, so no two functions' zygotes and instances share a
  // host uid. The zygote keeps the lease until it is destroyed.
  std::shared_ptr<ZygoteIdBlock::Lease> id;
  uint32_t host_id_base = 0;
  std::string runtimes_dir;               // bound at /runtime
  std::vector<std::string> preload;       // modules imported before the function's code
  std::string function;
  uint32_t version = 0;
  std::string code_dir;   // host dir with the unpacked code, bound read-only at /code
  std::string code_path;  // as the runtime shim takes it: /code or /code/x.py
  std::string entry;
  std::vector<std::string> env;  // KEY=VALUE
  uint64_t memory_bytes = 256ULL << 20;
  double cpus = 1.0;
  uint64_t pids = 256;
  uint64_t tmp_bytes = 64ULL << 20;
  std::chrono::milliseconds init_timeout{30'000};
};

struct InstanceFork {
  int stdin_fd = -1, log_fd = -1, result_fd = -1;  // the instance's ends
  CgroupLimits limits;
  uint64_t tmp_bytes = 64ULL << 20;
};

// Causes the agent acts on (sandbox/base/result.h):
// - FunctionZygote::start fails with ErrorCause::kPeerRefused when the zygote
//   itself refused (its code failed to load, or it runs threads after
//   import): the same code will not get a zygote.
// - fork_instance fails with ErrorCause::kPeerUntrusted when the fork the
//   zygote answered with failed the agent's checks (agent/zygote_verify.h):
//   the zygote has been killed, and its function's code (which controls it)
//   gets no other zygote.

// Deadline of every wait for a zygote or its fork to be gone after a kill.
inline constexpr std::chrono::milliseconds kZygoteTeardownDeadline{5'000};

class FunctionZygote {
 public:
  // Spawns the zygote's sandbox and waits until the function's code is
  // imported. `spawner.cgroups()` makes its group.
  static Result<std::unique_ptr<FunctionZygote>> start(Spawner& spawner, const FunctionZygoteSpec& spec);
  ~FunctionZygote();
  // Forks an instance with its own cgroup (limits set) and the given pipes.
  Result<std::unique_ptr<Sandbox>> fork_instance(const InstanceFork& fork, CgroupBackend& cgroups);
  // Creates the next fork's cgroup ahead (call after a fork, off its critical
  // path): a v1 group is four mkdirs and limit writes, ~0.3 ms.
  void prepare_group(const CgroupLimits& limits, CgroupBackend& cgroups);
  // The sandbox; its pid 1 is the maker.
  Sandbox& sandbox() { return *sandbox_; }
  // The zygote process itself (host pid): what holds the function's memory.
  pid_t zygote_pid() const { return zygote_pid_; }
  bool alive() const;
  // Waits up to `timeout` for the zygote to be gone; true if it is.
  bool wait_gone(std::chrono::milliseconds timeout) const;
  const std::string& function() const { return function_; }
  uint32_t version() const { return version_; }
  uint64_t forks() const { return forks_; }

 private:
  FunctionZygote() = default;
  // Kills it (pid 1 and its cgroup) and marks it unusable.
  void condemn();

  // Declared first, so destroyed last: the id is free only once everything
  // else of this zygote is gone.
  std::shared_ptr<ZygoteIdBlock::Lease> id_;

  std::string function_;
  uint32_t version_ = 0;
  std::unique_ptr<Sandbox> sandbox_;
  unique_fd control_;
  std::mutex mu_;
  pid_t zygote_pid_ = -1;
  unique_fd zygote_pidfd_;        // proven at start: the maker's child, in its cgroup
  uint32_t host_id_ = 0;          // its root's host uid/gid: its forks' too
  int min_instance_filters_ = 1;  // seccomp filters a fork must have stacked
  std::atomic<bool> broken_{false};  // a fork failed its checks, or an answer was lost
  std::unique_ptr<CgroupGroup> spare_group_;  // made ahead for the next fork
  std::string spare_name_;
  CgroupLimits spare_limits_;
  std::atomic<uint64_t> forks_{0};  // read by the status handler
};

// Names of cgroups made for zygotes and their forks: "sb-<agent pid>-<n>",
// the spawner's pattern, so crash recovery collects them like any sandbox's.
std::string zygote_group_name();

}  // namespace stoke::agent
