#include "agent/server.h"

#include <grp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <optional>

#include <spdlog/spdlog.h>

#include "api/wire/frame.h"
#include "api/wire/protocol.h"
#include "api/wire/responses.h"

namespace stoke::agent {

struct Server::Connection {
  uint64_t id = 0;
  unique_fd fd;
  Peer peer;
  wire::FrameDecoder decoder;
  size_t accounted = 0;    // decoder bytes counted in Server::buffered_bytes_
  bool greeted = false;    // the Hello handshake is done
  bool closing = false;    // stop reading; close once in-flight replies are out
  bool closed = false;     // gone from the server; late callbacks do nothing
  bool polling = false;    // a readiness poll is pending
  bool waiting_budget = false;  // in budget_waiters_
  bool writing = false;    // a write of `writing_frame` is pending (the kernel reads it)
  std::deque<std::string> decoded;  // complete frames not yet handed out
  std::optional<std::string> protocol_error;  // to send once `decoded` is done
  std::deque<std::string> out;  // encoded replies waiting to be written
  std::string writing_frame;    // the reply being written (owned here while the kernel reads it)
  size_t write_offset = 0;
  size_t out_bytes = 0;         // unwritten bytes of `out` and `writing_frame`
  size_t in_flight = 0;         // requests handed to the handler, not yet answered
  // When the frame being received (or, before the hello, the hello) must be
  // complete; unset while nothing is owed.
  std::optional<std::chrono::steady_clock::time_point> deadline;

  explicit Connection(size_t max_frame_bytes) : decoder(max_frame_bytes) {}
  // Requests whose replies have not left yet: the in-flight cap counts these.
  size_t outstanding() const { return in_flight + out.size() + (writing_frame.empty() ? 0 : 1); }
};

using wire::error_response;

namespace {

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Every directory from / down to `dir`, checked with socket_dir_problem.
Status check_dir_chain(const std::string& dir) {
  std::vector<std::string> prefixes = {"/"};
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (i > 1) prefixes.push_back(dir.substr(0, i));
    }
  }
  for (const auto& p : prefixes) {
    struct stat st;
    // A symlink in the chain is only as safe as its owner: one a user owns
    // can be pointed elsewhere between this check and the bind.
    if (lstat(p.c_str(), &st) != 0) return sys_error("check socket directory " + p);
    if (S_ISLNK(st.st_mode) && st.st_uid != 0)
      return plain_error("listen", "unsafe socket directory: " + p + " is a symlink owned by uid " +
                                       std::to_string(st.st_uid));
    if (stat(p.c_str(), &st) != 0) return sys_error("check socket directory " + p);
    if (auto why = socket_dir_problem(p, st.st_uid, st.st_mode, p == dir))
      return plain_error("listen", "unsafe socket directory: " + *why);
  }
  return {};
}

}  // namespace

// Root always; with no lists, whoever could open the socket (its mode and
// group are the first gate); otherwise only the listed uids and gids.
bool AccessPolicy::allows(const Peer& peer) const {
  if (peer.uid == 0 || requires_key(peer)) return true;
  if (allowed_uids.empty() && allowed_gids.empty()) return true;
  return allowed_uids.count(peer.uid) > 0 || allowed_gids.count(peer.gid) > 0;
}

Server::Server(EventLoop& loop, ServerLimits limits)
    : loop_(loop),
      limits_(limits),
      counter_(limits.max_connections, limits.max_connections_per_uid),
      read_buf_(std::make_unique<char[]>(kReadChunkBytes)) {}

Result<std::unique_ptr<Server>> Server::listen(EventLoop& loop, const std::string& path, const std::string& group,
                                               int inherited_fd, AccessPolicy access, Handler handler,
                                               ServerLimits limits) {
  std::unique_ptr<Server> s(new Server(loop, limits));
  s->access_ = std::move(access);
  s->handler_ = std::move(handler);
  s->path_ = path;
  if (inherited_fd >= 0) {
    s->listener_.reset(inherited_fd);  // systemd made it, with its own mode and group
  } else {
    STOKE_TRY(s->bind_safely(group));
  }
  s->accept_next();
  s->sweep();
  return s;
}

