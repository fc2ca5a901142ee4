// SandboxSpec: the plain, pre-resolved description of one sandbox.
//
// Mechanism only: nothing here knows about functions, protobuf or the agent.
// The CLI and the agent translate their own inputs into this struct; the
// spawner validates it (validate_spec) before anything touches the kernel.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/cgroup.h"

namespace stoke {

struct BindMount {
  std::string source;  // host path (file or directory)
  std::string target;  // absolute path inside the sandbox
  bool writable = false;
};

// An fd of the caller that the sandboxed process receives as `target`.
struct FdMapping {
  int source = -1;
  int target = -1;
};

struct Rlimits {
  uint64_t nofile = 1024;
  // No core dumps of user code. 1, not 0: a pipe core_pattern (systemd-coredump)
  // ignores the limit except for exactly 1, and one byte is below the smallest
  // ELF dump, so file patterns write nothing either. Seccomp pins it.
  uint64_t core = 1;
  uint64_t fsize = 1ULL << 30;         // 1 GiB per file written
  uint64_t stack = 8ULL << 20;
};

struct SandboxSpec {
  std::vector<std::string> argv;  // argv[0]: absolute path, or a name searched in PATH inside
  std::vector<std::string> env;   // exactly the environment the process gets (KEY=VALUE)
  std::string workdir = "/";
  std::string hostname = "sandbox";
  std::vector<BindMount> binds;
  uint64_t tmp_size_bytes = 64ULL << 20;
  CgroupLimits limits{.memory_bytes = 256ULL << 20, .cpus = 1.0, .pids = 256};
  Rlimits rlimits;
  // Host ids the sandbox's root (uid/gid 0 inside) is mapped to.
  uint32_t host_uid = 0;
  uint32_t host_gid = 0;
  // stdio and any extra fds: the sandbox gets exactly these, nothing else.
  std::vector<FdMapping> fds{{0, 0}, {1, 1}, {2, 2}};
  // SIGKILL the sandbox when the spawning thread exits.
  bool kill_with_parent = true;
  // The OOM killer's view of the sandbox. The agent protects itself (systemd
  // OOMScoreAdjust=-500); its sandboxes must not inherit that.
  int oom_score_adj = 0;
  // Function zygote sandboxes only (agent/zygote.h, docs/zygotes.md): pid 1
  // is the zygote's maker (runtimes/zygote/maker.c), which builds instances'
  // namespaces ahead and never runs tenant code, so it
  //  - keeps kZygoteCapabilities inside its user namespace (the zygote it
  //    starts drops them all before exec);
  //  - gets the maker's seccomp profile instead of the default one;
  //  - may map host_id_count ids from host_uid/host_gid on (sandbox ids
  //    0..count-1); the agent maps one.
  bool zygote = false;
  uint32_t host_id_count = 1;
};

// Capabilities a zygote's maker keeps in its own user namespace: enough to
// build an instance's namespaces, mounts and hostname, to give each instance
// user namespace its id map (mapping root there takes CAP_SETFCAP over the
// parent namespace since Linux 5.12) and to drop everything; no DAC override.
// Its zygote drops all of them before exec.
inline constexpr uint64_t kZygoteCapabilities =
    (1ULL << 6) /*SETGID*/ | (1ULL << 7) /*SETUID*/ | (1ULL << 8) /*SETPCAP*/ | (1ULL << 12) /*NET_ADMIN*/ |
    (1ULL << 18) /*SYS_CHROOT*/ | (1ULL << 21) /*SYS_ADMIN*/ | (1ULL << 31) /*SETFCAP*/;

// Defaults for PATH etc. that a sandbox gets when the caller gives no env.
std::vector<std::string> default_sandbox_env();

// Checks everything that can be checked without the kernel: argv non-empty,
// absolute and normalised bind targets not over the system dirs, sane sizes,
// env entries of the form KEY=VALUE, ids in the unprivileged range, fd targets
// unique. (That the ids are no host account is checked by the spawner.)
Status validate_spec(const SandboxSpec& spec);

}  // namespace stoke
