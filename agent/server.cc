#include "agent/server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <deque>

#include <spdlog/spdlog.h>

#include "api/wire/frame.h"
#include "api/wire/protocol.h"
#include "api/wire/responses.h"

namespace stoke::agent {

struct Server::Connection {
  uint64_t id = 0;
  unique_fd fd;
  Peer peer;
  wire::FrameDecoder decoder{wire::kMaxFrameBytes};
  bool greeted = false;    // the Hello handshake is done
  bool closing = false;    // stop reading; close once the queue is flushed
  bool writing = false;    // a write is in flight
  std::deque<std::string> out;  // encoded frames waiting to be written
  size_t out_offset = 0;   // bytes of out.front() already written
  std::unique_ptr<char[]> buf = std::make_unique<char[]>(64 * 1024);
  size_t in_flight = 0;    // requests handed to the handler, not yet answered
};

using wire::error_response;

// Root always; with no lists, whoever could open the socket (its mode and
// group are the first gate); otherwise only the listed uids and gids.
bool AccessPolicy::allows(const Peer& peer) const {
  if (peer.uid == 0) return true;
  if (allowed_uids.empty() && allowed_gids.empty()) return true;
  return allowed_uids.count(peer.uid) > 0 || allowed_gids.count(peer.gid) > 0;
}

Result<std::unique_ptr<Server>> Server::listen(EventLoop& loop, const std::string& path, const std::string& group,
                                               int inherited_fd, AccessPolicy access, Handler handler) {
  std::unique_ptr<Server> s(new Server(loop));
  s->access_ = std::move(access);
  s->handler_ = std::move(handler);
  s->path_ = path;
  if (inherited_fd >= 0) {
    s->listener_.reset(inherited_fd);  // systemd made it, with its own mode and group
  } else {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return plain_error("listen on " + path, "socket path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    s->listener_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s->listener_) return sys_error("socket for " + path);
    // A socket file left by a previous run (crash) is replaced; anything else
    // at that path is not ours to delete.
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return plain_error("listen on " + path, "the path exists and is not a socket");
      unlink(path.c_str());
    }
    // Created 0600 (umask) and only then opened up, so there is no moment in
    // which the wrong people could connect.
    mode_t old = umask(0177);
    int rc = bind(s->listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    umask(old);
    if (rc != 0) return sys_error("bind " + path);
    s->owns_path_ = true;
    if (!group.empty()) {
      struct group gr, *grp = nullptr;
      char buf[4096];
      if (getgrnam_r(group.c_str(), &gr, buf, sizeof buf, &grp) != 0 || grp == nullptr)
        return plain_error("listen on " + path, "socket group '" + group + "' does not exist");
      if (chown(path.c_str(), 0, grp->gr_gid) != 0) return sys_error("chown " + path);
    }
    if (chmod(path.c_str(), group.empty() ? 0600 : 0660) != 0) return sys_error("chmod " + path);
    if (::listen(s->listener_.get(), 128) != 0) return sys_error("listen on " + path);
  }
  s->accept_next();
  return s;
}

Server::~Server() {
  if (owns_path_) unlink(path_.c_str());
}

void Server::close_listener() {
  listening_ = false;
  if (owns_path_) unlink(path_.c_str());
  owns_path_ = false;
  // shutdown() wakes the pending accept with an error; the fd closes with us.
  ::shutdown(listener_.get(), SHUT_RDWR);
}

void Server::accept_next() {
  if (!listening_) return;
  loop_.accept(listener_.get(), [this](int fd) {
    if (fd >= 0) on_accept(fd);
    else if (fd != -EINTR && fd != -ECONNABORTED && listening_) spdlog::warn("accept: {}", std::strerror(-fd));
    accept_next();
  });
}

void Server::on_accept(int fd) {
  auto c = std::make_shared<Connection>();
  c->id = next_conn_++;
  c->fd.reset(fd);
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    spdlog::warn("connection {}: cannot read peer credentials; closing", c->id);
    return;
  }
  c->peer = {cred.pid, cred.uid, cred.gid};
  connections_[c->id] = c;
  if (!access_.allows(c->peer)) {
    spdlog::warn("connection {}: refused pid {} uid {} gid {}: not in the allowed uids/gids", c->id, cred.pid,
                 cred.uid, cred.gid);
    send(c, error_response(0, v1::Error::PERMISSION_DENIED,
                           "uid " + std::to_string(cred.uid) + " may not use this agent (see allowed_uids/allowed_gids)"));
    c->closing = true;
    flush(c);
    return;
  }
  spdlog::debug("connection {}: pid {} uid {}", c->id, cred.pid, cred.uid);
  read_next(c);
}

void Server::read_next(const std::shared_ptr<Connection>& c) {
  if (c->closing) return;
  loop_.read(c->fd.get(), c->buf.get(), 64 * 1024, [this, c](int n) {
    if (n <= 0) {
      // EOF or error: the client is gone. Replies still in flight are dropped.
      c->closing = true;
      c->out.clear();
      if (!c->writing) close(c);
      return;
    }
    auto decoded = c->decoder.feed(std::string_view(c->buf.get(), static_cast<size_t>(n)));
    for (auto& f : decoded.frames) {
      on_frame(c, std::move(f));
      if (c->closing) return;
    }
    if (!decoded.ok()) {
      spdlog::warn("connection {}: {}; closing", c->id, decoded.error->message());
      send(c, error_response(0, v1::Error::PROTOCOL_ERROR, decoded.error->message()));
      c->closing = true;
      flush(c);
      return;
    }
    read_next(c);
  });
}

void Server::on_frame(const std::shared_ptr<Connection>& c, std::string frame) {
  auto request = wire::parse_request(frame);
  if (!request.ok()) {
    send(c, error_response(0, v1::Error::PROTOCOL_ERROR, request.error().message()));
    c->closing = true;
    flush(c);
    return;
  }
  v1::Request& req = request.value();
  if (!c->greeted) {
    if (req.body_case() != v1::Request::kHello) {
      send(c, error_response(req.id(), v1::Error::PROTOCOL_ERROR, "the first message must be hello"));
      c->closing = true;
      flush(c);
      return;
    }
    if (req.hello().protocol_version() != wire::kProtocolVersion) {
      send(c, error_response(req.id(), v1::Error::UNSUPPORTED_VERSION,
                             "this agent speaks protocol version " + std::to_string(wire::kProtocolVersion) +
                                 ", the client " + std::to_string(req.hello().protocol_version())));
      c->closing = true;
      flush(c);
      return;
    }
    c->greeted = true;
    v1::Response r;
    r.set_id(req.id());
    r.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
    r.mutable_hello()->set_agent_version(wire::kAgentVersion);
    send(c, r);
    return;
  }
  ++c->in_flight;
  handler_(c->peer, std::move(req), [this, c](v1::Response response) {
    --c->in_flight;
    if (c->closing && c->out.empty() && !c->writing) {
      // The client left; nobody to answer. Drop the connection once idle.
      if (c->in_flight == 0) close(c);
      return;
    }
    send(c, response);
  });
}

void Server::send(const std::shared_ptr<Connection>& c, const v1::Response& response) {
  auto frame = wire::encode_frame(response);
  if (!frame.ok()) {
    // Only a message over the frame limit fails to encode; tell the client.
    auto fallback = wire::encode_frame(error_response(response.id(), v1::Error::RESOURCE_EXHAUSTED,
                                                      "the response is too large to send"));
    if (!fallback.ok()) return;
    c->out.push_back(std::move(fallback.value()));
  } else {
    c->out.push_back(std::move(frame.value()));
  }
  flush(c);
}

void Server::flush(const std::shared_ptr<Connection>& c) {
  if (c->writing) return;
  if (c->out.empty()) {
    if (c->closing && c->in_flight == 0) close(c);
    return;
  }
  c->writing = true;
  const std::string& front = c->out.front();
  loop_.write(c->fd.get(), front.data() + c->out_offset, front.size() - c->out_offset, [this, c](int n) {
    c->writing = false;
    if (n <= 0) {
      c->closing = true;
      c->out.clear();
      c->out_offset = 0;
      if (c->in_flight == 0) close(c);
      return;
    }
    c->out_offset += static_cast<size_t>(n);
    if (c->out_offset == c->out.front().size()) {
      c->out.pop_front();
      c->out_offset = 0;
    }
    flush(c);
  });
}

void Server::close(const std::shared_ptr<Connection>& c) {
  if (connections_.erase(c->id) == 0) return;
  spdlog::debug("connection {}: closed", c->id);
  // Pending reads on the fd complete with an error once it is shut down; the
  // Connection (and its buffer) lives until those callbacks drop it.
  ::shutdown(c->fd.get(), SHUT_RDWR);
}

}  // namespace stoke::agent