// Binds in a fresh root-only directory beside the path, sets owner and mode
// there (by path, but nobody else can reach that path), starts listening and
// only then renames the socket into place: it appears complete, and a symlink
// planted at the path is replaced, never followed.
Status Server::bind_safely(const std::string& group) {
  const std::string& path = path_;
  if (path.empty() || path[0] != '/') return plain_error("listen on " + path, "the socket path must be absolute");
  const std::string dir = parent_dir(path);
  STOKE_TRY(check_dir_chain(dir));
  char real[PATH_MAX];
  if (realpath(dir.c_str(), real) == nullptr) return sys_error("resolve " + dir);
  if (dir != real) STOKE_TRY(check_dir_chain(real));

  gid_t gid = 0;
  if (!group.empty()) {
    struct group gr, *grp = nullptr;
    char buf[4096];
    if (getgrnam_r(group.c_str(), &gr, buf, sizeof buf, &grp) != 0 || grp == nullptr)
      return plain_error("listen on " + path, "socket group '" + group + "' does not exist");
    gid = grp->gr_gid;
  }
  // A socket file left by a previous run (crash) is replaced; anything else
  // at that path is not ours to replace.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
    return plain_error("listen on " + path, "the path exists and is not a socket");

  std::string private_dir = (dir == "/" ? "" : dir) + "/.stoke-XXXXXX";
  if (mkdtemp(private_dir.data()) == nullptr) return sys_error("private directory for the socket in " + dir);
  const std::string staged = private_dir + "/s";
  auto cleanup = [&] {
    unlink(staged.c_str());
    rmdir(private_dir.c_str());
  };
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (staged.size() >= sizeof addr.sun_path) {
    cleanup();
    return plain_error("listen on " + path, "socket path too long (it is bound as " + staged + " first)");
  }
  std::memcpy(addr.sun_path, staged.c_str(), staged.size() + 1);
  listener_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener_) {
    cleanup();
    return sys_error("socket for " + path);
  }
  // Created 0600 (umask) and only then opened up, so there is no moment in
  // which the wrong people could connect.
  mode_t old = umask(0177);
  int rc = bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  Status step;
  if (rc != 0) step = sys_error("bind " + staged);
  else if (!group.empty() && chown(staged.c_str(), 0, gid) != 0) step = sys_error("chown " + staged);
  else if (chmod(staged.c_str(), group.empty() ? 0600 : 0660) != 0) step = sys_error("chmod " + staged);
  else if (::listen(listener_.get(), 128) != 0) step = sys_error("listen on " + staged);
  else if (rename(staged.c_str(), path.c_str()) != 0) step = sys_error("rename " + staged + " to " + path);
  if (!step.ok()) {
    cleanup();
    return step;
  }
  rmdir(private_dir.c_str());
  owns_path_ = true;
  return {};
}

Server::~Server() {
  *alive_ = false;
  if (owns_path_) unlink(path_.c_str());
}

void Server::close_listener() {
  listening_ = false;
  if (owns_path_) unlink(path_.c_str());
  owns_path_ = false;
  // The pending accept is cancelled (its callback sees -ECANCELED); the fd
  // closes with us. Never shutdown(): a socket systemd handed us is the same
  // socket as systemd's own, and shutting it down would leave stoked.socket
  // "listening" on a socket that refuses every connection, so the next client
  // could never start the agent again (found under systemd in the v2 VM).
  if (accept_op_ != 0) loop_.cancel(accept_op_);
}

void Server::accept_next() {
  if (!listening_) return;
  accept_op_ = loop_.accept(listener_.get(), [this, alive = alive_](int fd) {
    if (!*alive) {
      if (fd >= 0) ::close(fd);
      return;
    }
    if (fd >= 0) {
      on_accept(fd);
    } else if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
      // Out of fds or memory: retrying at once would spin the loop and flood
      // the log. Pending connections wait in the backlog meanwhile.
      if (listening_) spdlog::warn("accept: {}; pausing accepts for 100 ms", std::strerror(-fd));
      loop_.timer(std::chrono::milliseconds(100), [this, alive](int) {
        if (*alive) accept_next();
      });
      return;
    } else if (fd != -EINTR && fd != -ECONNABORTED && listening_) {
      spdlog::warn("accept: {}", std::strerror(-fd));
    }
    accept_next();
  });
}

