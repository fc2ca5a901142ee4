// stoked and systemd: readiness/status/watchdog notifications (sd_notify) and
// sockets handed over by socket activation (sd_listen_fds), via libsystemd.
//
// Everything here is a successful no-op when the agent does not run under
// systemd (NOTIFY_SOCKET / LISTEN_FDS unset), so the agent calls it
// unconditionally. Thread-safe: each call sends one datagram and keeps no state.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>
#include <vector>

#include "sandbox/base/result.h"

namespace stoke::agent::systemd {

// NOTIFY_SOCKET is set: a service manager waits for our notifications.
bool notify_socket_set();

// "READY=1" (+ "STATUS=<status>" when non-empty): Type=notify start-up is
// complete; systemd starts units ordered after us only now. Send once, after
// the API socket is listening and reconciliation is done.
Status notify_ready(std::string_view status = {});
// "STATUS=<text>": the one-line state `systemctl status` shows.
Status notify_status(std::string_view text);
// "WATCHDOG=1": the event loop is alive. Send every watchdog_interval().
Status notify_watchdog();
// "STOPPING=1": shutdown has begun (draining activations, stopping sandboxes).
Status notify_stopping();
// "EXTEND_TIMEOUT_USEC=<usec>": a slow start or stop (e.g. reconciling many
// leftover sandboxes) is still making progress; push systemd's timeout out.
Status notify_extend_timeout(std::chrono::microseconds more);

// How often to send WATCHDOG=1: half of WATCHDOG_USEC (the margin systemd
// recommends), when the watchdog is enabled for this process (WATCHDOG_PID,
// if set, is our pid). nullopt when it is not, or the variables are malformed.
std::optional<std::chrono::microseconds> watchdog_interval();

// The listening sockets passed by socket activation (stoked.socket), in
// order, marked close-on-exec. LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES are
// removed from the environment so no child ever sees them. Each must be an
// AF_UNIX stream socket in listening state; anything else is an error naming
// the fd (the unit file and the agent disagree). Empty when not activated.
Result<std::vector<int>> listen_fds_from_systemd();

}  // namespace stoke::agent::systemd
