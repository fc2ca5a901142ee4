// The API server: the listening Unix socket, one Connection per client, the
// frame decoder, the handshake and access checks. Requests are handed to a
// Handler; responses go back on the same connection in whatever order they
// complete (request ids let the client match them).
//
// Clients are untrusted: ServerLimits (agent/server_limits.h) caps their
// connections, in-flight requests, unread replies, buffered partial frames and
// the time a frame may take; reads are readiness-driven (poll, then one
// bounded recv into a buffer shared by all connections), so an idle
// connection costs no buffer and one client gets one chunk per loop turn.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/event_loop.h"
#include "agent/server_limits.h"
#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct AccessPolicy {
  // Root is always allowed. Both empty: anyone who can open the socket.
  std::set<uid_t> allowed_uids;
  std::set<gid_t> allowed_gids;
  // Admitted, but only with a namespace key on every request (never root).
  std::set<uid_t> key_required_uids;
  bool allows(const Peer& peer) const;
  bool requires_key(const Peer& peer) const { return peer.uid != 0 && key_required_uids.count(peer.uid) > 0; }

  bool operator==(const AccessPolicy&) const = default;
};

class Server {
 public:
  // Handles one request; calls `reply` exactly once, on the loop thread.
  using Reply = std::function<void(v1::Response)>;
  using Handler = std::function<void(const Peer& peer, v1::Request request, Reply reply)>;

  // Listens on `path` (a stale socket file is replaced), mode 0660, owned by
  // `group` when given (else 0600). The socket is bound, chown'ed and
  // chmod'ed in a private root-only directory beside `path` and renamed into
  // place, so nobody can redirect those calls with a symlink; the path's
  // directories must be safe (socket_dir_problem) or the server does not
  // start. `inherited_fd` >= 0: a socket from systemd instead.
  static Result<std::unique_ptr<Server>> listen(EventLoop& loop, const std::string& path, const std::string& group,
                                                int inherited_fd, AccessPolicy access, Handler handler,
                                                ServerLimits limits = {});
  ~Server();

  size_t connections() const { return connections_.size(); }
  // Stop accepting; existing connections finish their in-flight replies.
  void close_listener();

 private:
  struct Connection;
  using Clock = std::chrono::steady_clock;
  Server(EventLoop& loop, ServerLimits limits);
  Status bind_safely(const std::string& group);
  void accept_next();
  void on_accept(int fd);
  void refuse_over_cap(int fd, const Peer& peer, ConnectionCounter::Admission why);
  // Reading: arm a readiness poll unless paused; on readiness, one recv.
  void arm_read(const std::shared_ptr<Connection>& c);
  void on_readable(const std::shared_ptr<Connection>& c);
  void dispatch(const std::shared_ptr<Connection>& c);
  bool paused(const Connection& c) const;
  void on_frame(const std::shared_ptr<Connection>& c, std::string frame);
  void send(const std::shared_ptr<Connection>& c, const v1::Response& response);
  void flush(const std::shared_ptr<Connection>& c);
  // Protocol end: answer what is in flight, then close.
  void finish(const std::shared_ptr<Connection>& c);
  // The client is gone or misbehaved: close now, drop queued replies.
  void drop(const std::shared_ptr<Connection>& c);
  void close(const std::shared_ptr<Connection>& c);
  void account_buffered(Connection& c);
  void wake_budget_waiters();
  void sweep();

  EventLoop& loop_;
  ServerLimits limits_;
  ConnectionCounter counter_;
  // One receive buffer for every connection: reads happen on readiness, one
  // at a time on the loop thread, and the decoder copies what it keeps.
  std::unique_ptr<char[]> read_buf_;
  size_t buffered_bytes_ = 0;  // incomplete frames, all connections
  std::deque<std::weak_ptr<Connection>> budget_waiters_;
  size_t refused_unlogged_ = 0;
  // Loop callbacks can outlive the Server (teardown): they check this first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  unique_fd listener_;
  std::string path_;
  bool owns_path_ = false;
  AccessPolicy access_;
  Handler handler_;
  uint64_t next_conn_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  bool listening_ = true;
  uint64_t accept_op_ = 0;  // the pending accept, cancelled by close_listener()
};

}  // namespace stoke::agent
