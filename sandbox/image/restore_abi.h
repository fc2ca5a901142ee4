// The contract between the agent and stoke-restore (runtimes/restorer): which
// fd carries the image and what the restorer's exit codes mean. Freestanding:
// the restorer includes it too.
#pragma once

namespace stoke::image {

// The image is passed to stoke-restore as this fd (read-only is enough). The
// sandbox's fds 0-3 are the new instance's pipes and are kept as they are;
// every other fd, this one included, is closed before the restored process
// runs.
inline constexpr int kRestoreImageFd = 4;

// Where the agent finds the two artifacts inside a sandbox that binds
// build/share/stoke/runtimes at /runtime.
inline constexpr const char* kRestorerPathInSandbox = "/runtime/restorer/stoke-restore";
inline constexpr const char* kCheckpointLibPathInSandbox = "/runtime/checkpoint/libstoke_checkpoint.so";

// stoke-restore never returns on success: it becomes the restored process.
// On failure it writes one line "stoke-restore: ..." to fd 2 and exits with
// one of these (the agent then falls back to a cold start). Every check runs
// before anything of the restorer's own process is changed, except
// kRestoreExitMapFailed and kRestoreExitStateFailed, which can only happen
// after the old mappings are gone; even then the restorer's own code is
// intact and it exits cleanly.
enum RestoreExit : int {
  kRestoreExitImageUnreadable = 111,  // no fd 4, not a regular file, read error
  kRestoreExitImageCorrupt = 112,     // magic, version, hash, bounds, truncation
  kRestoreExitCpuMismatch = 113,      // CPU features / XSAVE layout differ
  kRestoreExitKernelMismatch = 114,   // kernel release/version, vdso size or hash
  kRestoreExitFileMismatch = 115,     // a mapped file is missing or changed
  kRestoreExitAddressConflict = 116,  // the image uses the restorer's address range
  kRestoreExitMapFailed = 117,        // mmap/mremap of a VMA failed
  kRestoreExitStateFailed = 118,      // prctl(PR_SET_MM_MAP), rseq, sigaction, chdir...
};

inline constexpr bool is_restore_failure_exit(int code) { return code >= 111 && code <= 118; }

}  // namespace stoke::image
