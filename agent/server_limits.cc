#include "agent/server_limits.h"

#include <sys/stat.h>

#include <cstdio>

namespace stoke::agent {

std::optional<std::string> socket_dir_problem(const std::string& dir, uid_t owner, mode_t mode, bool holds_socket) {
  char octal[8];
  std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode & 07777));
  const std::string what = "'" + dir + "' (owner uid " + std::to_string(owner) + ", mode " + octal + ")";
  if (!S_ISDIR(mode)) return what + " is not a directory";
  if (owner != 0) return what + " is not owned by root, so its owner could replace the socket";
  const bool others_write = (mode & (S_IWGRP | S_IWOTH)) != 0;
  if (!others_write) return std::nullopt;
  if (holds_socket)
    return what + " is writable by others, who could put their own socket at the path; "
                  "use a directory only root can write (e.g. /run/stoke)";
  if ((mode & S_ISVTX) == 0)
    return what + " is writable by others and not sticky, so they could rename the directories below it";
  return std::nullopt;
}

}  // namespace stoke::agent
