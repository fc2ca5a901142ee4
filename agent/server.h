// The API server: the listening Unix socket, one Connection per client, the
// frame decoder, the handshake and access checks. Requests are handed to a
// Handler; responses go back on the same connection in whatever order they
// complete (request ids let the client match them).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/event_loop.h"
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
  bool allows(const Peer& peer) const;
};

class Server {
 public:
  // Handles one request; calls `reply` exactly once, on the loop thread.
  using Reply = std::function<void(v1::Response)>;
  using Handler = std::function<void(const Peer& peer, v1::Request request, Reply reply)>;

  // Listens on `path` (a stale socket file is replaced), mode 0660, owned by
  // `group` when given. `inherited_fd` >= 0: a socket from systemd instead.
  static Result<std::unique_ptr<Server>> listen(EventLoop& loop, const std::string& path, const std::string& group,
                                                int inherited_fd, AccessPolicy access, Handler handler);
  ~Server();

  size_t connections() const { return connections_.size(); }
  // Stop accepting; existing connections finish their in-flight replies.
  void close_listener();

 private:
  struct Connection;
  Server(EventLoop& loop) : loop_(loop) {}
  void accept_next();
  void on_accept(int fd);
  void read_next(const std::shared_ptr<Connection>& c);
  void on_frame(const std::shared_ptr<Connection>& c, std::string frame);
  void send(const std::shared_ptr<Connection>& c, const v1::Response& response);
  void flush(const std::shared_ptr<Connection>& c);
  void close(const std::shared_ptr<Connection>& c);

  EventLoop& loop_;
  unique_fd listener_;
  std::string path_;
  bool owns_path_ = false;
  AccessPolicy access_;
  Handler handler_;
  uint64_t next_conn_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  bool listening_ = true;
};

}  // namespace stoke::agent
