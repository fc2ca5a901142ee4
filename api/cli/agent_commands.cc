#include "api/cli/agent_commands.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "api/cli/code_archive.h"
#include "api/cli/render.h"
#include "api/wire/client.h"
#include "api/wire/protocol.h"
#include "sandbox/base/parse.h"

namespace stoke::cli {
namespace {

// Exit codes of the agent verbs.
constexpr int kOk = 0;
constexpr int kActivationFailed = 1;  // invoke: status is not success
constexpr int kUsage = 2;
constexpr int kAgentError = 3;        // unreachable, or the call was refused

constexpr const char* kUsageText =
    "usage: stoke [--socket PATH] COMMAND ...\n"
    "  fn create NAME --runtime python|node|exec --code PATH [--entry NAME] [--memory SIZE]\n"
    "                 [--timeout DURATION] [--concurrency N] [--env KEY=VALUE]... [--checkpoint]\n"
    "  fn update NAME [same options]\n"
    "  fn get NAME [--json] | fn list [--json] | fn delete NAME\n"
    "  invoke NAME [--data JSON | -p KEY=VALUE ...] [--json] [--async] [--start cold|prewarm|zygote|restore|warm]\n"
    "  activation get ID [--json] | activation list [--fn NAME] [--limit N] [--json] | activation logs ID\n"
    "  status [--json]\n"
    "  ns create NAME | ns list [--json] | ns delete NAME | ns key NAME   (operators; the key is shown once)\n"
    "Every verb takes --namespace NS (else $STOKE_NAMESPACE, else the default 'guest') and\n"
    "--key UUID:SECRET (else $STOKE_API_KEY): with a key it acts in the key's namespace.\n"
    "The socket is --socket, else $STOKE_SOCKET, else /run/stoke/stoke.sock.\n";

struct UsageError {
  std::string message;
};

struct AgentUnreachable {
  std::string path;
  Error error;
};

// Connects on first use, so a command with bad arguments fails with its usage
// error even when no agent is running.
class LazyClient {
 public:
  explicit LazyClient(std::string path) : path_(std::move(path)) {}
  wire::Client& get() {
    if (!client_) {
      auto c = wire::Client::connect(path_, "stoke-cli");
      if (!c.ok()) throw AgentUnreachable{path_, c.error()};
      client_.emplace(std::move(c.value()));
    }
    return *client_;
  }

 private:
  std::string path_;
  std::optional<wire::Client> client_;
};

// Options of one verb: flags (no value), single values, repeatable values.
struct Options {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;
  std::map<std::string, bool> flags;
  const std::string& one(const std::string& name) const {
    static const std::string empty;
    auto it = values.find(name);
    return it == values.end() || it->second.empty() ? empty : it->second.back();
  }
  bool has(const std::string& name) const { return values.count(name) > 0; }
  bool flag(const std::string& name) const { return flags.count(name) > 0; }
};

Options parse(const std::vector<std::string>& args, size_t from, const std::vector<std::string>& value_opts,
              const std::vector<std::string>& flag_opts) {
  Options o;
  for (size_t i = from; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 1 && a[0] == '-') {
      std::string name = a, value;
      bool inline_value = false;
      if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        inline_value = true;
      }
      if (std::find(flag_opts.begin(), flag_opts.end(), name) != flag_opts.end()) {
        o.flags[name] = true;
        continue;
      }
      if (std::find(value_opts.begin(), value_opts.end(), name) == value_opts.end())
        throw UsageError{"unknown option '" + name + "'"};
      if (!inline_value) {
        if (i + 1 >= args.size()) throw UsageError{"option " + name + " needs a value"};
        value = args[++i];
      }
      o.values[name].push_back(value);
      continue;
    }
    o.positional.push_back(a);
  }
  return o;
}

int agent_failed(const std::string& what, const Error& e) {
  std::fprintf(stderr, "stoke: %s: %s\n", what.c_str(), e.message().c_str());
  return kAgentError;
}

// The namespace and key every request of this command carries.
struct Scope {
  std::string ns;
  std::string key;
};
Scope g_scope;

// Takes --namespace and --key out of args (anywhere after the verb).
Scope take_scope(std::vector<std::string>& args) {
  Scope scope;
  if (const char* ns = std::getenv("STOKE_NAMESPACE")) scope.ns = ns;
  if (const char* key = std::getenv("STOKE_API_KEY")) scope.key = key;
  for (size_t i = 1; i < args.size();) {
    std::string* into = nullptr;
    std::string name = args[i], value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos && name.rfind("--", 0) == 0) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (name == "--namespace") into = &scope.ns;
    if (name == "--key") into = &scope.key;
    if (into == nullptr) {
      ++i;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) throw UsageError{"option " + name + " needs a value"};
      value = args[i + 1];
    }
    *into = value;
    args.erase(args.begin() + static_cast<std::ptrdiff_t>(i), args.begin() + static_cast<std::ptrdiff_t>(i + (inline_value ? 1 : 2)));
  }
  return scope;
}

