// The OpenWhisk REST API (the subset under /api/v1 that `wsk` and the
// `openwhisk` npm client use for actions and activations) on top of the
// agent's protobuf API. Pure: the agent is a function that answers requests,
// so the routing and the JSON shapes are unit-tested with a fake agent
// (tests/unit/openwhisk_api_test.cc); stoke-gateway gives it the real one.
//
// Every request is authenticated by the agent: the HTTP Basic credentials are
// the namespace key ("uuid:secret"), forwarded as the request's api_key. The
// gateway holds no state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"

namespace stoke::gateway {

struct HttpRequest {
  std::string method;  // GET, PUT, POST, DELETE, ...
  std::string path;    // decoded, without the query
  std::map<std::string, std::string> query;
  std::string body;
  std::string api_key;  // from Authorization: Basic (uuid:secret), "" if none
};

struct HttpResponse {
  int status = 200;
  std::string body;  // JSON
  std::string content_type = "application/json";
};

// One call to the agent; an Error when the conversation broke (the agent is
// down), else its Response (which may carry an API error).
using AgentCall = std::function<Result<v1::Response>(v1::Request)>;

class OpenWhiskApi {
 public:
  explicit OpenWhiskApi(AgentCall agent) : agent_(std::move(agent)) {}
  HttpResponse handle(const HttpRequest& request) const;

 private:
  AgentCall agent_;
};

// The OpenWhisk error body: {"error": message, "code": an id for the logs}.
HttpResponse error_response(int status, const std::string& message);
// The HTTP status OpenWhisk gives for the agent's error code.
int http_status_for(v1::Error::Code code);

}  // namespace stoke::gateway
