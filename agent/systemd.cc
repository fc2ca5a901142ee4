#include "agent/systemd.h"

#include <sys/socket.h>

#include <cstdlib>
#include <string>

#include <systemd/sd-daemon.h>

namespace stoke::agent::systemd {
namespace {

// A notification is newline-separated KEY=VALUE assignments; a newline inside
// a free-text value would start a new assignment (a status containing
// "\nREADY=1" would claim readiness), so free text is flattened to one line.
std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

Status send(const std::string& state) {
  // unset_environment = 0: the agent notifies many times over its life
  // (status, watchdog, stopping), so NOTIFY_SOCKET must stay set. Children
  // never see it: sandboxes get an explicit environment.
  int r = sd_notify(0, state.c_str());
  if (r < 0) {
    std::string first = state.substr(0, state.find('\n'));
    return sys_error("sd_notify " + first, -r);
  }
  return {};  // r == 0: not under systemd, nothing to tell
}

}  // namespace

bool notify_socket_set() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  return s != nullptr && *s != '\0';
}

Status notify_ready(std::string_view status) {
  std::string state = "READY=1";
  if (!status.empty()) state += "\nSTATUS=" + one_line(status);
  return send(state);
}

Status notify_status(std::string_view text) { return send("STATUS=" + one_line(text)); }

Status notify_watchdog() { return send("WATCHDOG=1"); }

Status notify_stopping() { return send("STOPPING=1"); }

Status notify_extend_timeout(std::chrono::microseconds more) {
  return send("EXTEND_TIMEOUT_USEC=" + std::to_string(more.count() > 0 ? more.count() : 0));
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  uint64_t usec = 0;
  // > 0: enabled for our pid; 0: not enabled or meant for another pid;
  // < 0: malformed variables, treated as not enabled.
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec / 2);
}

Result<std::vector<int>> listen_fds_from_systemd() {
  // unset_environment = 1: the fds are ours alone; a child that inherited
  // LISTEN_FDS could mistake its own fd 3 for our socket.
  int n = sd_listen_fds(1);
  if (n < 0) return sys_error("sd_listen_fds", -n);
  std::vector<int> fds;
  for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
    int r = sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0);
    if (r < 0) return sys_error("check socket-activation fd " + std::to_string(fd), -r);
    if (r == 0)
      return plain_error("check socket-activation fd " + std::to_string(fd),
                         "not a listening AF_UNIX stream socket (stoked.socket must use "
                         "ListenStream=<path> and Accept=no)");
    fds.push_back(fd);
  }
  return fds;
}

}  // namespace stoke::agent::systemd
