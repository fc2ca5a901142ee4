// The gateway's HTTP/1.1 server, on GNU libmicrohttpd (docs/architecture.md
// says why): keep-alive, one thread per connection (an invocation blocks its
// connection's thread, never another connection), and the limits a public
// listener needs — connections in total and per client address, header
// bytes, body bytes, idle and slow clients.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/gateway/openwhisk_api.h"
#include "sandbox/base/result.h"

namespace stoke::gateway {

struct HttpLimits {
  // Each connection holds one connection to the agent, which admits 128 per
  // uid by default (api_limits.max_connections_per_uid): keep this at or
  // below that, or raise both together.
  unsigned max_connections = 128;
  unsigned max_connections_per_address = 32;
  size_t max_header_bytes = 32 << 10;  // memory per connection for the request line and headers
  size_t max_body_bytes = 5 << 20;     // larger bodies get 413 (OpenWhisk's 50 MiB code limit is not ours)
  unsigned idle_timeout_s = 30;        // a connection silent this long is closed
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Listens on address:port (IPv4), TLS when cert and key (PEM files) are given.
  static Result<std::unique_ptr<HttpServer>> start(const std::string& address, uint16_t port, const HttpLimits& limits,
                                                   Handler handler, const std::string& tls_cert_pem = "",
                                                   const std::string& tls_key_pem = "");
  ~HttpServer();  // stops: no new connections, waits for the threads
  uint16_t port() const { return port_; }

  struct Daemon;

 private:
  HttpServer() = default;
  std::unique_ptr<Daemon> daemon_;
  uint16_t port_ = 0;
};

}  // namespace stoke::gateway