// One call; prints the agent's error and returns nullopt on failure.
std::optional<v1::Response> call(LazyClient& client, v1::Request request, const std::string& what, int& rc) {
  request.set_namespace_(g_scope.ns);
  request.set_api_key(g_scope.key);
  auto r = client.get().call(std::move(request));
  if (!r.ok()) {
    rc = agent_failed(what, r.error());
    return std::nullopt;
  }
  if (r->has_error() && r->error().code() != v1::Error::OK) {
    std::fprintf(stderr, "stoke: %s: %s (%s)\n", what.c_str(), r->error().message().c_str(),
                 v1::Error::Code_Name(r->error().code()).c_str());
    rc = kAgentError;
    return std::nullopt;
  }
  return std::move(r.value());
}

void print_json(const nlohmann::json& j) { std::printf("%s\n", j.dump(2).c_str()); }

int fn_write(LazyClient& client, bool create, const Options& o) {
  if (o.positional.size() != 1) throw UsageError{std::string("fn ") + (create ? "create" : "update") + " takes one NAME"};
  v1::Request req;
  v1::FunctionConfig* cfg = create ? req.mutable_create_function()->mutable_config()
                                   : req.mutable_update_function()->mutable_config();
  (create ? req.mutable_create_function()->mutable_name() : req.mutable_update_function()->mutable_name())
      ->assign(o.positional[0]);
  v1::Runtime runtime;
  if (!o.has("--runtime")) throw UsageError{"--runtime is required (python, node or exec)"};
  if (!parse_runtime(o.one("--runtime"), runtime)) throw UsageError{"--runtime must be python, node or exec"};
  cfg->set_runtime(runtime);
  if (!o.has("--code")) throw UsageError{"--code PATH is required"};
  if (Status s = load_code(o.one("--code"), wire::kMaxCodeBytes, *cfg); !s.ok()) {
    std::fprintf(stderr, "stoke: %s\n", s.error().message().c_str());
    return kUsage;
  }
  if (o.has("--entry")) {
    cfg->set_entry(o.one("--entry"));
    // A single file's entry is its own name (exec); for python/node it is the function.
  }
  if (o.has("--memory")) {
    auto m = parse_size(o.one("--memory"));
    if (!m.ok()) throw UsageError{"bad value for --memory: " + m.error().message()};
    cfg->set_memory_bytes(*m);
  }
  if (o.has("--timeout")) {
    auto t = parse_duration(o.one("--timeout"));
    if (!t.ok() || t->count() <= 0) throw UsageError{"bad value for --timeout: " + o.one("--timeout")};
    cfg->set_timeout_ms(static_cast<uint64_t>(t->count()));
  }
  if (o.has("--concurrency")) {
    auto c = parse_count(o.one("--concurrency"));
    if (!c.ok() || *c == 0 || *c > 100000) throw UsageError{"bad value for --concurrency: " + o.one("--concurrency")};
    cfg->set_concurrency(static_cast<uint32_t>(*c));
  }
  if (auto it = o.values.find("--env"); it != o.values.end())
    for (const auto& kv : it->second) {
      auto eq = kv.find('=');
      if (eq == 0 || eq == std::string::npos) throw UsageError{"bad value for --env: '" + kv + "' is not KEY=VALUE"};
      (*cfg->mutable_env())[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  if (o.flag("--checkpoint")) {
    if (runtime != v1::PYTHON) throw UsageError{"--checkpoint is for python functions"};
    if (create) req.mutable_create_function()->set_checkpoint(true);
    else req.mutable_update_function()->set_checkpoint(true);
  }
  int rc = kOk;
  auto r = call(client, std::move(req), create ? "fn create" : "fn update", rc);
  if (!r) return rc;
  std::printf("%s", function_text(r->function()).c_str());
  return kOk;
}

int invoke(LazyClient& client, const Options& o) {
  if (o.positional.size() != 1) throw UsageError{"invoke takes one NAME"};
  v1::Request req;
  v1::Invoke* inv = req.mutable_invoke();
  inv->set_function(o.positional[0]);
  if (o.has("--data") && o.has("-p")) throw UsageError{"use --data or -p, not both"};
  if (o.has("--data")) {
    inv->set_params_json(o.one("--data"));
  } else if (auto it = o.values.find("-p"); it != o.values.end()) {
    nlohmann::json params = nlohmann::json::object();
    for (const auto& kv : it->second) {
      auto eq = kv.find('=');
      if (eq == 0 || eq == std::string::npos) throw UsageError{"bad value for -p: '" + kv + "' is not KEY=VALUE"};
      std::string value = kv.substr(eq + 1);
      // A value that parses as JSON is taken as JSON (numbers, true, {...}); else a string.
      try {
        params[kv.substr(0, eq)] = nlohmann::json::parse(value);
      } catch (const nlohmann::json::exception&) {
        params[kv.substr(0, eq)] = value;
      }
    }
    inv->set_params_json(params.dump());
  }
  inv->set_async(o.flag("--async"));
  if (o.has("--start")) {
    v1::StartKind k;
    if (!parse_start_kind(o.one("--start"), k)) throw UsageError{"--start must be cold, prewarm, zygote, restore or warm"};
    inv->set_start(k);
  }
  int rc = kOk;
  auto r = call(client, std::move(req), "invoke", rc);
  if (!r) return rc;
  if (r->has_invoke_accepted()) {
    std::printf("%s\n", r->invoke_accepted().activation_id().c_str());
    return kOk;
  }
  const v1::Activation& a = r->activation();
  if (o.flag("--json")) {
    print_json(activation_json(a));
  } else {
    try {
      print_json(nlohmann::json::parse(a.result_json()));
    } catch (const nlohmann::json::exception&) {
      std::printf("%s\n", a.result_json().c_str());
    }
    if (a.status() != v1::SUCCESS)
      std::fprintf(stderr, "stoke: activation %s: %s\n", a.activation_id().c_str(), status_name(a.status()).c_str());
  }
  return a.status() == v1::SUCCESS ? kOk : kActivationFailed;
}

int run_verb(LazyClient& client, const std::vector<std::string>& args) {
  const std::string& verb = args[0];
  int rc = kOk;
  if (verb == "fn") {
    if (args.size() < 2) throw UsageError{"fn needs a subcommand: create, update, get, list, delete"};
    const std::string& sub = args[1];
    if (sub == "create" || sub == "update")
      return fn_write(client, sub == "create",
                      parse(args, 2, {"--runtime", "--code", "--entry", "--memory", "--timeout", "--concurrency", "--env"},
                            {"--checkpoint"}));
    Options o = parse(args, 2, {}, {"--json"});
    v1::Request req;
    if (sub == "get") {
      if (o.positional.size() != 1) throw UsageError{"fn get takes one NAME"};
      req.mutable_get_function()->set_name(o.positional[0]);
      auto r = call(client, std::move(req), "fn get", rc);
      if (!r) return rc;
      if (o.flag("--json")) print_json(function_json(r->function()));
      else std::printf("%s", function_text(r->function()).c_str());
      return kOk;
    }
    if (sub == "list") {
      req.mutable_list_functions();
      auto r = call(client, std::move(req), "fn list", rc);
      if (!r) return rc;
      if (o.flag("--json")) {
        nlohmann::json all = nlohmann::json::array();
        for (const auto& f : r->function_list().functions()) all.push_back(function_json(f));
        print_json(all);
      } else {
        for (const auto& f : r->function_list().functions()) std::printf("%s", function_text(f).c_str());
      }
      return kOk;
    }
    if (sub == "delete") {
      if (o.positional.size() != 1) throw UsageError{"fn delete takes one NAME"};
      req.mutable_delete_function()->set_name(o.positional[0]);
      auto r = call(client, std::move(req), "fn delete", rc);
      if (!r) return rc;
      std::printf("deleted %s\n", o.positional[0].c_str());
      return kOk;
    }
    throw UsageError{"unknown fn subcommand '" + sub + "'"};
  }
  if (verb == "invoke") return invoke(client, parse(args, 1, {"--data", "-p", "--start"}, {"--json", "--async"}));
  if (verb == "activation") {
    if (args.size() < 2) throw UsageError{"activation needs a subcommand: get, list, logs"};
    const std::string& sub = args[1];
    Options o = parse(args, 2, {"--fn", "--limit"}, {"--json"});
    v1::Request req;
    if (sub == "get" || sub == "logs") {
      if (o.positional.size() != 1) throw UsageError{"activation " + sub + " takes one ID"};
      if (sub == "get") req.mutable_get_activation()->set_activation_id(o.positional[0]);
      else req.mutable_get_activation_logs()->set_activation_id(o.positional[0]);
      auto r = call(client, std::move(req), "activation " + sub, rc);
      if (!r) return rc;
      if (sub == "logs") {
        for (const auto& line : r->activation_logs().logs()) std::printf("%s\n", line.c_str());
        if (r->activation_logs().truncated()) std::fprintf(stderr, "stoke: (logs were truncated at the agent's limit)\n");
      } else if (o.flag("--json")) {
        print_json(activation_json(r->activation()));
      } else {
        std::printf("%s", activation_text(r->activation()).c_str());
      }
      return kOk;
    }
    if (sub == "list") {
      auto* q = req.mutable_list_activations();
      q->set_function(o.one("--fn"));
      if (o.has("--limit")) {
        auto n = parse_count(o.one("--limit"));
        if (!n.ok() || *n == 0 || *n > 1000) throw UsageError{"--limit must be 1 to 1000"};
        q->set_limit(static_cast<uint32_t>(*n));
      }
      auto r = call(client, std::move(req), "activation list", rc);
      if (!r) return rc;
      if (o.flag("--json")) {
        nlohmann::json all = nlohmann::json::array();
        for (const auto& a : r->activation_list().activations()) all.push_back(activation_json(a));
        print_json(all);
      } else {
        for (const auto& a : r->activation_list().activations())
          std::printf("%s  %-20s v%-3u %-17s %-7s %8.1f ms\n", a.activation_id().c_str(), a.function().c_str(),
                      a.version(), status_name(a.status()).c_str(), start_kind_name(a.start_kind()).c_str(),
                      a.duration_ms());
      }
      return kOk;
    }
    throw UsageError{"unknown activation subcommand '" + sub + "'"};
  }
  if (verb == "ns") {
    if (args.size() < 2) throw UsageError{"ns needs a subcommand: create, list, delete, key"};
    const std::string& sub = args[1];
    Options o = parse(args, 2, {}, {"--json"});
    v1::Request req;
    if (sub == "list") {
      req.mutable_list_namespaces();
      auto r = call(client, std::move(req), "ns list", rc);
      if (!r) return rc;
      nlohmann::json all = nlohmann::json::array();
      for (const auto& n : r->namespace_list().namespaces()) all.push_back(namespace_json(n));
      if (o.flag("--json")) {
        print_json(all);
      } else {
        for (const auto& n : r->namespace_list().namespaces())
          std::printf("%-24s %s\n", n.name().c_str(), n.key_uuid().empty() ? "(no key)" : n.key_uuid().c_str());
      }
      return kOk;
    }
    if (o.positional.size() != 1) throw UsageError{"ns " + sub + " takes one NAME"};
    const std::string& name = o.positional[0];
    if (sub == "create") req.mutable_create_namespace()->set_name(name);
    else if (sub == "key") req.mutable_rotate_namespace_key()->set_name(name);
    else if (sub == "delete") req.mutable_delete_namespace()->set_name(name);
    else throw UsageError{"unknown ns subcommand '" + sub + "'"};
    auto r = call(client, std::move(req), "ns " + sub, rc);
    if (!r) return rc;
    if (sub == "delete") {
      std::printf("deleted namespace %s\n", name.c_str());
    } else if (o.flag("--json")) {
      print_json(namespace_json(r->namespace_()));
    } else {
      // The only time the secret is ever shown: the agent keeps its hash.
      std::printf("namespace %s\nkey %s\n", name.c_str(), r->namespace_().key().c_str());
      std::fprintf(stderr, "stoke: keep the key now; the agent stores only its hash and cannot show it again\n");
    }
    return kOk;
  }
  if (verb == "status") {
    Options o = parse(args, 1, {}, {"--json"});
    v1::Request req;
    req.mutable_get_status();
    auto r = call(client, std::move(req), "status", rc);
    if (!r) return rc;
    nlohmann::json j = status_json(r->status());
    if (o.flag("--json")) {
      print_json(j);
    } else {
      for (auto& [k, v] : j.items()) std::printf("%-20s %s\n", k.c_str(), v.dump().c_str());
    }
    return kOk;
  }
  throw UsageError{"unknown command '" + verb + "'"};
}

}  // namespace

bool is_agent_verb(const std::string& verb) {
  return verb == "fn" || verb == "invoke" || verb == "activation" || verb == "status" || verb == "ns";
}

const char* agent_usage() { return kUsageText; }

int agent_command(const std::string& socket_path, const std::vector<std::string>& args) {
  try {
    // Arguments are checked before connecting, so usage errors need no agent.
    if (args.empty()) throw UsageError{"no command"};
    std::vector<std::string> rest = args;
    g_scope = take_scope(rest);
    LazyClient client(socket_path.empty() ? wire::default_socket_path() : socket_path);
    return run_verb(client, rest);
  } catch (const AgentUnreachable& e) {
    return agent_failed("cannot talk to the agent at " + e.path, e.error);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "stoke: %s\n%s", e.message.c_str(), kUsageText);
    return kUsage;
  }
}

}  // namespace stoke::cli
