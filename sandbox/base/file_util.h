// Small, checked file helpers used by the cgroup backends and the rootfs builder.
#pragma once

#include <string>
#include <string_view>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke {

// Whole file as a string (cgroup and /proc files are small).
Result<std::string> read_file(const std::string& path);
// Write data with one write(2), as cgroupfs expects; no O_CREAT, no truncation games.
Status write_file(const std::string& path, std::string_view data);
// Create or replace a regular file atomically (write temp, fsync, rename).
Status write_file_atomic(const std::string& path, std::string_view data, unsigned mode = 0644);
// mkdir -p; succeeds when the directory already exists (its mode untouched).
Status make_dirs(const std::string& path, unsigned mode = 0755);
// mkdir -p, and then the last directory gets exactly `mode` even when it
// already existed (an older version, a packaging default or an admin may have
// made it wider). Refuses a symlink or a directory owned by another user:
// holding secrets below it, we must not chmod (or trust) someone else's.
Status make_private_dir(const std::string& path, unsigned mode = 0700);
// Sets exactly `mode` on an existing regular file (not through a symlink);
// a missing file is not an error (it will be created later).
Status restrict_file_mode(const std::string& path, unsigned mode);
// Opens (creating it if missing) a regular file for reading and writing
// with exactly `mode`, tightening one an older version left wider. Not
// through a symlink, never a FIFO or device planted under the name; not
// through the process umask.
Result<unique_fd> open_private_file(const std::string& path, unsigned mode = 0600);
bool path_exists(const std::string& path);
// An unnamed regular file in `dir` (mode 0600), gone when its last fd closes:
// O_TMPFILE, or, where the filesystem has none (overlayfs before Linux 6.6,
// the root of most containers; NFS; 9p), a named file unlinked at once.
Result<unique_fd> unnamed_file_in(const std::string& dir);
// The fallback alone (for its tests).
Result<unique_fd> named_then_unlinked_file_in(const std::string& dir);

}  // namespace stoke
