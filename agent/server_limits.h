// What the API server allows one client (and all of them together), and the
// pure decisions that apply those limits, kept apart from the I/O so they can
// be unit-tested (tests/unit/server_limits_test.cc). Every API client is
// treated as an attacker: none may exhaust the agent's fds, memory or loop
// time at the expense of the others (docs/security/api-limits.md).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>

#include "api/wire/protocol.h"

namespace stoke::agent {

// Defaults match agent/config.proto (ApiLimits) and packaging/stoked.conf.
struct ServerLimits {
  // Open connections, in total and per peer uid (SO_PEERCRED). A connection
  // over either cap gets one RESOURCE_EXHAUSTED error frame and is closed.
  size_t max_connections = 512;
  size_t max_connections_per_uid = 128;
  // Requests of one connection that are being handled or whose replies are
  // not yet written. At the cap the server stops reading the connection
  // (back-pressure: the client's writes block) and resumes as replies go out.
  size_t max_requests_in_flight = 32;
  // Reply bytes queued for one connection beyond what the socket took. A
  // client whose unread replies would exceed this is disconnected (one reply
  // of any size is always let through).
  size_t max_output_bytes = 32u << 20;
  // Bytes of incomplete frames held for all connections together. Past it,
  // connections wait before more is read from them.
  size_t max_buffered_bytes = 256u << 20;
  // A frame (and, after connecting, the hello) must arrive completely within
  // this long of its first byte, or the connection is closed (slowloris).
  std::chrono::milliseconds frame_timeout{10'000};
  // Largest frame accepted (capped at wire::kMaxFrameBytes).
  size_t max_frame_bytes = wire::kMaxFrameBytes;

  bool operator==(const ServerLimits&) const = default;
};

// Bytes one read takes from one connection: a connection's share of a loop
// turn, so a fast client cannot starve the others.
inline constexpr size_t kReadChunkBytes = 64u << 10;

// Counts open connections in total and per uid; admit() decides for a new
// one and counts it only when it is admitted.
class ConnectionCounter {
 public:
  enum class Admission { kAdmitted, kOverTotal, kOverPerUid };

  ConnectionCounter(size_t max_total, size_t max_per_uid) : max_total_(max_total), max_per_uid_(max_per_uid) {}

  Admission admit(uid_t uid) {
    if (total_ >= max_total_) return Admission::kOverTotal;
    size_t& mine = per_uid_[uid];
    if (mine >= max_per_uid_) {
      if (mine == 0) per_uid_.erase(uid);
      return Admission::kOverPerUid;
    }
    ++mine;
    ++total_;
    return Admission::kAdmitted;
  }

  void release(uid_t uid) {
    auto it = per_uid_.find(uid);
    if (it == per_uid_.end() || it->second == 0) return;
    if (--it->second == 0) per_uid_.erase(it);
    --total_;
  }

  size_t total() const { return total_; }
  size_t of(uid_t uid) const {
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second;
  }

 private:
  size_t max_total_, max_per_uid_;
  size_t total_ = 0;
  std::map<uid_t, size_t> per_uid_;
};

// Whether a reply of `size` bytes may be queued behind `queued` bytes not yet
// written: always when nothing waits (a single large result must get out),
// otherwise only within `max`.
inline bool output_fits(size_t queued, size_t size, size_t max) { return queued == 0 || queued + size <= max; }

// Whether reading from a connection is paused for back-pressure: frames
// already decoded wait for a free slot, or the in-flight cap is reached.
inline bool read_paused(size_t decoded_waiting, size_t in_flight, size_t max_in_flight) {
  return decoded_waiting > 0 || in_flight >= max_in_flight;
}

// Why a directory on the way to the API socket makes it unsafe (nullopt: it
// is fine). `owner`/`mode` are the directory's (stat). The socket's own
// directory (`holds_socket`) must be root's and writable by nobody else:
// whoever can write there can put their own socket at the path while the
// agent is down, and clients would hand it their requests. An ancestor may be
// writable by others if it is sticky (as /tmp): then nobody but root can
// rename or delete the root-owned entry below it.
std::optional<std::string> socket_dir_problem(const std::string& dir, uid_t owner, mode_t mode, bool holds_socket);

}  // namespace stoke::agent
