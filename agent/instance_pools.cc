// The agent's instance pools and admission: idle (warm) instances, prewarmed
// runtimes, and the node memory budget they and running activations share.
// Everything here runs on the event-loop thread (blocking parts go to workers).
#include <algorithm>
#include <array>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "agent/agent_internal.h"
#include "agent/eviction.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {

using detail::error_json;
using detail::ms_between;
using detail::ms_since;

bool Agent::reserve_for_activation(uint64_t bytes, const std::string& function) {
  if (!memory_.fits(bytes)) make_room(bytes, function);
  return memory_.reserve(MemoryHolder::kActivation, bytes);
}

bool Agent::make_room(uint64_t bytes, const std::string& function) {
  if (memory_.fits(bytes)) return true;
  // A snapshot of the platform's memory, with where each entry lives.
  struct Where {
    std::string function;   // idle, forked ahead, zygote
    uint64_t idle_id = 0;   // idle
    v1::Runtime runtime{};  // prewarmed
  };
  std::vector<PooledMemory> pool;
  std::vector<Where> where;
  idle_.for_each([&](const std::string& fn, const IdlePool::Entry& idle) {
    pool.push_back({PooledMemory::kIdle, fn, idle.parked, idle.memory_bytes, false});
    where.push_back({fn, idle.id, {}});
  });
  prewarmed_.for_each([&](v1::Runtime rt, const PrewarmPool::Entry& p) {
    pool.push_back({PooledMemory::kPrewarmed, "", p.since, p.memory_bytes, false});
    where.push_back({"", 0, rt});
  });
  zygotes_.for_each([&](const std::string& fn, const auto& e) {
    for (size_t i = 0; i < e.ahead.size(); ++i) {
      pool.push_back({PooledMemory::kForkedAhead, fn, e.since, e.spec.memory_bytes, false});
      where.push_back({fn, 0, {}});
    }
    const bool busy = !e.zygote || e.forking_ahead || !e.waiting.empty() || !e.waiting_ahead.empty();
    pool.push_back({PooledMemory::kZygote, fn, e.last_used, e.memory_bytes, busy});
    where.push_back({fn, 0, {}});
  });
  const uint64_t free = memory_.budget() - memory_.reserved();
  for (size_t i : choose_evictions(pool, function, free, bytes)) {
    const Where& w = where[i];
    switch (pool[i].kind) {
      case PooledMemory::kIdle: {
        auto victim = idle_.take_by_id(w.function, w.idle_id);
        if (!victim) break;
        spdlog::info("function {}: idle instance evicted to make room under the memory budget", w.function);
        std::vector<IdlePool::Entry> out;
        out.push_back(std::move(*victim));
        retire_idle_entries(std::move(out));
        break;
      }
      case PooledMemory::kPrewarmed: {
        auto victim = prewarmed_.take_oldest(w.runtime);
        if (!victim) break;
        spdlog::info("a prewarmed runtime yields its memory to an activation");
        account_prewarmed(*victim);
        retire(std::move(victim->instance), MemoryHolder::kPrewarmed, victim->memory_bytes);
        break;
      }
      case PooledMemory::kForkedAhead: {
        auto* z = zygotes_.find(w.function);
        if (z == nullptr || z->ahead.empty()) break;
        spdlog::info("function {}: an instance forked ahead yields its memory to an activation", w.function);
        retire(std::move(z->ahead.back()), MemoryHolder::kForkedAhead, z->spec.memory_bytes);
        z->ahead.pop_back();
        break;
      }
      case PooledMemory::kZygote:
        if (zygotes_.find(w.function) == nullptr) break;
        spdlog::info("function {}: zygote stopped to make room for an activation under the memory budget", w.function);
        retire_zygote(w.function, /*wake=*/false);
        break;
    }
  }
  return memory_.fits(bytes);
}

void Agent::release(MemoryHolder holder, uint64_t bytes) {
  memory_.release(holder, bytes);
  serve_memory_waiting();
}

void Agent::serve_memory_waiting() {
  // Whoever waits for memory, in order, while it fits.
  while (!memory_waiting_.empty() && !stopping_) {
    auto next = memory_waiting_.front();
    if (!reserve_for_activation(next->spec.memory_bytes, next->spec.function)) break;
    memory_waiting_.pop_front();
    loop_->cancel_timer(next->memory_timer);
    next->reserved = true;
    spawn_instance(next);
  }
}

