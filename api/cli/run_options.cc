#include "api/cli/run_options.h"

#include "sandbox/base/parse.h"

namespace stoke::cli {

const char* const kRunUsage =
    "usage: stoke run [options] -- CMD [ARGS...]\n"
    "Run one command in a fresh sandbox and exit with its exit code (128+signal if killed).\n"
    "  --memory SIZE        memory limit, swap off (default 256M; K/M/G suffixes)\n"
    "  --cpus FLOAT         CPU quota in CPUs (default 1)\n"
    "  --pids N             maximum number of processes (default 256)\n"
    "  --tmp-size SIZE      size of the sandbox's /tmp and /dev/shm (default 64M)\n"
    "  --timeout DURATION   kill the whole sandbox after DURATION (e.g. 500ms, 10s, 2m)\n"
    "  --bind SRC:DST[:rw]  make host path SRC visible at DST (read-only unless :rw)\n"
    "  --env KEY=VALUE      set an environment variable (nothing is inherited)\n"
    "  --workdir DIR        working directory inside the sandbox (default /)\n"
    "  --hostname NAME      hostname inside the sandbox (default sandbox)\n"
    "  --report PATH        write a JSON report (exit code, signal, oom, timeout, usage) at exit\n";

Result<BindMount> parse_bind(const std::string& text) {
  BindMount b;
  size_t c1 = text.find(':');
  if (c1 == std::string::npos || c1 == 0)
    return plain_error("--bind", "'" + text + "' is not SRC:DST[:rw]");
  b.source = text.substr(0, c1);
  std::string rest = text.substr(c1 + 1);
  size_t c2 = rest.find(':');
  b.target = rest.substr(0, c2);
  if (c2 != std::string::npos) {
    std::string mode = rest.substr(c2 + 1);
    if (mode == "rw") b.writable = true;
    else if (mode != "ro") return plain_error("--bind", "mode '" + mode + "' in '" + text + "' must be rw or ro");
  }
  if (b.target.empty()) return plain_error("--bind", "'" + text + "' has no destination");
  return b;
}

Result<RunOptions> parse_run_options(const std::vector<std::string>& args) {
  RunOptions o;
  o.spec.env = default_sandbox_env();
  auto set_env = [&](const std::string& kv) {
    std::string key = kv.substr(0, kv.find('='));
    for (auto& e : o.spec.env)
      if (e.compare(0, key.size() + 1, key + "=") == 0) {
        e = kv;
        return;
      }
    o.spec.env.push_back(kv);
  };

  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      o.help = true;
      return o;
    }
    if (a.rfind("--", 0) != 0) break;  // first non-option starts the command
    std::string name = a, value;
    bool inline_value = false;
    if (size_t eq = a.find('='); eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
    static const char* const kKnown[] = {"--memory", "--cpus", "--pids", "--tmp-size", "--timeout", "--bind",
                                         "--env", "--workdir", "--hostname", "--report"};
    bool known = false;
    for (const char* k : kKnown) known = known || name == k;
    if (!known) return plain_error("stoke run", "unknown option '" + name + "' (see stoke run --help)");
    if (!inline_value) {
      if (i + 1 >= args.size()) return plain_error("stoke run", "option " + name + " needs a value");
      value = args[++i];
    }
    auto bad = [&](const Error& e) { return plain_error("stoke run", "bad value for " + name + ": " + e.message()); };
    if (name == "--memory") {
      auto v = parse_size(value);
      if (!v.ok()) return bad(v.error());
      o.spec.limits.memory_bytes = *v;
    } else if (name == "--cpus") {
      auto v = parse_cpus(value);
      if (!v.ok()) return bad(v.error());
      o.spec.limits.cpus = *v;
    } else if (name == "--pids") {
      auto v = parse_count(value);
      if (!v.ok() || *v == 0) return plain_error("stoke run", "bad value for --pids: '" + value + "' is not a positive whole number");
      o.spec.limits.pids = *v;
    } else if (name == "--tmp-size") {
      auto v = parse_size(value);
      if (!v.ok()) return bad(v.error());
      o.spec.tmp_size_bytes = *v;
    } else if (name == "--timeout") {
      auto v = parse_duration(value);
      if (!v.ok()) return bad(v.error());
      if (v->count() <= 0) return plain_error("stoke run", "bad value for --timeout: must be more than 0");
      o.timeout = *v;
    } else if (name == "--bind") {
      auto v = parse_bind(value);
      if (!v.ok()) return bad(v.error());
      o.spec.binds.push_back(*v);
    } else if (name == "--env") {
      size_t eq = value.find('=');
      if (eq == 0 || eq == std::string::npos) return plain_error("stoke run", "bad value for --env: '" + value + "' is not KEY=VALUE");
      set_env(value);
    } else if (name == "--workdir") {
      o.spec.workdir = value;
    } else if (name == "--hostname") {
      o.spec.hostname = value;
    } else if (name == "--report") {
      o.report_path = value;
    }
  }
  for (; i < args.size(); ++i) o.spec.argv.push_back(args[i]);
  if (o.spec.argv.empty()) return plain_error("stoke run", "no command given (usage: stoke run [options] -- CMD [ARGS...])");
  return o;
}

}  // namespace stoke::cli
