// The agent's zygote policy (docs/zygotes.md): a function zygote per Python
// function version (its own sandbox, made after its first successful
// activation), instances forked from it (startKind zygote), a memory budget
// with least-recently-used eviction, and replacement of zygotes that die.
// Everything here runs on the event-loop thread; workers do the blocking
// exchanges with the zygotes (agent/zygote.h).
#include <algorithm>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "agent/agent_internal.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {

using detail::ms_between;
using detail::ms_since;

namespace {

constexpr uint32_t kZygoteIds = 1024;  // the zygotes' id block: 1023 function zygotes (index 0 unused)

// Pss and private (USS) bytes of a process, from smaps_rollup.
std::pair<uint64_t, uint64_t> memory_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  uint64_t pss = 0, uss = 0;
  while (std::getline(in, line)) {
    auto field = [&](const char* key) -> uint64_t {
      size_t n = std::strlen(key);
      return line.compare(0, n, key) == 0 ? std::strtoull(line.c_str() + n, nullptr, 10) << 10 : 0;
    };
    pss += field("Pss:");
    uss += field("Private_Clean:") + field("Private_Dirty:");
  }
  return {pss, uss};
}

}  // namespace

// The block of host ids function zygotes take theirs from: the top of the configured
// range, which function sandboxes' single ids never use (see host_ids_for_functions).
HostIdRange zygote_id_block(const HostIdRange& range) {
  return HostIdRange{range.first + range.count - kZygoteIds, kZygoteIds};
}

// Below the zygote block, a block for prewarmed instances; the rest, at the
// bottom, is the functions' (agent/host_uids.h). Disjoint when the range has
// room for all three (the default range has); a tiny range is shared.
HostIdRange host_ids_for_functions(const HostIdRange& range) {
  if (range.count > 3 * kZygoteIds) return HostIdRange{range.first, range.count - 2 * kZygoteIds};
  return HostIdRange{range.first, range.count > 2 * kZygoteIds ? range.count - kZygoteIds : range.count};
}

HostIdRange prewarm_id_block(const HostIdRange& range) {
  if (range.count > 3 * kZygoteIds) return HostIdRange{range.first + range.count - 2 * kZygoteIds, kZygoteIds};
  return host_ids_for_functions(range);
}

