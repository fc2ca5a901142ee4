// Small, checked file helpers used by the cgroup backends and the rootfs builder.
#pragma once

#include <string>
#include <string_view>

#include "sandbox/base/result.h"

namespace stoke {

// Whole file as a string (cgroup and /proc files are small).
Result<std::string> read_file(const std::string& path);
// Write data with one write(2), as cgroupfs expects; no O_CREAT, no truncation games.
Status write_file(const std::string& path, std::string_view data);
// Create or replace a regular file atomically (write temp, fsync, rename).
Status write_file_atomic(const std::string& path, std::string_view data, unsigned mode = 0644);
// mkdir -p; succeeds when the directory already exists.
Status make_dirs(const std::string& path, unsigned mode = 0755);
bool path_exists(const std::string& path);

}  // namespace stoke
