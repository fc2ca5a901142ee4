// stoke-gateway: the node's HTTP control plane (OpenWhisk's REST API),
// unprivileged, stateless; it talks to stoked only through its socket, as a
// key-only client (stoked.conf key_required_uids). docs/gateway.md.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "api/gateway/http_server.h"
#include "api/gateway/openwhisk_api.h"
#include "api/wire/client.h"
#include "sandbox/base/file_util.h"

namespace {

constexpr const char* kUsage =
    "usage: stoke-gateway [--listen ADDR:PORT] [--socket PATH] [--tls-cert PEM --tls-key PEM]\n"
    "                     [--max-body BYTES] [--max-connections N]\n"
    "  --listen   where to serve HTTP (default 127.0.0.1:3233)\n"
    "  --socket   the agent's socket (default $STOKE_SOCKET, else /run/stoke/stoke.sock)\n"
    "Clients authenticate with HTTP Basic auth: a namespace key, uuid as user and secret as password\n"
    "(`stoke ns create NAME` prints one).\n";

// One connection to the agent per HTTP connection thread, made on first use
// and made again after it broke (the agent restarted).
stoke::Result<stoke::v1::Response> call_agent(const std::string& socket, stoke::v1::Request request) {
  thread_local std::optional<stoke::wire::Client> client;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!client) {
      auto c = stoke::wire::Client::connect(socket, "stoke-gateway");
      if (!c.ok()) return c.error();
      client.emplace(std::move(c.value()));
    }
    auto r = client->call(request);
    if (r.ok()) return r;
    client.reset();
    // Only a request that cannot have run is sent again: reads, not invokes.
    if (request.has_invoke() || request.has_create_function() || request.has_update_function() ||
        request.has_delete_function())
      return r.error();
  }
  return stoke::plain_error("call the agent", "the connection broke twice");
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:3233", socket = stoke::wire::default_socket_path(), cert_file, key_file;
  stoke::gateway::HttpLimits limits;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "stoke-gateway: %s needs a value\n%s", args[i].c_str(), kUsage);
        std::exit(2);
      }
      return args[++i];
    };
    if (args[i] == "--listen") listen = value();
    else if (args[i] == "--socket") socket = value();
    else if (args[i] == "--tls-cert") cert_file = value();
    else if (args[i] == "--tls-key") key_file = value();
    else if (args[i] == "--max-body") limits.max_body_bytes = std::strtoull(value().c_str(), nullptr, 10);
    else if (args[i] == "--max-connections") limits.max_connections = static_cast<unsigned>(std::strtoul(value().c_str(), nullptr, 10));
    else if (args[i] == "-h" || args[i] == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "stoke-gateway: unknown option '%s'\n%s", args[i].c_str(), kUsage);
      return 2;
    }
  }
  size_t colon = listen.rfind(':');
  unsigned long port = colon == std::string::npos ? 70000 : std::strtoul(listen.c_str() + colon + 1, nullptr, 10);
  if (colon == std::string::npos || port > 65535) {
    std::fprintf(stderr, "stoke-gateway: --listen wants ADDR:PORT, not '%s'\n", listen.c_str());
    return 2;
  }
  std::string cert, key;
  if (!cert_file.empty() || !key_file.empty()) {
    auto c = stoke::read_file(cert_file);
    auto k = stoke::read_file(key_file);
    if (!c.ok() || !k.ok()) {
      std::fprintf(stderr, "stoke-gateway: read TLS files: %s\n", (!c.ok() ? c.error() : k.error()).message().c_str());
      return 1;
    }
    cert = c.value();
    key = k.value();
  }
  // SIGTERM/SIGINT are waited for below, not delivered; a client that goes
  // away mid-reply must not kill the process.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  stoke::gateway::OpenWhiskApi api(
      [socket](stoke::v1::Request r) { return call_agent(socket, std::move(r)); });
  auto server = stoke::gateway::HttpServer::start(
      listen.substr(0, colon), static_cast<uint16_t>(port), limits,
      [&api](const stoke::gateway::HttpRequest& r) { return api.handle(r); }, cert, key);
  if (!server.ok()) {
    std::fprintf(stderr, "stoke-gateway: %s\n", server.error().message().c_str());
    return 1;
  }
  std::fprintf(stderr, "stoke-gateway: serving %s on %s:%u for the agent at %s\n", cert.empty() ? "http" : "https",
               listen.substr(0, colon).c_str(), server.value()->port(), socket.c_str());
  int sig = 0;
  sigwait(&stop, &sig);
  std::fprintf(stderr, "stoke-gateway: stopping (signal %d)\n", sig);
  return 0;
}