void Agent::ensure_zygote(const InstanceSpec& spec) {
  if (!settings_.zygotes || stopping_ || spec.runtime != v1::PYTHON) return;
  if (zygotes_.refused(spec.function, spec.version)) return;
  if (zygotes_.starting_or_alive(spec.function, spec.version)) return;
  retire_zygote(spec.function);  // an older version's, or a dead one (if any)
  if (!path_exists(settings_.runtimes_dir + "/zygote/stoke-zygote-maker")) return;
  if (!memory_waiting_.empty()) return;  // pools never grow while an activation waits for memory
  const uint64_t need = spec.memory_bytes;
  // Room under the zygote budget: stop the least recently used ready ones.
  while (memory_.held(MemoryHolder::kZygote) + need > memory_.zygote_budget()) {
    auto lru = zygotes_.least_recently_used_ready();
    if (!lru) return;  // only starting ones: try again later
    spdlog::info("function {}: zygote stopped to make room under the zygote memory budget", *lru);
    retire_zygote(*lru);
  }
  if (!memory_.fits(need, MemoryHolder::kZygote)) return;  // only free memory: activations come first
  if (!zygote_ids_) zygote_ids_ = ZygoteIdBlock::make(kZygoteIds);
  auto id = zygote_ids_->take();
  if (!id) return;  // every id is held by a zygote or what it left alive
  if (!memory_.reserve(MemoryHolder::kZygote, need)) return;
  // The lease travels with the start and then stays with the zygote, which
  // gives it back only once nothing it made is left (agent/zygote.h).
  const uint64_t start =
      zygotes_.starting(spec.function, spec.version, need, generation_[spec.function], spec, std::chrono::steady_clock::now())
          .start;

  FunctionZygoteSpec fs;
  fs.id = id;
  fs.host_id_base = zygote_id_block(settings_.host_ids).first;
  fs.runtimes_dir = settings_.runtimes_dir;
  fs.preload = settings_.zygote_preload;
  fs.function = spec.function;
  fs.version = spec.version;
  fs.code_dir = spec.code_dir;
  fs.code_path = spec.code_path;
  fs.entry = spec.entry;
  fs.env = spec.env;
  fs.memory_bytes = spec.memory_bytes;
  fs.cpus = spec.cpus;
  fs.pids = spec.pids;
  fs.tmp_bytes = spec.tmp_bytes;
  workers_->submit([this, fs, start](Worker& worker) {
    auto z = std::make_shared<Result<std::unique_ptr<FunctionZygote>>>(FunctionZygote::start(*worker.spawner, fs));
    loop_->post([this, fs, start, z] {
      auto* e = zygotes_.waiting_for(fs.function, start);
      const bool wanted = e != nullptr && e->generation == generation_[fs.function] && !stopping_;
      if (!z->ok() || !wanted) {
        if (!z->ok()) spdlog::warn("function {}: zygote did not start: {}", fs.function, z->error().message());
        if (!z->ok() && z->error().cause == ErrorCause::kPeerRefused) zygotes_.refuse(fs.function, fs.version);
        std::shared_ptr<FunctionZygote> doomed;
        if (z->ok()) doomed = std::move(z->value());
        if (doomed) workers_->submit([doomed](Worker&) mutable { doomed.reset(); });
        // Whoever waited for it starts cold instead (retire_zygote does that).
        if (e != nullptr) retire_zygote(fs.function);
        return;
      }
      e->zygote = std::shared_ptr<FunctionZygote>(std::move(z->value()));
      spdlog::info("function {}: zygote ready (pid {})", fs.function, e->zygote->zygote_pid());
      auto waiting = std::move(e->waiting);
      for (auto& run : waiting) fork_from_zygote(run);
      serve_memory_waiting();  // activations waiting for memory come before it: it may yield at once
      fork_ahead(fs.function);
    });
  });
}

bool Agent::zygote_ready_for(const Running& run) {
  if (run.spec.runtime != v1::PYTHON || run.force_cold) return false;
  return zygotes_.ready_for(run.spec.function, run.spec.version, generation_[run.spec.function]);
}

void Agent::wait_for_zygote(const std::shared_ptr<Running>& run) {
  ensure_zygote(run->spec);
  auto* e = zygotes_.find(run->spec.function);
  if (e == nullptr) {
    // No zygote can be made now (budget, ids): ask again shortly.
    if (!settings_.zygotes || run->cancelled || stopping_ || zygotes_.refused(run->spec.function, run->spec.version)) {
      run->force_zygote = false;
      spawn_cold(run);
      return;
    }
    loop_->timer(std::chrono::milliseconds(50), [this, run](int res) {
      if (res == -ECANCELED || run->finishing) return;
      if (std::chrono::steady_clock::now() - run->admitted > std::chrono::seconds(30)) {
        run->force_zygote = false;  // give up waiting: a cold start still answers
        spawn_cold(run);
        return;
      }
      wait_for_zygote(run);
    });
    return;
  }
  if (e->zygote) fork_from_zygote(run);
  else e->waiting.push_back(run);
}

