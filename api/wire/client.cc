#include "api/wire/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>

#include "api/wire/frame.h"
#include "api/wire/protocol.h"

namespace stoke::wire {
namespace {

std::string describe_agent_error(const stoke::v1::Error& error) {
  std::string text = error.message().empty() ? "(no message)" : error.message();
  return text + " [" + stoke::v1::Error::Code_Name(error.code()) + "]";
}

bool is_error_response(const stoke::v1::Response& response) {
  return response.has_error() && response.error().code() != stoke::v1::Error::OK;
}

}  // namespace

std::string default_socket_path() {
  const char* from_env = std::getenv("STOKE_SOCKET");
  if (from_env != nullptr && from_env[0] != '\0') return from_env;
  return kDefaultSocketPath;
}

Result<Client> Client::connect(const std::string& socket_path, const std::string& client_name) {
  const std::string step = "connect to agent at " + socket_path;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(address.sun_path)) {
    return plain_error(step, "socket path must be 1.." + std::to_string(sizeof(address.sun_path) - 1) +
                                 " bytes long");
  }
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());

  unique_fd stream(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!stream) return sys_error(step + ": socket");
  if (::connect(stream.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) < 0) {
    return sys_error(step);
  }
  auto client = over(std::move(stream), client_name);
  if (!client) return client.error().context(step);
  return client;
}

Result<Client> Client::over(unique_fd stream, const std::string& client_name) {
  Client client(std::move(stream));
  STOKE_TRY(client.handshake(client_name));
  return client;
}

Status Client::handshake(const std::string& client_name) {
  stoke::v1::Request request;
  request.set_id(0);
  request.mutable_hello()->set_protocol_version(kProtocolVersion);
  request.mutable_hello()->set_client(client_name);
  // An agent that refuses the peer (PERMISSION_DENIED from SO_PEERCRED) says
  // so at once and closes, so the hello may fail with EPIPE; its reason is
  // still waiting to be read, and is the better message.
  Status written = write_frame(stream_.get(), request);

  auto payload = read_frame(stream_.get());
  if (!payload) return (written ? payload.error() : written.error()).context("handshake");
  auto response = parse_response(*payload);
  if (!response) return response.error().context("handshake");

  if (is_error_response(*response)) {
    return plain_error("handshake", "agent refused: " + describe_agent_error(response->error()));
  }
  if (!response->has_hello()) {
    return plain_error("handshake", "agent answered without a hello (protocol error)");
  }
  if (response->hello().protocol_version() != kProtocolVersion) {
    return plain_error("handshake", "agent speaks protocol version " +
                                        std::to_string(response->hello().protocol_version()) +
                                        ", this client speaks " + std::to_string(kProtocolVersion));
  }
  hello_ = response->hello();
  return {};
}

Error Client::fail(Error error) {
  broken_ = error;
  return error;
}

Result<uint64_t> Client::send(stoke::v1::Request request) {
  if (broken_) return *broken_;
  const uint64_t id = next_id_++;
  request.set_id(id);
  if (auto written = write_frame(stream_.get(), request); !written) return fail(written.error());
  in_flight_.insert(id);
  return id;
}

Result<stoke::v1::Response> Client::wait_for(uint64_t id) {
  if (auto early = arrived_early_.find(id); early != arrived_early_.end()) {
    stoke::v1::Response response = std::move(early->second);
    arrived_early_.erase(early);
    return response;
  }
  if (broken_) return *broken_;
  if (!in_flight_.contains(id)) {
    // Waiting would block forever: nothing will ever answer this id.
    return plain_error("wait for response", "no call with id " + std::to_string(id) + " is in flight");
  }

  while (true) {
    auto payload = read_frame(stream_.get());
    if (!payload) return fail(payload.error());
    auto response = parse_response(*payload);
    if (!response) return fail(response.error());

    const uint64_t answered = response->id();
    if (!in_flight_.erase(answered)) {
      // An error not tied to a call of ours is about the connection (e.g.
      // PROTOCOL_ERROR or UNAVAILABLE before the agent closes it).
      if (is_error_response(*response)) {
        return fail(plain_error("agent closed the conversation", describe_agent_error(response->error())));
      }
      return fail(plain_error("read response", "response for request id " + std::to_string(answered) +
                                                   ", which is not in flight"));
    }
    if (answered == id) return std::move(response).value();
    arrived_early_.emplace(answered, std::move(response).value());
  }
}

Result<stoke::v1::Response> Client::call(stoke::v1::Request request) {
  auto id = send(std::move(request));
  if (!id) return id.error();
  return wait_for(*id);
}

}  // namespace stoke::wire
