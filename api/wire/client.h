// Client: one connection to the agent's Unix socket, for the CLI and tests.
//
// Two kinds of failure are kept apart:
//  - the agent answered with an error (Response.error.code != OK, e.g.
//    NOT_FOUND): that is a normal Response, returned as a value;
//  - the conversation itself broke (connect failed, end of stream, malformed
//    frame or message): that is an Error. After one, the connection is
//    desynchronized, so every later call returns the same Error.
//
// Not thread-safe: use one Client per thread (it is movable, not copyable).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::wire {

// $STOKE_SOCKET if set and non-empty, else kDefaultSocketPath.
std::string default_socket_path();

class Client {
 public:
  static constexpr const char* kDefaultClientName = "stoke-cpp-client";

  // Connects to the agent's Unix stream socket at `socket_path` and performs
  // the Hello handshake. Fails with the agent's own message if it refuses
  // (e.g. UNSUPPORTED_VERSION, PERMISSION_DENIED) or answers with another
  // protocol version.
  static Result<Client> connect(const std::string& socket_path,
                                const std::string& client_name = kDefaultClientName);

  // Same handshake over a stream that is already connected (a socketpair in
  // tests, an inherited fd). Takes ownership of `stream`.
  static Result<Client> over(unique_fd stream,
                             const std::string& client_name = kDefaultClientName);

  Client(Client&&) noexcept = default;
  Client& operator=(Client&&) noexcept = default;

  // Sends `request` under the next request id (any id it carries is replaced)
  // and waits for its response. Responses to other calls in flight that
  // arrive first are kept for their wait_for.
  Result<stoke::v1::Response> call(stoke::v1::Request request);

  // Split form of call, so one connection can have several calls in flight:
  // send returns the id assigned to the request, wait_for(id) blocks until
  // that response arrives (or returns it at once if it already did). Each id
  // can be waited for once.
  Result<uint64_t> send(stoke::v1::Request request);
  Result<stoke::v1::Response> wait_for(uint64_t id);

  // What the agent said in the handshake (protocol and agent version).
  const stoke::v1::HelloReply& hello() const { return hello_; }
  int fd() const { return stream_.get(); }

 private:
  explicit Client(unique_fd stream) : stream_(std::move(stream)) {}

  Status handshake(const std::string& client_name);
  // Records a transport failure so every later call reports it too.
  Error fail(Error error);

  unique_fd stream_;
  stoke::v1::HelloReply hello_;
  // The handshake uses id 0; calls start at 1.
  uint64_t next_id_ = 1;
  std::unordered_set<uint64_t> in_flight_;
  std::unordered_map<uint64_t, stoke::v1::Response> arrived_early_;
  std::optional<Error> broken_;
};

}  // namespace stoke::wire