void Agent::fork_from_zygote(const std::shared_ptr<Running>& run) {
  auto* found = zygotes_.find(run->spec.function);
  if (found == nullptr || !found->zygote) {
    run->force_zygote = false;
    spawn_cold(run);
    return;
  }
  auto& e = *found;
  e.last_used = std::chrono::steady_clock::now();
  run->record.set_wait_ms(ms_between(run->queued, std::chrono::steady_clock::now()));
  // Instances forked ahead die with their zygote (their pid namespaces are
  // inside its): a dead one is dropped, a dead zygote replaced after this.
  while (!e.ahead.empty() && !e.ahead.back()->sandbox().alive()) {
    retire(std::move(e.ahead.back()), MemoryHolder::kForkedAhead, e.spec.memory_bytes);
    e.ahead.pop_back();
  }
  if (!e.zygote->alive()) {
    spdlog::warn("function {}: its zygote died; starting cold", run->spec.function);
    zygote_died(run->spec.function);
    run->force_zygote = false;
    spawn_cold(run);
    return;
  }
  if (!e.ahead.empty()) {
    // Forked ahead: its memory was reserved when it was made, and the run
    // reserved its own on admission; one of the two goes back.
    std::unique_ptr<Instance> instance = std::move(e.ahead.back());
    e.ahead.pop_back();
    memory_.release(MemoryHolder::kForkedAhead, e.spec.memory_bytes);
    start_zygote_instance(run, std::move(instance));
    fork_ahead(run->spec.function);  // the next one, while this one runs
    return;
  }
  if (e.forking_ahead) {
    e.waiting_ahead.push_back(run);  // one is on its way
    return;
  }
  auto zygote = e.zygote;
  workers_->submit([this, run, zygote](Worker& worker) {
    auto instance = std::make_shared<Result<std::unique_ptr<Instance>>>(
        Instance::fork_from(zygote, worker.spawner->cgroups(), run->spec));
    const bool forked = instance->ok();
    loop_->post([this, run, zygote, instance] {
      if (!instance->ok()) {
        // Falls back to a cold start; a dead zygote is replaced after this
        // activation (finish() asks for one again).
        spdlog::warn("function {} activation {}: zygote fork failed ({}); starting cold", run->spec.function,
                     run->record.activation_id(), instance->error().message());
        auto* now = zygotes_.find(run->spec.function);
        if (instance->error().cause == ErrorCause::kPeerUntrusted) zygote_untrusted(run->spec);
        else if (now != nullptr && now->zygote == zygote) zygote_died(run->spec.function);
        run->force_zygote = false;
        spawn_cold(run);
        return;
      }
      start_zygote_instance(run, std::move(instance->value()));
    });
    // The activation is on its way; the next fork's cgroup is made now.
    if (forked)
      zygote->prepare_group(CgroupLimits{.memory_bytes = run->spec.memory_bytes, .cpus = run->spec.cpus, .pids = run->spec.pids},
                            worker.spawner->cgroups());
  });
}

void Agent::start_zygote_instance(const std::shared_ptr<Running>& run, std::unique_ptr<Instance> instance) {
  run->instance = std::move(instance);
  run->record.set_start_kind(v1::ZYGOTE);
  // Time this activation waited for its instance (~0 when forked ahead).
  run->record.set_init_ms(ms_since(run->queued) - run->record.wait_ms());
  converse(run);
}

void Agent::fork_ahead(const std::string& function) {
  auto* found = zygotes_.find(function);
  if (found == nullptr || stopping_) return;
  auto& e = *found;
  if (!e.zygote || e.forking_ahead || e.ahead.size() >= settings_.zygote_forked_ahead) return;
  if (!memory_waiting_.empty()) return;  // pools never grow while an activation waits for memory
  const uint64_t memory = e.spec.memory_bytes;
  if (!memory_.reserve(MemoryHolder::kForkedAhead, memory)) return;  // only free memory: never at an activation's expense
  e.forking_ahead = true;
  auto zygote = e.zygote;
  InstanceSpec spec = e.spec;
  workers_->submit([this, zygote, spec, memory](Worker& worker) {
    auto instance = std::make_shared<Result<std::unique_ptr<Instance>>>(
        Instance::fork_from(zygote, worker.spawner->cgroups(), spec));
    const bool forked = instance->ok();
    loop_->post([this, zygote, spec, memory, instance] {
      auto* now = zygotes_.find(spec.function);
      const bool current = now != nullptr && now->zygote == zygote;
      if (current) now->forking_ahead = false;
      if (!instance->ok() || !current || stopping_) {
        if (!instance->ok())
          spdlog::warn("function {}: fork ahead failed: {}", spec.function, instance->error().message());
        retire(instance->ok() ? std::move(instance->value()) : nullptr, MemoryHolder::kForkedAhead, memory);
        if (current) {
          auto waiting = std::move(now->waiting_ahead);
          for (auto& run : waiting) {
            run->force_zygote = false;
            spawn_cold(run);
          }
          if (!instance->ok() && instance->error().cause == ErrorCause::kPeerUntrusted) zygote_untrusted(spec);
          else if (!instance->ok()) zygote_died(spec.function);
        }
        serve_memory_waiting();
        return;
      }
      auto& e2 = *now;
      if (!e2.waiting_ahead.empty()) {
        auto run = e2.waiting_ahead.front();
        e2.waiting_ahead.erase(e2.waiting_ahead.begin());
        memory_.release(MemoryHolder::kForkedAhead, memory);  // the run holds its own
        start_zygote_instance(run, std::move(instance->value()));
        auto rest = std::move(e2.waiting_ahead);
        e2.waiting_ahead.clear();
        for (auto& r : rest) fork_from_zygote(r);
        fork_ahead(spec.function);
        return;
      }
      e2.ahead.push_back(std::move(instance->value()));
      serve_memory_waiting();  // made while an activation waited for memory: it yields at once
      fork_ahead(spec.function);  // up to the configured depth
    });
    if (!forked) return;
    zygote->prepare_group(CgroupLimits{.memory_bytes = spec.memory_bytes, .cpus = spec.cpus, .pids = spec.pids},
                          worker.spawner->cgroups());
  });
}

