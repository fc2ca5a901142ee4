// Python zygotes, the agent's side (docs/zygotes.md): a *runtime zygote* is a
// sandbox running runtimes/python/stoke_zygote.py with the runtime shim and a
// list of modules imported; it forks one *function zygote* per function (its
// code imported and module-level init run), which forks *instances*.
//
//   agent ──spawn (zygote sandbox: ids H..H+N-1, zygote caps, zygote seccomp)──▶ runtime zygote (pid 1)
//   agent ──"function" + [control, log, cgroup fds]──▶ runtime zygote
//         ◀── pidfd ──  clone(NEWUSER|NEWNS|NEWPID|NEWIPC|NEWUTS|NEWNET)
//   (the runtime zygote writes its id maps: 0 → its own id k = host H+k)
//         ◀── {"ready"} on the function zygote's own control socket
//   agent ──"fork" + [stdin, log, results, cgroup fds]──▶ function zygote
//         ◀── pidfd ──  clone(NEWNS|NEWPID|NEWIPC|NEWUTS|NEWNET), set up, caps dropped, seccomp
//
// Each zygote process is pid 1 of its own pid namespace and the parent of
// what it forks; the agent holds pidfds (Sandbox::adopt) and each fork's own
// cgroup, created here with the limits set before the child joins it.
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

struct RuntimeZygoteSpec {
  std::string runtimes_dir;              // bound at /runtime
  std::string work_dir;                  // host dir of this zygote: functions' code links live here
  std::vector<std::string> preload;      // modules imported before any fork
  uint32_t host_id = 0;                  // first of host_id_count host ids (uid and gid)
  uint32_t host_id_count = 1024;         // id 0: the runtime zygote; 1..: function zygotes
  uint64_t memory_bytes = 256ULL << 20;  // the runtime zygote's own cgroup
};

struct FunctionZygoteSpec {
  // 1..host_id_count-1, unique among the runtime zygote's live function
  // zygotes (the caller keeps track): its host id is host_id + id_index, so
  // no two functions' zygotes and instances share a host uid.
  uint32_t id_index = 1;
  std::string function;
  uint32_t version = 0;
  std::string code_dir;   // host dir with the unpacked code (linked into work_dir)
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

class FunctionZygote;

class RuntimeZygote {
 public:
  static Result<std::unique_ptr<RuntimeZygote>> start(Spawner& spawner, const RuntimeZygoteSpec& spec);
  ~RuntimeZygote();

  // Forks a function zygote (code imported, init run) and waits until it is
  // ready. `cgroups` creates its group.
  Result<std::unique_ptr<FunctionZygote>> fork_function(const FunctionZygoteSpec& spec, CgroupBackend& cgroups);
  Sandbox& sandbox() { return *sandbox_; }
  bool alive() const;

 private:
  RuntimeZygote() = default;
  RuntimeZygoteSpec spec_;
  std::unique_ptr<Sandbox> sandbox_;
  unique_fd control_;
  std::mutex mu_;
  std::atomic<uint64_t> made_{0};  // function zygotes forked so far
  std::atomic<bool> broken_{false};  // an answer was lost: requests and answers are out of step
};

// Step of the error fork_function returns when the function zygote itself
// refused (its code failed to load, or it runs threads after import): the
// same code will not get a zygote.
inline constexpr const char* kFunctionRefused = "function zygote refused";

class FunctionZygote {
 public:
  ~FunctionZygote();
  // Forks an instance with its own cgroup (limits set) and the given pipes.
  Result<std::unique_ptr<Sandbox>> fork_instance(const InstanceFork& fork, CgroupBackend& cgroups);
  // Creates the next fork's cgroup ahead (call after a fork, off its critical
  // path): a v1 group is four mkdirs and limit writes, ~0.3 ms.
  void prepare_group(const CgroupLimits& limits, CgroupBackend& cgroups);
  Sandbox& sandbox() { return *sandbox_; }
  bool alive() const;
  // Waits up to `timeout` for the zygote to be gone; true if it is.
  bool wait_gone(std::chrono::milliseconds timeout) const;
  const std::string& function() const { return function_; }
  uint32_t version() const { return version_; }
  uint64_t forks() const { return forks_; }

 private:
  friend class RuntimeZygote;
  FunctionZygote() = default;
  std::string function_;
  uint32_t version_ = 0;
  std::unique_ptr<Sandbox> sandbox_;
  unique_fd control_;
  std::mutex mu_;
  std::string code_link_dir_;  // removed with the zygote
  std::unique_ptr<CgroupGroup> spare_group_;  // made ahead for the next fork
  std::string spare_name_;
  CgroupLimits spare_limits_;
  std::atomic<uint64_t> forks_{0};  // read by the status handler
};

// Names of cgroups made for zygotes and their forks: "sb-<agent pid>-<n>",
// the spawner's pattern, so crash recovery collects them like any sandbox's.
std::string zygote_group_name();

}  // namespace stoke::agent
