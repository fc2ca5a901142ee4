#include "api/cli/run_command.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "api/cli/run_options.h"
#include "api/cli/run_report.h"
#include "api/cli/tty_relay.h"
#include "sandbox/id_map.h"
#include "sandbox/spawner.h"

namespace stoke::cli {
namespace {

constexpr int kSetupFailed = 125;  // as docker/crun: the sandbox never ran

int fail(const std::string& sentence) {
  std::fprintf(stderr, "stoke run: %s\n", sentence.c_str());
  return kSetupFailed;
}

// One id per invocation, from stoke's reserved range; skip any that is a host account.
Status pick_host_ids(Spawner& spawner, SandboxSpec& spec) {
  HostIdRange range = kRunHostIds;  // disjoint from the agent's default range
  for (uint64_t attempt = 0; attempt < 16; ++attempt) {
    uint32_t id = host_id_for(range, static_cast<uint64_t>(getpid()) * 16 + attempt);
    if (spawner.check_host_ids(id, id).ok()) {
      spec.host_uid = spec.host_gid = id;
      return {};
    }
  }
  return plain_error("pick host uid", "no free id in stoke's range");
}

}  // namespace

int run_command(const std::vector<std::string>& args) {
  auto parsed = parse_run_options(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n", parsed.error().message().c_str());
    return 2;
  }
  RunOptions& o = parsed.value();
  if (o.help) {
    std::fputs(kRunUsage, stdout);
    return 0;
  }
  if (geteuid() != 0) return fail("needs root (it creates namespaces and cgroups): run it with sudo");
  auto spawner = Spawner::create();
  if (!spawner.ok()) return fail(spawner.error().message());
  if (Status ids = pick_host_ids(*spawner.value(), o.spec); !ids.ok()) return fail(ids.error().message());
  // The caller's terminal stays here: the sandbox gets pipes instead.
  auto relay = TtyRelay::create(o.spec.fds);
  if (!relay.ok()) return fail(relay.error().message());
  auto sandbox = spawner.value()->spawn(o.spec);
  if (!sandbox.ok()) return fail(sandbox.error().message());
  relay.value()->start();

  if (std::getenv("STOKE_TRACE") != nullptr) {
    // Where the spawn's time went, step by step (see SpawnTrace).
    for (const auto& [phase, ms] : sandbox.value()->trace().phases)
      std::fprintf(stderr, "stoke run: trace %-40s %8.3f ms\n", phase.c_str(), ms);
  }
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (o.timeout) deadline = std::chrono::steady_clock::now() + *o.timeout;
  auto status = sandbox.value()->wait(deadline);
  relay.value()->finish();
  if (!status.ok()) return fail(status.error().message());
  const ExitStatus& st = status.value();

  if (!o.report_path.empty()) {
    if (Status w = write_run_report(o.report_path, st); !w.ok())
      std::fprintf(stderr, "stoke run: writing the report failed: %s\n", w.error().message().c_str());
  }
  if (st.timed_out)
    std::fprintf(stderr, "stoke run: timed out after %lld ms; sandbox killed\n",
                 static_cast<long long>(o.timeout->count()));
  else if (st.oom)
    std::fprintf(stderr, "stoke run: out of memory (limit %llu bytes)\n",
                 static_cast<unsigned long long>(o.spec.limits.memory_bytes));
  return st.shell_code();
}

}  // namespace stoke::cli