void Server::on_accept(int fd) {
  unique_fd owned(fd);
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    spdlog::warn("connection: cannot read peer credentials; closing");
    return;
  }
  Peer peer{cred.pid, cred.uid, cred.gid};
  auto admission = counter_.admit(peer.uid);
  if (admission != ConnectionCounter::Admission::kAdmitted) {
    refuse_over_cap(owned.get(), peer, admission);
    return;
  }
  auto c = std::make_shared<Connection>(limits_.max_frame_bytes);
  c->id = next_conn_++;
  c->fd = std::move(owned);
  c->peer = peer;
  c->deadline = Clock::now() + limits_.frame_timeout;  // for the hello
  connections_[c->id] = c;
  if (!access_.allows(c->peer)) {
    spdlog::warn("connection {}: refused pid {} uid {} gid {}: not in the allowed uids/gids", c->id, cred.pid,
                 cred.uid, cred.gid);
    send(c, error_response(0, v1::Error::PERMISSION_DENIED,
                           "uid " + std::to_string(cred.uid) + " may not use this agent (see allowed_uids/allowed_gids)"));
    finish(c);
    return;
  }
  spdlog::debug("connection {}: pid {} uid {}", c->id, cred.pid, cred.uid);
  arm_read(c);
}

// Over a connection cap: one error frame, written without waiting (the new
// socket's buffer is empty, so it fits), then closed. No state is kept, so a
// flood of connections costs an accept and a close each.
void Server::refuse_over_cap(int fd, const Peer& peer, ConnectionCounter::Admission why) {
  const bool total = why == ConnectionCounter::Admission::kOverTotal;
  std::string message =
      total ? "the agent has " + std::to_string(counter_.total()) + " connections (max_connections); try again later"
            : "uid " + std::to_string(peer.uid) + " has " + std::to_string(counter_.of(peer.uid)) +
                  " connections open (max_connections_per_uid); close some first";
  auto frame = wire::encode_frame(error_response(0, v1::Error::RESOURCE_EXHAUSTED, message));
  if (frame.ok()) (void)!::send(fd, frame->data(), frame->size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  // One line per sweep period at most; the rest are counted (sweep()).
  if (refused_unlogged_++ == 0)
    spdlog::warn("connection from pid {} uid {} refused: {}", peer.pid, peer.uid, message);
}

bool Server::paused(const Connection& c) const {
  return read_paused(c.decoded.size(), c.outstanding(), limits_.max_requests_in_flight);
}

void Server::arm_read(const std::shared_ptr<Connection>& c) {
  if (c->closed || c->closing || c->polling || c->waiting_budget || paused(*c)) return;
  c->polling = true;
  loop_.poll(c->fd.get(), POLLIN, [this, c, alive = alive_](int res) {
    c->polling = false;
    if (!*alive) return;
    if (c->closed) {
      if (!c->writing) c->fd.reset();
      return;
    }
    if (c->closing) return;
    if (res < 0) {
      drop(c);
      return;
    }
    on_readable(c);
  });
}

void Server::on_readable(const std::shared_ptr<Connection>& c) {
  // Partial frames of all connections share one budget; over it, a
  // connection that holds part of a frame waits for a frame to complete or a
  // connection to close (its frame deadline still runs, so stalled holders of
  // the budget are closed and cannot wedge it). A connection holding nothing
  // may always read one chunk, so small requests keep flowing meanwhile.
  if (c->decoder.buffered_bytes() > 0 && buffered_bytes_ + kReadChunkBytes > limits_.max_buffered_bytes) {
    c->waiting_budget = true;
    budget_waiters_.push_back(c);
    return;
  }
  ssize_t n = ::recv(c->fd.get(), read_buf_.get(), kReadChunkBytes, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    arm_read(c);
    return;
  }
  if (n <= 0) {
    // EOF or error: the client is gone. Replies still in flight are dropped.
    drop(c);
    return;
  }
  auto decoded = c->decoder.feed(std::string_view(read_buf_.get(), static_cast<size_t>(n)));
  account_buffered(*c);
  if (!decoded.frames.empty()) c->deadline.reset();
  if (c->decoder.buffered_bytes() > 0 && !c->deadline) c->deadline = Clock::now() + limits_.frame_timeout;
  for (auto& f : decoded.frames) c->decoded.push_back(std::move(f));
  if (!decoded.ok()) {
    spdlog::warn("connection {} (pid {} uid {}): {}; closing", c->id, c->peer.pid, c->peer.uid,
                 decoded.error->message());
    c->protocol_error = decoded.error->message();
  }
  dispatch(c);
}

// Hands decoded frames to the handler while the connection has free slots;
// then reads more, unless it is paused.
void Server::dispatch(const std::shared_ptr<Connection>& c) {
  while (!c->closed && !c->closing && !c->decoded.empty() && c->outstanding() < limits_.max_requests_in_flight) {
    std::string frame = std::move(c->decoded.front());
    c->decoded.pop_front();
    on_frame(c, std::move(frame));
  }
  if (c->closed || c->closing) return;
  if (c->decoded.empty() && c->protocol_error) {
    send(c, error_response(0, v1::Error::PROTOCOL_ERROR, *c->protocol_error));
    finish(c);
    return;
  }
  arm_read(c);
}

void Server::account_buffered(Connection& c) {
  size_t now = c.closed ? 0 : c.decoder.buffered_bytes();
  buffered_bytes_ = buffered_bytes_ - c.accounted + now;
  bool shrank = now < c.accounted;
  c.accounted = now;
  if (shrank) wake_budget_waiters();
}

void Server::wake_budget_waiters() {
  while (!budget_waiters_.empty() && buffered_bytes_ + kReadChunkBytes <= limits_.max_buffered_bytes) {
    auto c = budget_waiters_.front().lock();
    budget_waiters_.pop_front();
    if (!c || c->closed) continue;
    c->waiting_budget = false;
    arm_read(c);
  }
}

void Server::on_frame(const std::shared_ptr<Connection>& c, std::string frame) {
  auto request = wire::parse_request(frame);
  if (!request.ok()) {
    send(c, error_response(0, v1::Error::PROTOCOL_ERROR, request.error().message()));
    finish(c);
    return;
  }
  v1::Request& req = request.value();
  if (!c->greeted) {
    if (req.body_case() != v1::Request::kHello) {
      send(c, error_response(req.id(), v1::Error::PROTOCOL_ERROR, "the first message must be hello"));
      finish(c);
      return;
    }
    if (req.hello().protocol_version() != wire::kProtocolVersion) {
      send(c, error_response(req.id(), v1::Error::UNSUPPORTED_VERSION,
                             "this agent speaks protocol version " + std::to_string(wire::kProtocolVersion) +
                                 ", the client " + std::to_string(req.hello().protocol_version())));
      finish(c);
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
  handler_(c->peer, std::move(req), [this, c, alive = alive_](v1::Response response) {
    --c->in_flight;
    if (!*alive || c->closed) return;  // the client left; nobody to answer
    send(c, response);
  });
}

void Server::send(const std::shared_ptr<Connection>& c, const v1::Response& response) {
  if (c->closed) return;
  auto frame = wire::encode_frame(response);
  if (!frame.ok()) {
    // Only a message over the frame limit fails to encode; tell the client.
    frame = wire::encode_frame(error_response(response.id(), v1::Error::RESOURCE_EXHAUSTED,
                                              "the response is too large to send"));
    if (!frame.ok()) return;
  }
  if (!output_fits(c->out_bytes, frame->size(), limits_.max_output_bytes)) {
    spdlog::warn("connection {} (pid {} uid {}): does not read its replies ({} bytes unread, a {} byte reply would "
                 "pass max_output_bytes {}); disconnecting",
                 c->id, c->peer.pid, c->peer.uid, c->out_bytes, frame->size(), limits_.max_output_bytes);
    drop(c);
    return;
  }
  c->out_bytes += frame->size();
  c->out.push_back(std::move(frame.value()));
  flush(c);
}

void Server::flush(const std::shared_ptr<Connection>& c) {
  if (c->closed || c->writing) return;
  if (c->writing_frame.empty()) {
    if (c->out.empty()) {
      if (c->closing && c->outstanding() == 0) close(c);
      return;
    }
    c->writing_frame = std::move(c->out.front());
    c->out.pop_front();
    c->write_offset = 0;
  }
  c->writing = true;
  loop_.write(c->fd.get(), c->writing_frame.data() + c->write_offset, c->writing_frame.size() - c->write_offset,
              [this, c, alive = alive_](int n) {
                c->writing = false;
                if (!*alive) return;
                if (c->closed) {
                  if (!c->polling) c->fd.reset();
                  return;
                }
                if (n <= 0) {
                  drop(c);  // the client is gone
                  return;
                }
                c->out_bytes -= static_cast<size_t>(n);
                c->write_offset += static_cast<size_t>(n);
                if (c->write_offset < c->writing_frame.size()) {
                  flush(c);  // short write: the rest of the same frame
                  return;
                }
                std::string().swap(c->writing_frame);  // a large reply's memory goes now
                c->write_offset = 0;
                flush(c);
                // A reply left: a slot is free for decoded frames, or reading.
                dispatch(c);
              });
}

void Server::finish(const std::shared_ptr<Connection>& c) {
  if (c->closed) return;
  c->closing = true;
  // A client that never reads its last replies must not hold its slot (and
  // a pending write) forever.
  c->deadline = Clock::now() + limits_.frame_timeout;
  c->decoded.clear();
  flush(c);
}

void Server::drop(const std::shared_ptr<Connection>& c) {
  if (c->closed) return;
  c->out.clear();
  c->out_bytes = 0;
  c->decoded.clear();
  close(c);
}

void Server::close(const std::shared_ptr<Connection>& c) {
  if (c->closed) return;
  c->closed = true;
  connections_.erase(c->id);
  counter_.release(c->peer.uid);
  c->decoder = wire::FrameDecoder(0);  // frees a partial frame now
  account_buffered(*c);
  spdlog::debug("connection {}: closed", c->id);
  // Pending operations on the fd complete with an error once it is shut
  // down; the fd is closed when none is left (the kernel may still be using
  // `writing_frame`, which the Connection owns until then).
  ::shutdown(c->fd.get(), SHUT_RDWR);
  if (!c->polling && !c->writing) c->fd.reset();
}

// Periodic: closes connections whose frame (or hello) is overdue, and reports
// connections refused over the caps since the last sweep.
void Server::sweep() {
  const auto now = Clock::now();
  std::vector<std::shared_ptr<Connection>> overdue;
  for (auto& [id, c] : connections_) {
    if (!c->deadline) continue;
    // Not reading it is our doing (back-pressure), not the client's.
    if (!c->closing && paused(*c)) {
      c->deadline = now + limits_.frame_timeout;
      continue;
    }
    if (now > *c->deadline) overdue.push_back(c);
  }
  for (auto& c : overdue) {
    if (c->closing) {
      spdlog::warn("connection {} (pid {} uid {}): its last replies were not taken within {} ms; closing", c->id,
                   c->peer.pid, c->peer.uid, limits_.frame_timeout.count());
      drop(c);
      continue;
    }
    spdlog::warn("connection {} (pid {} uid {}): {} within {} ms ({} bytes of a frame received); closing", c->id,
                 c->peer.pid, c->peer.uid, c->greeted ? "no complete frame" : "no hello",
                 limits_.frame_timeout.count(), c->decoder.buffered_bytes());
    drop(c);
  }
  if (refused_unlogged_ > 1)
    spdlog::warn("{} more connections refused over max_connections/max_connections_per_uid", refused_unlogged_ - 1);
  refused_unlogged_ = 0;
  auto period = std::clamp(limits_.frame_timeout / 4, std::chrono::milliseconds(50), std::chrono::milliseconds(1000));
  loop_.timer(std::chrono::duration_cast<std::chrono::milliseconds>(period), [this, alive = alive_](int res) {
    if (*alive && res != -ECANCELED) sweep();
  });
}

}  // namespace stoke::agent