void Agent::zygote_died(const std::string& function) {
  auto* e = zygotes_.find(function);
  if (e == nullptr) return;
  InstanceSpec spec = e->spec;
  bool young = std::chrono::steady_clock::now() - e->since < std::chrono::seconds(10) && e->zygote &&
               e->zygote->forks() == 0;
  retire_zygote(function);
  // Replaced at once, unless it died before ever forking (its init may kill
  // it every time): then the next successful activation asks again.
  if (!young) ensure_zygote(spec);
}

void Agent::zygote_untrusted(const InstanceSpec& spec) {
  // Its code answered a fork with something that is not a set-up instance:
  // that code controls any zygote made from it, so this version gets none.
  spdlog::warn("function {} version {}: its zygote's fork failed the agent's checks; the zygote is retired and "
               "this version starts without one",
               spec.function, spec.version);
  zygotes_.refuse(spec.function, spec.version);
  auto* e = zygotes_.find(spec.function);
  if (e != nullptr && e->version == spec.version) retire_zygote(spec.function);
}

void Agent::retire_zygote(const std::string& function, bool wake) {
  std::vector<std::string> victims;
  if (function.empty()) victims = zygotes_.functions();
  else if (zygotes_.find(function) != nullptr) victims.push_back(function);
  for (const auto& fn : victims) {
    auto e = std::move(*zygotes_.take(fn));
    memory_.release(MemoryHolder::kZygote, e.memory_bytes);
    if (e.zygote) {
      auto doomed = std::move(e.zygote);
      workers_->submit([doomed](Worker&) mutable { doomed.reset(); });
    }
    for (auto& instance : e.ahead) retire(std::move(instance), MemoryHolder::kForkedAhead, e.spec.memory_bytes);
    for (auto& run : e.waiting) {
      run->force_zygote = false;
      spawn_cold(run);
    }
    for (auto& run : e.waiting_ahead) {
      run->force_zygote = false;
      spawn_cold(run);
    }
  }
  if (!victims.empty() && wake) serve_memory_waiting();
}

void Agent::fill_zygote_status(v1::Status& st) {
  auto now = std::chrono::steady_clock::now();
  const auto ahead = static_cast<uint32_t>(zygotes_.forked_ahead());
  (*st.mutable_pools())["zygote_forked_ahead"] = ahead;
  st.set_live_sandboxes(st.live_sandboxes() + ahead);
  zygotes_.for_each([&](const std::string& fn, const auto& e) {
    if (!e.zygote) return;
    v1::Zygote* z = st.add_zygotes();
    z->set_function(fn);
    z->set_version(e.version);
    z->set_pid(e.zygote->zygote_pid());
    auto [pss, uss] = memory_of(e.zygote->zygote_pid());
    z->set_pss_bytes(pss);
    z->set_uss_bytes(uss);
    z->set_forks(e.zygote->forks());
    z->set_age_ms(ms_between(e.since, now));
    z->set_reserved_memory_bytes(e.memory_bytes);
  });
}

}  // namespace stoke::agent
