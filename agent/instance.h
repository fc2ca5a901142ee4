// An instance: one sandbox running a function's runtime, plus the pipes the
// agent talks to it through (the runtime protocol of DESIGN §5):
//
//   agent ── requests, one JSON line each ──▶ fd 0 (stdin)
//   agent ◀── results, one JSON line each ─── fd 3
//   agent ◀── logs ────────────────────────── fd 1 and fd 2 (one pipe, in order)
//
// For the exec runtime this is OpenWhisk's actionloop contract, so existing
// native actions run unchanged. The lifecycle (starting → idle ⇄ busy → dead)
// is what warm reuse, prewarm pools, zygotes and restore plug into; in this
// version every activation gets a fresh instance that dies after it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/spawner.h"
#include "agent/zygote.h"

namespace stoke::agent {

// What the agent knows about the function version an instance runs.
struct InstanceSpec {
  std::string function;
  uint32_t version = 0;
  v1::Runtime runtime = v1::EXEC;
  std::string code_dir;        // host directory with the unpacked code (read-only)
  std::string executable;      // exec runtime: path inside the sandbox, e.g. /code/exec
  std::string runtimes_dir;    // python/node: host dir bound at /runtime
  std::string code_path;       // python/node: the code inside the sandbox (/code or /code/x.py)
  std::string entry;           // python/node: the function's name
  std::vector<std::string> env;  // KEY=VALUE the function configured
  uint64_t memory_bytes = 0;
  double cpus = 1.0;
  uint64_t pids = 256;
  uint64_t tmp_bytes = 64ULL << 20;
  uint32_t host_uid = 0;       // one id per function (never a host account)
};

// The sandbox a language or exec runtime runs in (binds, env, limits, ids),
// without its fds: what a cold start, a checkpoint and a restore share.
Result<SandboxSpec> sandbox_spec_for(const InstanceSpec& spec);

class Instance {
 public:
  enum class State { kIdle, kBusy, kDead };

  // Runs on a worker thread (spawning blocks for ~1 ms).
  static Result<std::unique_ptr<Instance>> start(Spawner& spawner, const InstanceSpec& spec);
  // Forked from the function's zygote (agent/zygote.h): its code is loaded
  // and initialised already; it serves requests like any instance.
  // The instance keeps its zygote (object and process) alive: a retired
  // zygote ends only after the last instance it forked, whose pid namespace
  // lies inside its own.
  static Result<std::unique_ptr<Instance>> fork_from(std::shared_ptr<FunctionZygote> zygote, CgroupBackend& cgroups,
                                                     const InstanceSpec& spec);
  const std::shared_ptr<FunctionZygote>& origin() const { return origin_; }  // null unless forked from a zygote
  // A copy of the function's checkpoint image (docs/checkpoint.md): the
  // restorer maps it into a fresh sandbox built like a cold one. Returns once
  // the sandbox is spawned; the restored runtime's first line on fd 3 says it
  // is ready (ActivationRun's first_line_is_ready reads it; a restorer that
  // refuses the image exits before that line).
  static Result<std::unique_ptr<Instance>> restore(Spawner& spawner, const InstanceSpec& spec,
                                                   const std::string& image_path);

  Sandbox& sandbox() { return *sandbox_; }
  int request_fd() const { return request_.get(); }  // write end of its stdin (O_NONBLOCK)
  int result_fd() const { return result_.get(); }    // read end of its fd 3 (O_NONBLOCK)
  int log_fd() const { return log_.get(); }          // read end of its stdout+stderr (O_NONBLOCK)
  double init_ms() const { return init_ms_; }
  const std::string& code_dir() const { return code_dir_; }  // host side of /code
  State state = State::kIdle;
  // Usage counters at the end of the previous activation: a reused instance's
  // cgroup counts from its start, an activation is billed the difference.
  CgroupUsage usage_so_far;

  // A host directory that belongs to this instance alone (a prewarmed
  // instance's /code), removed when the instance is destroyed.
  void own_directory(std::string dir) { owned_dir_ = std::move(dir); }
  ~Instance();

 private:
  Instance() = default;
  struct Pipes;
  static std::unique_ptr<Instance> assemble(std::unique_ptr<Sandbox> sandbox, Pipes& pipes, const InstanceSpec& spec,
                                            std::chrono::steady_clock::time_point started);
  std::unique_ptr<Sandbox> sandbox_;
  unique_fd request_, result_, log_;
  double init_ms_ = 0;
  std::string owned_dir_;
  std::string code_dir_;
  std::shared_ptr<FunctionZygote> origin_;  // destroyed after sandbox_ (declared last)
};

}  // namespace stoke::agent
