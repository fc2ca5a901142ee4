#include "api/cli/render.h"

#include "api/wire/names.h"

#include <cstdio>

namespace stoke::cli {

std::string start_kind_name(v1::StartKind kind) { return wire::start_kind_name(kind); }

bool parse_start_kind(const std::string& text, v1::StartKind& out) {
  for (v1::StartKind k : {v1::COLD, v1::PREWARM, v1::ZYGOTE, v1::RESTORE, v1::WARM})
    if (start_kind_name(k) == text) {
      out = k;
      return true;
    }
  return false;
}

std::string status_name(v1::ActivationStatus status) {
  switch (status) {
    case v1::SUCCESS: return "success";
    case v1::APPLICATION_ERROR: return "application_error";
    case v1::DEVELOPER_ERROR: return "developer_error";
    case v1::TIMEOUT: return "timeout";
    case v1::OOM: return "oom";
    case v1::INTERNAL_ERROR: return "internal_error";
    default: return "running";
  }
}

std::string runtime_name(v1::Runtime runtime) {
  switch (runtime) {
    case v1::PYTHON: return "python";
    case v1::NODE: return "node";
    case v1::EXEC: return "exec";
    default: return "unspecified";
  }
}

bool parse_runtime(const std::string& text, v1::Runtime& out) {
  for (v1::Runtime r : {v1::PYTHON, v1::NODE, v1::EXEC})
    if (runtime_name(r) == text) {
      out = r;
      return true;
    }
  return false;
}

nlohmann::json activation_json(const v1::Activation& a) {
  nlohmann::json result;
  if (!a.result_json().empty()) {
    try {
      result = nlohmann::json::parse(a.result_json());
    } catch (const nlohmann::json::exception&) {
      result = a.result_json();
    }
  }
  const v1::Usage& u = a.usage();
  return {
      {"activationId", a.activation_id()},
      {"namespace", a.namespace_()},
      {"function", a.function()},
      {"version", a.version()},
      {"start", a.start_ms()},
      {"end", a.end_ms()},
      {"durationMs", a.duration_ms()},
      {"waitMs", a.wait_ms()},
      {"initMs", a.init_ms()},
      {"startKind", start_kind_name(a.start_kind())},
      {"status", status_name(a.status())},
      {"result", result},
      {"logs", nlohmann::json(std::vector<std::string>(a.logs().begin(), a.logs().end()))},
      {"logsTruncated", a.logs_truncated()},
      {"usage",
       {{"cpuUserMs", u.cpu_user_ms()},
        {"cpuSystemMs", u.cpu_system_ms()},
        {"memoryPeakBytes", u.memory_peak_bytes()},
        {"pidsPeak", u.pids_peak()},
        {"billedMs", u.billed_ms()},
        {"gbSeconds", u.gb_seconds()}}},
  };
}

nlohmann::json function_json(const v1::Function& f) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [k, v] : f.env()) env[k] = v;
  return {{"name", f.name()},           {"namespace", f.namespace_()},    {"version", f.version()},         {"runtime", runtime_name(f.runtime())},
          {"entry", f.entry()},         {"memoryBytes", f.memory_bytes()}, {"timeoutMs", f.timeout_ms()},
          {"concurrency", f.concurrency()}, {"env", env},                  {"codeSha256", f.code_sha256()},
          {"codeSize", f.code_size()},  {"created", f.created_ms()}};
}

nlohmann::json namespace_json(const v1::Namespace& n) {
  nlohmann::json j = {{"name", n.name()}, {"keyUuid", n.key_uuid()}, {"created", n.created_ms()}};
  if (!n.key().empty()) j["key"] = n.key();  // shown once, when made
  return j;
}

nlohmann::json status_json(const v1::Status& s) {
  nlohmann::json features = nlohmann::json::object(), pools = nlohmann::json::object();
  for (const auto& [k, v] : s.features()) features[k] = v;
  for (const auto& [k, v] : s.pools()) pools[k] = v;
  nlohmann::json by_holder = nlohmann::json::object();
  for (const auto& [k, v] : s.reserved_memory_by_holder()) by_holder[k] = v;
  nlohmann::json zygotes = nlohmann::json::array();
  for (const auto& z : s.zygotes())
    zygotes.push_back({{"function", z.function()}, {"version", z.version()}, {"pid", z.pid()},
                       {"pssBytes", z.pss_bytes()}, {"ussBytes", z.uss_bytes()}, {"forks", z.forks()},
                       {"ageMs", z.age_ms()}, {"reservedMemoryBytes", z.reserved_memory_bytes()}});
  return {{"agentVersion", s.agent_version()},
          {"protocolVersion", s.protocol_version()},
          {"kernel", s.kernel()},
          {"cgroupVersion", s.cgroup_version()},
          {"cgroupControllers", std::vector<std::string>(s.cgroup_controllers().begin(), s.cgroup_controllers().end())},
          {"cgroupParents", std::vector<std::string>(s.cgroup_parents().begin(), s.cgroup_parents().end())},
          {"features", features},
          {"functions", s.functions()},
          {"activationsTotal", s.activations_total()},
          {"activationsRunning", s.activations_running()},
          {"liveSandboxes", s.live_sandboxes()},
          {"started", s.started_ms()},
          {"pools", pools},
          {"reservedMemoryBytes", s.reserved_memory_bytes()},
          {"reservedMemoryByHolder", by_holder},
          {"memoryAccountingErrors", s.memory_accounting_errors()},
          {"memoryBudgetBytes", s.memory_budget_bytes()},
          {"idleGbSeconds", s.idle_gb_seconds()},
          {"warmAgentTime",
           {{"samples", s.warm_agent_time().samples()},
            {"total", s.warm_agent_time().total()},
            {"p50Us", s.warm_agent_time().p50_us()},
            {"p99Us", s.warm_agent_time().p99_us()}}},
          {"zygotes", zygotes}};
}

std::string activation_text(const v1::Activation& a) {
  char line[512];
  std::snprintf(line, sizeof line,
                "activation %s  %s v%u  %s  %s  duration %.1f ms (wait %.1f, init %.1f)  cpu %.1f+%.1f ms  peak %.1f MiB  "
                "billed %llu ms  %.6f GB-s\n",
                a.activation_id().c_str(), a.function().c_str(), a.version(), status_name(a.status()).c_str(),
                start_kind_name(a.start_kind()).c_str(), a.duration_ms(), a.wait_ms(), a.init_ms(),
                a.usage().cpu_user_ms(), a.usage().cpu_system_ms(),
                static_cast<double>(a.usage().memory_peak_bytes()) / (1 << 20),
                static_cast<unsigned long long>(a.usage().billed_ms()), a.usage().gb_seconds());
  return std::string(line) + "result " + a.result_json() + "\n";
}

std::string function_text(const v1::Function& f) {
  char line[512];
  std::snprintf(line, sizeof line, "%s v%u  %s  entry %s  memory %llu MiB  timeout %llu ms  concurrency %u  code %s (%llu bytes)\n",
                f.name().c_str(), f.version(), runtime_name(f.runtime()).c_str(), f.entry().empty() ? "-" : f.entry().c_str(),
                static_cast<unsigned long long>(f.memory_bytes() >> 20), static_cast<unsigned long long>(f.timeout_ms()),
                f.concurrency(), f.code_sha256().substr(0, 12).c_str(), static_cast<unsigned long long>(f.code_size()));
  return line;
}

}  // namespace stoke::cli