void Agent::start_cold(const std::shared_ptr<Running>& run) {
  const uint64_t need = run->spec.memory_bytes;
  if (reserve_for_activation(need, run->spec.function)) {
    run->reserved = true;
    spawn_instance(run);
    return;
  }
  auto refuse = [this, run](const std::string& why) {
    run->refused = why;
    finish(run, ActivationOutcome{v1::INTERNAL_ERROR, error_json("resource exhausted: " + why), {}, false, false});
  };
  if (need > settings_.memory_budget_bytes) {
    refuse("the function's memory (" + std::to_string(need >> 20) + " MiB) is more than the node's budget (" +
           std::to_string(settings_.memory_budget_bytes >> 20) + " MiB)");
    return;
  }
  // Wait (bounded) for running activations to give memory back.
  memory_waiting_.push_back(run);
  run->memory_timer = loop_->timer(settings_.admission_wait, [this, run, refuse](int res) {
    if (res == -ECANCELED) return;
    auto it = std::find(memory_waiting_.begin(), memory_waiting_.end(), run);
    if (it == memory_waiting_.end()) return;
    memory_waiting_.erase(it);
    refuse("no memory became free under the node's budget (" + std::to_string(settings_.memory_budget_bytes >> 20) +
           " MiB) within " + std::to_string(settings_.admission_wait.count()) + " ms");
  });
}


void Agent::refill_prewarm() {
  // After every activation: nothing to do (no syscall) unless one is missing.
  if (stopping_ || (prewarmed_.missing(v1::PYTHON, settings_.prewarm_python) == 0 &&
                    prewarmed_.missing(v1::NODE, settings_.prewarm_node) == 0))
    return;
  if (!path_exists(settings_.runtimes_dir + "/python/stoke_runtime.py")) return;
  for (auto [runtime, target] : {std::pair{v1::PYTHON, settings_.prewarm_python}, std::pair{v1::NODE, settings_.prewarm_node}}) {
    while (prewarmed_.missing(runtime, target) > 0) {
      const uint64_t memory = settings_.default_memory_bytes;
      if (!memory_waiting_.empty()) return;  // pools never grow while an activation waits for memory
      // Only free memory: the budget is for activations first.
      if (!memory_.reserve(MemoryHolder::kPrewarmed, memory)) return;
      prewarmed_.starting(runtime);
      InstanceSpec spec;
      spec.function = "(prewarm)";
      spec.runtime = runtime;
      spec.runtimes_dir = settings_.runtimes_dir;
      spec.code_path = "--prewarm";
      spec.memory_bytes = memory;
      // Its /code: empty until a function takes it (then filled with links).
      spec.code_dir = settings_.state_dir + "/prewarm/" + std::to_string(prewarm_counter_ + 1);
      // Its own uid, as any sandbox: the function that takes it is its only user.
      // From the prewarm block, in turn: never a function's id (agent/host_uids.h).
      const HostIdRange block = prewarm_id_block(settings_.host_ids);
      spec.host_uid = block.first + static_cast<uint32_t>(++prewarm_counter_ % block.count);
      workers_->submit([this, spec, memory](Worker& worker) {
        Status dir = make_dirs(spec.code_dir, 0755);
        auto instance = std::make_shared<Result<std::unique_ptr<Instance>>>(
            dir.ok() ? Instance::start(*worker.spawner, spec) : Result<std::unique_ptr<Instance>>(dir.error()));
        if (instance->ok()) instance->value()->own_directory(spec.code_dir);
        else {
          std::error_code ec;
          std::filesystem::remove_all(spec.code_dir, ec);
        }
        loop_->post([this, runtime = spec.runtime, memory, instance] {
          if (!instance->ok() || stopping_) {
            prewarmed_.started(runtime, std::nullopt);
            if (!instance->ok())
              spdlog::warn("prewarm {}: instance did not start: {}", v1::Runtime_Name(runtime), instance->error().message());
            retire(instance->ok() ? std::move(instance->value()) : nullptr, MemoryHolder::kPrewarmed, memory);
            serve_memory_waiting();
            return;
          }
          // Pooled once the runtime says it has started (its interpreter is
          // up), so whoever takes it does not wait for that.
          auto holder = std::make_shared<std::unique_ptr<Instance>>(std::move(instance->value()));
          auto buf = std::make_shared<std::string>();
          auto chunk = std::make_shared<std::array<char, 256>>();
          // The pending read owns the closure (the closure only knows itself
          // weakly): when the agent stops with the read still pending, the
          // loop drops it and the instance is torn down instead of leaking.
          auto read_ready = std::make_shared<std::function<void()>>();
          std::weak_ptr<std::function<void()>> weak_ready = read_ready;
          *read_ready = [this, runtime, memory, holder, buf, chunk, weak_ready] {
            auto self = weak_ready.lock();
            if (!self) return;
            loop_->read((*holder)->result_fd(), chunk->data(), chunk->size(),
                        [this, runtime, memory, holder, buf, chunk, self](int n) {
                          if (n > 0) buf->append(chunk->data(), static_cast<size_t>(n));
                          if (n > 0 && buf->find('\n') == std::string::npos) return (*self)();
                          if (n <= 0 || buf->rfind("{\"ready\": true}", 0) != 0 || stopping_) {
                            prewarmed_.started(runtime, std::nullopt);
                            if (n <= 0) spdlog::warn("prewarm {}: the runtime exited while starting", v1::Runtime_Name(runtime));
                            retire(std::move(*holder), MemoryHolder::kPrewarmed, memory);
                            serve_memory_waiting();
                            return;
                          }
                          prewarmed_.started(runtime, PrewarmPool::Entry{std::move(*holder), memory,
                                                                         std::chrono::steady_clock::now()});
                          // Made while an activation waited for memory: it yields at once.
                          serve_memory_waiting();
                        });
          };
          (*read_ready)();
        });
      });
    }
  }
}

