#include "api/gateway/openwhisk_api.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "agent/json_limits.h"
#include "api/wire/names.h"

namespace stoke::gateway {

namespace {

using json = nlohmann::json;

// ---- small helpers -----------------------------------------------------------------

std::string transaction_id() {
  unsigned char b[16] = {};
  if (getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) return "0";
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

HttpResponse json_response(int status, const json& j) {
  return {status, j.dump(-1, ' ', false, json::error_handler_t::replace)};
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t at = 0;
  while (at <= path.size()) {
    size_t slash = path.find('/', at);
    if (slash == std::string::npos) slash = path.size();
    if (slash > at) parts.push_back(path.substr(at, slash - at));
    at = slash + 1;
  }
  return parts;
}

bool truthy(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "true" || it->second == "1" || it->second.empty());
}

std::optional<uint64_t> number(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  if (it == q.end() || it->second.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : it->second) {
    if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::optional<std::string> base64_decode(const std::string& in) {
  std::string clean;
  for (char c : in)
    if (c != '\n' && c != '\r' && c != ' ') clean += c;
  if (clean.size() % 4 != 0) return std::nullopt;
  std::string out(clean.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(clean.data()), static_cast<int>(clean.size()));
  if (n < 0) return std::nullopt;
  size_t pad = 0;
  if (!clean.empty() && clean.back() == '=') ++pad;
  if (clean.size() > 1 && clean[clean.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

// A client's body: JSON nesting as deep as the agent allows (copying or
// dumping a deeper value recurses past the thread's stack), or nothing.
std::optional<json> parse_body(const std::string& body) {
  auto parsed = agent::parse_json_bounded(body.empty() ? "{}" : body);
  if (!parsed.ok()) return std::nullopt;
  return std::move(parsed.value());
}

// ---- shapes ----------------------------------------------------------------------------

std::string kind_of(v1::Runtime r) {
  switch (r) {
    case v1::PYTHON: return "python:3";
    case v1::NODE: return "nodejs:20";
    case v1::EXEC: return "blackbox";
    default: return "unknown";
  }
}

json limits_of(const v1::Function& f) {
  return {{"timeout", f.timeout_ms()}, {"memory", f.memory_bytes() >> 20}, {"logs", 10},
          {"concurrency", f.concurrency()}};
}

// OpenWhisk's [{"key", "value"}] lists from the agent's stored forms.
json parameters_of(const v1::Function& f) {
  json out = json::array();
  json params = json::parse(f.parameters_json().empty() ? "{}" : f.parameters_json(), nullptr, false);
  if (params.is_object())
    for (auto& [k, v] : params.items()) out.push_back({{"key", k}, {"value", v}});
  return out;
}

json annotations_of(const v1::Function& f) {
  json out = json::parse(f.annotations_json().empty() ? "[]" : f.annotations_json(), nullptr, false);
  if (!out.is_array()) out = json::array();
  bool has_exec = false;
  for (const auto& a : out) has_exec |= a.is_object() && a.value("key", "") == "exec";
  if (!has_exec) out.push_back({{"key", "exec"}, {"value", kind_of(f.runtime())}});
  return out;
}

json action_json(const v1::Function& f) {
  json exec = {{"kind", kind_of(f.runtime())}, {"binary", false}};
  if (!f.entry().empty()) exec["main"] = f.entry();
  return {{"namespace", f.namespace_()},
          {"name", f.name()},
          {"version", "0.0." + std::to_string(f.version())},
          {"publish", false},
          {"exec", exec},
          {"annotations", annotations_of(f)},
          {"parameters", parameters_of(f)},
          {"limits", limits_of(f)},
          {"updated", f.created_ms()}};
}

struct ResponseStatus {
  const char* status;
  int code;
};

ResponseStatus response_status(v1::ActivationStatus s) {
  switch (s) {
    case v1::SUCCESS: return {"success", 0};
    case v1::APPLICATION_ERROR: return {"application error", 1};
    case v1::DEVELOPER_ERROR:
    case v1::TIMEOUT:
    case v1::OOM: return {"action developer error", 2};
    default: return {"whisk internal error", 3};
  }
}

json result_of(const v1::Activation& a) {
  if (a.result_json().empty()) return json::object();
  json r = json::parse(a.result_json(), nullptr, false);
  return r.is_discarded() ? json{{"error", a.result_json()}} : r;
}

json activation_json(const v1::Activation& a, bool with_result) {
  const ResponseStatus rs = response_status(a.status());
  json response = {{"status", rs.status}, {"statusCode", rs.code}, {"success", a.status() == v1::SUCCESS}};
  if (with_result) response["result"] = result_of(a);
  json annotations = json::array({{{"key", "path"}, {"value", a.namespace_() + "/" + a.function()}},
                                  {{"key", "waitTime"}, {"value", static_cast<int64_t>(a.wait_ms())}}});
  if (a.start_kind() == v1::COLD || a.start_kind() == v1::PREWARM)
    annotations.push_back({{"key", "initTime"}, {"value", static_cast<int64_t>(a.init_ms())}});
  json logs = json::array();
  for (const auto& l : a.logs()) logs.push_back(l);
  const v1::Usage& u = a.usage();
  return {{"activationId", a.activation_id()},
          {"namespace", a.namespace_()},
          {"name", a.function()},
          {"version", "0.0." + std::to_string(a.version())},
          {"subject", a.namespace_()},
          {"start", a.start_ms()},
          {"end", a.end_ms()},
          {"duration", static_cast<int64_t>(a.duration_ms())},
          {"statusCode", rs.code},
          {"response", response},
          {"logs", logs},
          {"annotations", annotations},
          {"publish", false},
          {"startKind", wire::start_kind_name(a.start_kind())},
          {"usage",
           {{"cpuUserMs", u.cpu_user_ms()},
            {"cpuSystemMs", u.cpu_system_ms()},
            {"memoryPeakBytes", u.memory_peak_bytes()},
            {"billedMs", u.billed_ms()},
            {"gbSeconds", u.gb_seconds()}}}};
}

// ---- calls -----------------------------------------------------------------------------------

class Call {
 public:
  Call(const AgentCall& agent, const HttpRequest& http, const std::string& ns) : agent_(agent), http_(http), ns_(ns) {}

  // The agent's answer, or the HTTP error response to send instead.
  std::optional<v1::Response> run(v1::Request r, HttpResponse& failed) const {
    r.set_api_key(http_.api_key);
    r.set_namespace_(ns_);
    auto resp = agent_(std::move(r));
    if (!resp.ok()) {
      failed = error_response(503, "The node's agent is not reachable: " + resp.error().message());
      return std::nullopt;
    }
    if (resp->has_error() && resp->error().code() != v1::Error::OK) {
      failed = error_response(http_status_for(resp->error().code()), resp->error().message());
      return std::nullopt;
    }
    return std::move(resp.value());
  }

 private:
  const AgentCall& agent_;
  const HttpRequest& http_;
  const std::string& ns_;
};

// PUT /actions/NAME: an OpenWhisk action document to a FunctionConfig.
std::optional<v1::FunctionConfig> config_from(const json& doc, HttpResponse& failed) {
  v1::FunctionConfig c;
  const json exec = doc.value("exec", json::object());
  if (!exec.is_object()) {
    failed = error_response(400, "exec must be an object");
    return std::nullopt;
  }
  const std::string kind = exec.value("kind", "");
  if (kind.rfind("python:", 0) == 0) c.set_runtime(v1::PYTHON);
  else if (kind.rfind("nodejs:", 0) == 0) c.set_runtime(v1::NODE);
  else if (kind == "blackbox" || kind == "native") c.set_runtime(v1::EXEC);
  else {
    failed = error_response(400, "exec.kind '" + kind + "' is not one this node runs (python:3, nodejs:20, blackbox)");
    return std::nullopt;
  }
  if (!exec.contains("code") || !exec["code"].is_string()) {
    failed = error_response(400, "exec.code is required (source text, or a base64 zip with binary: true)");
    return std::nullopt;
  }
  const std::string code = exec["code"].get<std::string>();
  // OpenWhisk's clients send a zip as base64 without always saying
  // `binary: true` (the npm client does not): a code that is all base64 and
  // decodes to a zip file's signature is one.
  std::optional<std::string> sniffed;
  if (!exec.value("binary", false) && code.size() >= 8 && code.compare(0, 4, "UEsD") == 0)
    sniffed = base64_decode(code);
  if (exec.value("binary", false) || (sniffed && sniffed->compare(0, 4, "PK\x03\x04") == 0)) {
    auto zip = sniffed ? std::move(sniffed) : base64_decode(code);
    if (!zip) {
      failed = error_response(400, "exec.code is not valid base64");
      return std::nullopt;
    }
    c.set_code(std::move(*zip));
    c.set_code_format(v1::ZIP);
  } else {
    c.set_code(code);
    c.set_code_format(v1::SINGLE_FILE);
    c.set_code_file_name(c.runtime() == v1::PYTHON ? "__main__.py" : c.runtime() == v1::NODE ? "index.js" : "exec");
  }
  if (exec.contains("main") && exec["main"].is_string() && c.runtime() != v1::EXEC) c.set_entry(exec["main"]);
  const json limits = doc.value("limits", json::object());
  if (limits.is_object()) {
    if (limits.contains("timeout") && limits["timeout"].is_number_unsigned()) c.set_timeout_ms(limits["timeout"]);
    if (limits.contains("memory") && limits["memory"].is_number_unsigned())
      c.set_memory_bytes(limits["memory"].get<uint64_t>() << 20);
    if (limits.contains("concurrency") && limits["concurrency"].is_number_unsigned())
      c.set_concurrency(limits["concurrency"]);
  }
  // [{"key": k, "value": v}] -> {k: v}: the agent lays each invocation's
  // params over these.
  const json params = doc.value("parameters", json::array());
  if (!params.is_array()) {
    failed = error_response(400, "parameters must be a list of {\"key\", \"value\"}");
    return std::nullopt;
  }
  json bound = json::object();
  for (const auto& p : params) {
    if (!p.is_object() || !p.contains("key") || !p["key"].is_string()) {
      failed = error_response(400, "parameters must be a list of {\"key\", \"value\"}");
      return std::nullopt;
    }
    bound[p["key"].get<std::string>()] = p.value("value", json());
  }
  if (!bound.empty()) c.set_parameters_json(bound.dump());
  const json annotations = doc.value("annotations", json::array());
  if (!annotations.is_array()) {
    failed = error_response(400, "annotations must be a list of {\"key\", \"value\"}");
    return std::nullopt;
  }
  if (!annotations.empty()) c.set_annotations_json(annotations.dump());
  return c;
}

HttpResponse actions(const AgentCall& agent, const HttpRequest& http, const std::string& ns,
                     const std::vector<std::string>& rest) {
  Call call(agent, http, ns);
  HttpResponse failed;
  if (rest.empty()) {
    if (http.method != "GET") return error_response(405, "Method not allowed.");
    v1::Request r;
    r.mutable_list_functions();
    auto resp = call.run(std::move(r), failed);
    if (!resp) return failed;
    const uint64_t skip = number(http.query, "skip").value_or(0);
    const uint64_t limit = number(http.query, "limit").value_or(30);
    json out = json::array();
    uint64_t seen = 0;
    for (const auto& f : resp->function_list().functions()) {
      if (seen++ < skip) continue;
      if (limit != 0 && out.size() >= limit) break;
      out.push_back(action_json(f));
    }
    return json_response(200, out);
  }
  if (rest.size() != 1) return error_response(404, "The requested resource does not exist.");
  const std::string& name = rest[0];
  if (http.method == "GET") {
    v1::Request r;
    r.mutable_get_function()->set_name(name);
    auto resp = call.run(std::move(r), failed);
    return resp ? json_response(200, action_json(resp->function())) : failed;
  }
  if (http.method == "DELETE") {
    v1::Request get;
    get.mutable_get_function()->set_name(name);
    auto before = call.run(std::move(get), failed);
    if (!before) return failed;
    v1::Request r;
    r.mutable_delete_function()->set_name(name);
    if (!call.run(std::move(r), failed)) return failed;
    return json_response(200, action_json(before->function()));
  }
  if (http.method == "PUT") {
    auto parsed = parse_body(http.body);
    if (!parsed || !parsed->is_object()) return error_response(400, "The request content was malformed.");
    const json& doc = *parsed;
    auto config = config_from(doc, failed);
    if (!config) return failed;
    v1::Request r;
    r.mutable_create_function()->set_name(name);
    *r.mutable_create_function()->mutable_config() = *config;
    HttpResponse create_failed;
    if (auto created = call.run(r, create_failed)) return json_response(200, action_json(created->function()));
    if (create_failed.status != 409) return create_failed;
    if (!truthy(http.query, "overwrite")) return error_response(409, "resource already exists");
    v1::Request u;
    u.mutable_update_function()->set_name(name);
    *u.mutable_update_function()->mutable_config() = *config;
    auto updated = call.run(std::move(u), failed);
    return updated ? json_response(200, action_json(updated->function())) : failed;
  }
  if (http.method == "POST") {
    auto parsed = parse_body(http.body);
    if (!parsed || !parsed->is_object()) return error_response(400, "The request content was malformed.");
    const json& params = *parsed;
    const bool blocking = truthy(http.query, "blocking");
    v1::Request r;
    r.mutable_invoke()->set_function(name);
    r.mutable_invoke()->set_params_json(params.dump());
    r.mutable_invoke()->set_async(!blocking);
    auto resp = call.run(std::move(r), failed);
    if (!resp) return failed;
    if (!blocking) return json_response(202, {{"activationId", resp->invoke_accepted().activation_id()}});
    const v1::Activation& a = resp->activation();
    const int status = a.status() == v1::SUCCESS ? 200 : 502;
    if (truthy(http.query, "result")) return json_response(status, result_of(a));
    return json_response(status, activation_json(a, true));
  }
  return error_response(405, "Method not allowed.");
}

HttpResponse activations(const AgentCall& agent, const HttpRequest& http, const std::string& ns,
                         const std::vector<std::string>& rest) {
  if (http.method != "GET") return error_response(405, "Method not allowed.");
  Call call(agent, http, ns);
  HttpResponse failed;
  if (rest.empty()) {
    // skip/limit/since/upto over the agent's pages (newest first).
    const uint64_t skip = number(http.query, "skip").value_or(0);
    const uint64_t limit = std::min<uint64_t>(number(http.query, "limit").value_or(30), 200);
    const uint64_t since = number(http.query, "since").value_or(0);
    const uint64_t upto = number(http.query, "upto").value_or(0);
    auto name = http.query.find("name");
    json out = json::array();
    uint64_t skipped = 0;
    std::string token;
    for (int page = 0; page < 50; ++page) {
      v1::Request r;
      auto* q = r.mutable_list_activations();
      if (name != http.query.end()) q->set_function(name->second);
      q->set_limit(200);
      q->set_page_token(token);
      auto resp = call.run(std::move(r), failed);
      if (!resp) return failed;
      for (const auto& a : resp->activation_list().activations()) {
        if (upto != 0 && static_cast<uint64_t>(a.start_ms()) > upto) continue;
        if (since != 0 && static_cast<uint64_t>(a.start_ms()) < since) return json_response(200, out);
        if (skipped < skip) {
          ++skipped;
          continue;
        }
        if (out.size() >= (limit == 0 ? 200 : limit)) return json_response(200, out);
        out.push_back(activation_json(a, false));
      }
      token = resp->activation_list().next_page_token();
      if (token.empty()) break;
    }
    return json_response(200, out);
  }
  const std::string& id = rest[0];
  if (rest.size() == 2 && rest[1] == "logs") {
    // Logs come with the record (an activation in flight has none yet).
    v1::Request r;
    r.mutable_get_activation_logs()->set_activation_id(id);
    auto resp = call.run(std::move(r), failed);
    if (!resp) return failed;
    json logs = json::array();
    for (const auto& l : resp->activation_logs().logs()) logs.push_back(l);
    return json_response(200, {{"logs", logs}});
  }
  if (rest.size() > 2 || (rest.size() == 2 && rest[1] != "result"))
    return error_response(404, "The requested resource does not exist.");
  v1::Request r;
  r.mutable_get_activation()->set_activation_id(id);
  auto resp = call.run(std::move(r), failed);
  if (!resp) return failed;
  // Still running: OpenWhisk has no record yet and answers 404; its clients
  // poll until there is one.
  if (resp->activation().status() == v1::ACTIVATION_STATUS_UNSPECIFIED)
    return error_response(404, "The requested resource does not exist.");
  if (rest.size() == 2) {
    const ResponseStatus rs = response_status(resp->activation().status());
    return json_response(200, {{"status", rs.status},
                               {"statusCode", rs.code},
                               {"success", resp->activation().status() == v1::SUCCESS},
                               {"result", result_of(resp->activation())}});
  }
  return json_response(200, activation_json(resp->activation(), true));
}

}  // namespace

HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, {{"error", message}, {"code", transaction_id()}});
}

int http_status_for(v1::Error::Code code) {
  switch (code) {
    case v1::Error::INVALID_ARGUMENT: return 400;
    case v1::Error::NOT_FOUND: return 404;
    case v1::Error::ALREADY_EXISTS: return 409;
    case v1::Error::PERMISSION_DENIED: return 403;
    case v1::Error::UNAUTHENTICATED: return 401;
    case v1::Error::RESOURCE_EXHAUSTED: return 429;
    case v1::Error::FAILED_PRECONDITION: return 409;
    case v1::Error::UNAVAILABLE: return 503;
    default: return 500;
  }
}

HttpResponse OpenWhiskApi::handle(const HttpRequest& http) const {
  std::vector<std::string> parts = split_path(http.path);
  if (parts.size() < 2 || parts[0] != "api" || parts[1] != "v1")
    return error_response(404, "The requested resource does not exist.");
  if (http.api_key.empty()) return error_response(401, "The supplied authentication is invalid.");
  parts.erase(parts.begin(), parts.begin() + 2);
  if (parts.empty() || parts[0] != "namespaces") return error_response(404, "The requested resource does not exist.");
  if (parts.size() == 1) {
    if (http.method != "GET") return error_response(405, "Method not allowed.");
    v1::Request r;
    r.mutable_list_namespaces();
    HttpResponse failed;
    std::string ns;
    auto resp = Call(agent_, http, ns).run(std::move(r), failed);
    if (!resp) return failed;
    json out = json::array();
    for (const auto& n : resp->namespace_list().namespaces()) out.push_back(n.name());
    return json_response(200, out);
  }
  // "_" is the key's own namespace, as in OpenWhisk; the agent checks any other.
  const std::string ns = parts[1] == "_" ? "" : parts[1];
  if (parts.size() < 3) return error_response(404, "The requested resource does not exist.");
  std::vector<std::string> rest(parts.begin() + 3, parts.end());
  if (parts[2] == "actions") return actions(agent_, http, ns, rest);
  if (parts[2] == "activations") return activations(agent_, http, ns, rest);
  return error_response(404, "The requested resource does not exist.");
}

}  // namespace stoke::gateway
