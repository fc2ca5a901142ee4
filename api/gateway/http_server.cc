#include "api/gateway/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include <cstring>

namespace stoke::gateway {

namespace {

// One request's state across the handler's calls (headers, body chunks, end).
struct Pending {
  HttpRequest request;
  size_t received = 0;  // body bytes so far
  bool too_large = false;
};

MHD_Result collect_query(void* cls, MHD_ValueKind, const char* key, const char* value) {
  auto* query = static_cast<std::map<std::string, std::string>*>(cls);
  if (key != nullptr && query->size() < 64) (*query)[key] = value != nullptr ? value : "";
  return MHD_YES;
}

MHD_Result send(MHD_Connection* connection, const HttpResponse& r) {
  MHD_Response* response =
      MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
  if (r.status == 401) MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"stoke\"");
  MHD_Result ok = MHD_queue_response(connection, static_cast<unsigned>(r.status), response);
  MHD_destroy_response(response);
  return ok;
}

}  // namespace

struct HttpServer::Daemon {
  MHD_Daemon* daemon = nullptr;
  Handler handler;
  HttpLimits limits;
  std::string cert, key;  // must outlive the daemon (MHD keeps the pointers)

  static MHD_Result on_request(void* cls, MHD_Connection* connection, const char* url, const char* method,
                               const char*, const char* upload_data, size_t* upload_size, void** state) {
    auto* self = static_cast<Daemon*>(cls);
    auto* pending = static_cast<Pending*>(*state);
    if (pending == nullptr) {
      // Headers are in: refuse a declared body that is too large before
      // reading a byte of it.
      // A body somewhat over the limit is read and dropped, so the client
      // (which is still sending) gets the 413 rather than a reset
      // connection; one far over it is refused at once.
      const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (length != nullptr && std::strtoull(length, nullptr, 10) > 4 * self->limits.max_body_bytes)
        return send(connection, error_response(413, "The request content was too large."));
      pending = new Pending;
      pending->request.method = method;
      pending->request.path = url;
      MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, collect_query, &pending->request.query);
      char* password = nullptr;
      char* user = MHD_basic_auth_get_username_password(connection, &password);
      if (user != nullptr && password != nullptr) pending->request.api_key = std::string(user) + ":" + password;
      if (user != nullptr) MHD_free(user);
      if (password != nullptr) MHD_free(password);
      *state = pending;
      return MHD_YES;
    }
    if (*upload_size != 0) {
      pending->received += *upload_size;
      if (pending->received > 4 * self->limits.max_body_bytes)
        return send(connection, error_response(413, "The request content was too large."));
      if (pending->received > self->limits.max_body_bytes) {
        pending->too_large = true;
        pending->request.body.clear();
        pending->request.body.shrink_to_fit();
      } else {
        pending->request.body.append(upload_data, *upload_size);
      }
      *upload_size = 0;
      return MHD_YES;
    }
    if (pending->too_large) return send(connection, error_response(413, "The request content was too large."));
    HttpResponse response;
    try {
      response = self->handler(pending->request);
    } catch (const std::exception& e) {
      response = error_response(500, std::string("The gateway failed: ") + e.what());
    }
    return send(connection, response);
  }

  static void on_completed(void*, MHD_Connection*, void** state, MHD_RequestTerminationCode) {
    delete static_cast<Pending*>(*state);
    *state = nullptr;
  }
};

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& address, uint16_t port,
                                                      const HttpLimits& limits, Handler handler,
                                                      const std::string& tls_cert_pem, const std::string& tls_key_pem) {
  std::unique_ptr<HttpServer> server(new HttpServer);
  server->daemon_ = std::make_unique<Daemon>();
  Daemon& d = *server->daemon_;
  d.handler = std::move(handler);
  d.limits = limits;
  d.cert = tls_cert_pem;
  d.key = tls_key_pem;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1)
    return plain_error("listen", "'" + address + "' is not an IPv4 address");
  const bool tls = !d.cert.empty() || !d.key.empty();
  if (tls && (d.cert.empty() || d.key.empty())) return plain_error("listen", "TLS needs both a certificate and a key");
  if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
    return plain_error("listen", "this libmicrohttpd has no TLS support");
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (tls) flags |= MHD_USE_TLS;
  MHD_OptionItem tls_options[] = {
      {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, const_cast<char*>(d.cert.c_str())},
      {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, const_cast<char*>(d.key.c_str())},
      {MHD_OPTION_END, 0, nullptr},
  };
  d.daemon = MHD_start_daemon(
      flags, port, nullptr, nullptr, &Daemon::on_request, &d, MHD_OPTION_SOCK_ADDR, &sa,
      MHD_OPTION_CONNECTION_LIMIT, limits.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      limits.max_connections_per_address, MHD_OPTION_CONNECTION_MEMORY_LIMIT, limits.max_header_bytes,
      MHD_OPTION_CONNECTION_TIMEOUT, limits.idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, &Daemon::on_completed,
      nullptr, MHD_OPTION_ARRAY, tls_options, MHD_OPTION_END);
  if (d.daemon == nullptr)
    return plain_error("listen on " + address + ":" + std::to_string(port),
                       "libmicrohttpd could not start (address in use, or a bad TLS certificate or key)");
  const MHD_DaemonInfo* info = MHD_get_daemon_info(d.daemon, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : port;
  return server;
}

HttpServer::~HttpServer() {
  if (daemon_ && daemon_->daemon != nullptr) MHD_stop_daemon(daemon_->daemon);
}

}  // namespace stoke::gateway