bool Agent::take_prewarmed(const std::shared_ptr<Running>& run) {
  // Out of the pool before reserving: making room may yield prewarmed runtimes.
  auto newest = prewarmed_.take_newest(run->spec.runtime);
  if (!newest) return false;
  PrewarmPool::Entry taken = std::move(*newest);
  const uint64_t have = taken.memory_bytes, need = run->spec.memory_bytes;
  if (need > have && !reserve_for_activation(need - have, run->spec.function)) {
    prewarmed_.put_back(run->spec.runtime, std::move(taken));
    return false;
  }
  // Its memory is the activation's now, resized to the function's.
  memory_.transfer(MemoryHolder::kPrewarmed, MemoryHolder::kActivation, have);
  if (need < have) memory_.release(MemoryHolder::kActivation, have - need);
  account_prewarmed(taken);
  run->instance = std::move(taken.instance);
  run->reserved = true;
  run->record.set_start_kind(v1::PREWARM);
  run->record.set_wait_ms(ms_between(run->queued, std::chrono::steady_clock::now()));
  auto injected = std::chrono::steady_clock::now();
  // The replacement is started once this activation is done: a runtime
  // starting beside it would compete for the CPU it needs now.
  // Off the loop: the function's limits on the sandbox's cgroup, its code read
  // into the init line. Then, on the loop, the init exchange and the activation.
  workers_->submit([this, run, injected](Worker&) {
    CgroupLimits limits{.memory_bytes = run->spec.memory_bytes, .cpus = run->spec.cpus, .pids = run->spec.pids};
    Status given = run->instance->sandbox().cgroup().set_limits(limits);
    if (given.ok()) given = link_code_tree(run->spec.code_dir, run->instance->code_dir());
    nlohmann::json init = {{"__stoke_init", {{"code_path", run->spec.code_path}, {"entry", run->spec.entry}}}};
    auto holder = std::make_shared<Result<std::string>>(given.ok() ? Result<std::string>(init.dump() + "\n")
                                                                   : Result<std::string>(given.error()));
    loop_->post([this, run, injected, holder] {
      if (!holder->ok()) {
        finish(run, ActivationOutcome{v1::INTERNAL_ERROR,
                                      error_json("the prewarmed instance could not take the code: " + holder->error().message()),
                                      {}, false, false});
        return;
      }
      run->conversation = ActivationRun::start(
          *loop_, *run->instance, holder->value(), run->limits, [this, run, injected](ActivationOutcome ack) {
            if (ack.status != v1::SUCCESS) {
              finish(run, std::move(ack));
              return;
            }
            run->init_logs = std::move(ack.logs);
            run->record.set_init_ms(ms_since(injected));
            converse(run);
          });
    });
  });
  return true;
}


void Agent::function_changed(const std::string& function) {
  ++generation_[function];  // activations in flight will not park their instance
  functions_.erase(function);
  retire_idle(function);
  retire_zygote(function);  // its next instance must not come from the old code
  // Its images are of the old code (the new version's is built after its
  // first successful call). A build in flight is discarded when it lands.
  // Refusals (of an image, of a zygote) go too: after a delete, a new
  // function of the same name starts again at version 1, which an old
  // refusal would otherwise still name.
  images_building_.forget_refusals(function);
  zygotes_.forget_refusals(function);
  if (images_) {
    auto store = images_.get();
    workers_->submit([store, function](Worker&) { store->drop_function(function); });
  }
}

bool Agent::take_idle(const std::shared_ptr<Running>& run) {
  std::vector<IdlePool::Entry> stale;  // an older version's: never serves new code
  auto idle = idle_.take(run->spec.function, run->spec.version, run->spec.memory_bytes, stale);
  retire_idle_entries(std::move(stale));
  if (!idle) return false;
  account_idle(*idle);
  // Its memory is the activation's while it runs (parked again after, or
  // given back with the instance).
  memory_.transfer(MemoryHolder::kIdle, MemoryHolder::kActivation, idle->memory_bytes);
  run->reserved = true;
  run->instance = std::move(idle->instance);
  return true;
}

void Agent::park(const std::string& function, uint32_t version, uint64_t memory_bytes, uint32_t max_idle,
                 std::unique_ptr<Instance> instance) {
  instance->state = Instance::State::kIdle;
  memory_.transfer(MemoryHolder::kActivation, MemoryHolder::kIdle, memory_bytes);  // the run's reservation
  std::vector<IdlePool::Entry> over;  // beyond the function's concurrency: the least recently parked
  idle_.park(function, IdlePool::Entry{std::move(instance), version, memory_bytes, std::chrono::steady_clock::now(), 0},
             max_idle, over);
  retire_idle_entries(std::move(over));
  arm_keep_alive();
}

void Agent::arm_keep_alive() {
  if (keep_alive_timer_ != 0 || stopping_) return;
  auto next = idle_.next_expiry();
  if (!next) return;
  // Whole milliseconds, rounded up: firing early would find nothing expired.
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(*next - std::chrono::steady_clock::now());
  keep_alive_timer_ = loop_->timer(std::max(wait, std::chrono::milliseconds(1)), [this](int res) {
    keep_alive_timer_ = 0;
    if (res == -ECANCELED) return;
    keep_alive_tick();
  });
}

void Agent::keep_alive_tick() {
  auto expired = idle_.take_expired(std::chrono::steady_clock::now());
  if (!expired.empty()) {
    spdlog::info("{} idle instance(s) stopped after the keep-alive", expired.size());
    retire_idle_entries(std::move(expired));
    serve_memory_waiting();  // memory came back
  }
  arm_keep_alive();
}

void Agent::account_idle(const IdlePool::Entry& idle) {
  double seconds = ms_since(idle.parked) / 1000.0;
  idle_gb_seconds_ += seconds * static_cast<double>(idle.memory_bytes) / double(1ULL << 30);
}

void Agent::account_prewarmed(const PrewarmPool::Entry& p) {
  idle_gb_seconds_ += ms_since(p.since) / 1000.0 * static_cast<double>(p.memory_bytes) / double(1ULL << 30);
}

void Agent::retire_idle_entries(std::vector<IdlePool::Entry> entries) {
  for (auto& idle : entries) {
    account_idle(idle);
    retire(std::move(idle.instance), MemoryHolder::kIdle, idle.memory_bytes);
  }
}

void Agent::retire(std::unique_ptr<Instance> instance, MemoryHolder holder, uint64_t memory_bytes) {
  memory_.release(holder, memory_bytes);
  if (!instance) return;
  auto doomed = std::make_shared<std::unique_ptr<Instance>>(std::move(instance));
  workers_->submit([doomed](Worker&) {
    Sandbox& sb = (*doomed)->sandbox();
    (void)sb.kill();
    (void)sb.wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));  // bounded, then cgroup kill
    doomed->reset();
  });
}

void Agent::retire_idle(const std::string& function) {
  auto entries = idle_.take_function(function);
  if (entries.empty()) return;
  retire_idle_entries(std::move(entries));
  serve_memory_waiting();
}


}  // namespace stoke::agent
