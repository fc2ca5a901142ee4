// The agent: wires the event loop, the API server, the registry, the code
// store and the workers together, and implements the API's services.
//
// Threads: the event loop thread owns every piece of in-memory state below
// (activations in flight, queues, counters). Workers do the blocking parts
// (SQLite, unpacking code, spawning and tearing down sandboxes) and hand
// results back with loop.post().
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <sys/types.h>

#include <map>
#include <set>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/activation_run.h"
#include "agent/activation_log.h"
#include "agent/activation_writer.h"
#include "agent/code_store.h"
#include "agent/event_loop.h"
#include "agent/function_slots.h"
#include "agent/host_uids.h"
#include "agent/idle_pool.h"
#include "agent/image_builds.h"
#include "agent/latency_window.h"
#include "agent/image_store.h"
#include "agent/memory_ledger.h"
#include "agent/namespace_keys.h"
#include "agent/prewarm_pool.h"
#include "agent/registry.h"
#include "agent/running_journal.h"
#include "agent/server.h"
#include "agent/settings.h"
#include "agent/start_path.h"
#include "agent/worker_pool.h"
#include "agent/zygote.h"
#include "agent/zygote_pool.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/id_map.h"
#include "sandbox/netns_pool.h"

namespace stoke::agent {

class Agent {
 public:
  static Result<std::unique_ptr<Agent>> start(const AgentSettings& settings);
  ~Agent();

  // Serves until SIGTERM/SIGINT (or request_stop), then stops gracefully:
  // no new connections, activations in flight cancelled with a recorded
  // status, every sandbox torn down.
  Status run();
  void request_stop();  // thread-safe

  // Called every `interval` on the loop (the systemd watchdog).
  void set_heartbeat(std::chrono::milliseconds interval, std::function<void()> beat);
  void set_stopping_hook(std::function<void()> hook) { on_stopping_ = std::move(hook); }

 private:
  struct Running;  // one activation in flight

  Agent() = default;
  void handle(const Peer& peer, v1::Request request, Server::Reply reply);
  // Registry reads and deletes, on a worker; the reply comes back to the loop.
  void registry_request(v1::Request request, Server::Reply reply, std::string ns);
  // Namespaces and their keys (operators only, but a key holder may list
  // its own: `only`; agent/namespace_scope.h).
  void namespace_request(v1::Request request, Server::Reply reply, std::optional<std::string> only);
  void create_or_update(bool create, v1::Request request, Server::Reply reply);
  void invoke(v1::Request request, Server::Reply reply);
  // The function known: the activation is recorded as running, then admitted.
  void accept(const std::shared_ptr<Running>& run, const std::string& name, const v1::Function& function,
              std::string params);
  // The invocation's own reply (sync or async) with `r`, once.
  void answer(const std::shared_ptr<Running>& run, v1::Response r);
  void admit(const std::shared_ptr<Running>& run);
  // Its instance: a pooled one if the start-path choice (agent/start_path.h)
  // says so and one is there, else memory for a new one (start_cold).
  void start_instance(const std::shared_ptr<Running>& run);
  StartFacts start_facts(const Running& run);
  void finish(const std::shared_ptr<Running>& run, ActivationOutcome outcome);
  void release_slot(const std::string& function);
  bool take_idle(const std::shared_ptr<Running>& run);
  // Keeps at most max_idle (the function's concurrency) idle instances.
  void park(const std::string& function, uint32_t version, uint64_t memory_bytes, uint32_t max_idle,
            std::unique_ptr<Instance> instance);
  void spawn_instance(const std::shared_ptr<Running>& run);  // zygote fork, or cold
  void spawn_cold(const std::shared_ptr<Running>& run);
  // The activation's conversation with its (new or idle) instance; ends in finish().
  void converse(const std::shared_ptr<Running>& run, bool first_line_is_ready = false);
  // Its instance died before it could answer, through no fault of its own: drop
  // the instance (the run keeps its memory and slot) before starting it cold.
  void rerun_cold(const std::shared_ptr<Running>& run);
  void refill_prewarm();
  bool take_prewarmed(const std::shared_ptr<Running>& run);
  // Kill and tear down on a worker; the memory its holder reserved for it goes
  // back to the budget (0 bytes: the holder keeps it, e.g. a run started again).
  void retire(std::unique_ptr<Instance> instance, MemoryHolder holder, uint64_t memory_bytes);
  void account_idle(const IdlePool::Entry& idle);  // its idle time into the overhead
  void account_prewarmed(const PrewarmPool::Entry& p);  // likewise
  // Retires idle instances that came out of the pool (memory back under kIdle).
  void retire_idle_entries(std::vector<IdlePool::Entry> entries);
  // One loop timer for the earliest keep-alive end of the idle pool.
  void arm_keep_alive();
  void keep_alive_tick();
  // Admission under the memory budget: reserve (evicting idle instances, least
  // recently used first), or wait, or fail.
  void start_cold(const std::shared_ptr<Running>& run);
  // For an activation (of `function`), platform-owned memory yields, in this
  // order, until the request fits: idle instances (least recently used),
  // prewarmed runtimes (oldest), instances forked ahead by other functions'
  // zygotes, then other functions' zygotes with nobody waiting on them (least
  // recently used). Pools reserve with memory_.reserve, which takes only free
  // memory: pools never push each other out, nor an activation.
  bool reserve_for_activation(uint64_t bytes, const std::string& function);
  bool make_room(uint64_t bytes, const std::string& function);
  // `holder` gives memory back; then whoever waits for memory is served.
  void release(MemoryHolder holder, uint64_t bytes);
  void serve_memory_waiting();
  void retire_idle(const std::string& function);    // every idle instance of it
  void function_changed(const std::string& function);  // updated or deleted
  // Zygotes (zygote_pool.cc; their state: agent/zygote_pool.h).
  void ensure_zygote(const InstanceSpec& spec);
  bool zygote_ready_for(const Running& run);
  void fork_from_zygote(const std::shared_ptr<Running>& run);
  void zygote_untrusted(const InstanceSpec& spec);
  void fork_ahead(const std::string& function);
  void start_zygote_instance(const std::shared_ptr<Running>& run, std::unique_ptr<Instance> instance);
  void wait_for_zygote(const std::shared_ptr<Running>& run);
  // wake: serve activations waiting for memory with what came back.
  void retire_zygote(const std::string& function, bool wake = true);
  void zygote_died(const std::string& function);  // retire it and, unless it never forked, make a new one
  void fill_zygote_status(v1::Status& st);
  // Checkpoint images (image_pool.cc).
  void ensure_image(const InstanceSpec& spec, const std::string& key);  // key: image_key of spec
  bool image_ready_for(const Running& run) const;
  void restore_instance(const std::shared_ptr<Running>& run);
  // Drops the function's image and starts the run cold instead.
  void restore_failed(const std::shared_ptr<Running>& run, const std::string& why);
  void wait_for_image(const std::shared_ptr<Running>& run);
  Result<InstanceSpec> instance_spec_for(const v1::Function& fn) const;
  void status(uint64_t id, Server::Reply reply);
  void begin_stop();
  void heartbeat_tick();
  void prune_activations_tick();  // retention, on a worker, every activation_prune_interval

  // Held for the agent's life, released last (declared first).
  unique_fd state_lock_;
  AgentSettings settings_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<HostUids> host_uids_;
  std::unique_ptr<CodeStore> code_;
  std::shared_ptr<NetnsPool> netns_;
  // Activation records, group-committed; after the registry and the loop (it
  // uses both), before the workers (they write through it).
  // Activations begun and not yet recorded as finished (the crash record);
  // before the writer, whose last completions end its slots.
  std::unique_ptr<RunningJournal> journal_;
  // Finished records, appended before their reply (agent/activation_log.h);
  // those whose registry row is not written yet are kept here too, by id,
  // for reads. The log is emptied when none is left and it is this large.
  std::unique_ptr<ActivationLog> activation_log_;
  std::unordered_map<std::string, v1::Activation> logged_;
  static constexpr uint64_t kActivationLogClearBytes = 4u << 20;
  // Its registry row through the writer; tried again each second while the
  // registry refuses it (a full disk).
  void index_logged(const v1::Activation& record, bool more_coming);
  void clear_activation_log_when_indexed();
  std::unique_ptr<ActivationWriter> records_;
  // How long an activation's running row may wait for its finish, to be
  // written as one row with it (agent/activation_writer.h). Longer
  // activations show as running in lists after it; by id at once.
  static constexpr std::chrono::milliseconds kBeginHold{50};
  // How long the writer gathers records when commits come back to back.
  // No reply waits for a commit (the activation log has the record), so this
  // only trades how soon a row is in the registry for fewer transactions:
  // 2 ms took the writer from ~25 to ~19 µs per record under the pipelined
  // load of scripts/bench throughput, against 0.5 ms.
  static constexpr std::chrono::microseconds kRecordLinger{2000};
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<Server> server_;
  std::map<std::string, bool> features_;  // probed once at start
  NamespaceKeys namespace_keys_;  // every namespace with a key, as the registry has them
  FunctionSlots<std::shared_ptr<Running>> slots_;  // per-function concurrency and queue
  std::unordered_map<std::string, std::shared_ptr<Running>> running_;  // by activation id
  IdlePool idle_;  // warm instances, by function
  uint64_t keep_alive_timer_ = 0;  // armed while the pool has an entry (0: none)
  std::unordered_map<std::string, uint64_t> generation_;  // bumped when a function changes
  // Current function versions for the invoke path, filled from the registry
  // and dropped when a function changes (function_changed); cleared when full.
  // With each, once built, what its instances are made from: building it
  // stats the code and the runtimes and hashes the image key, which a warm
  // call would otherwise pay every time.
  struct CachedFunction {
    v1::Function function;
    std::shared_ptr<const InstanceSpec> spec;  // null until the first call
    std::string image_key;                     // of `spec` ("" without images)
  };
  static constexpr size_t kCachedFunctions = 4096;
  std::unordered_map<std::string, CachedFunction> functions_;
  // The function version's instance spec and image key, cached in functions_.
  Status fill_spec(Running& run, const v1::Function& fn);
  // Every byte counted against the node's (and the zygotes') memory budget, by holder.
  MemoryLedger memory_{0, 0};
  std::deque<std::shared_ptr<Running>> memory_waiting_;
  double idle_gb_seconds_ = 0;
  LatencyWindow warm_agent_time_;  // µs per successful warm activation (the status reports it)
  PrewarmPool prewarmed_;  // stem cells, per runtime
  uint64_t prewarm_counter_ = 0;
  ZygotePool<FunctionZygote, Instance, InstanceSpec, std::shared_ptr<Running>> zygotes_;
  // Id indexes of the zygotes' host id block, for the agent's life.
  std::shared_ptr<ZygoteIdBlock> zygote_ids_;
  std::unique_ptr<ImageStore> images_;
  // Builds in progress and their waiters, refused versions, image files checked compatible.
  ImageBuilds<std::shared_ptr<Running>> images_building_;
  uint64_t started_ms_ = 0;
  bool stopping_ = false;
  std::chrono::milliseconds heartbeat_interval_{0};
  std::function<void()> heartbeat_;
  std::function<void()> on_stopping_;
};

// Activation ids: 32 lowercase hex digits, the first 12 the wall clock in ms,
// the other 20 (80 bits) from the kernel's random source. Ordered by time, a
// new id lands at the end of the registry's id index: a batch of inserts
// writes one index page, not one random page each (and its existence check
// reads a cached page), and the index stays dense. Still unguessable.
std::string new_activation_id();
// billed time rounded up to the unit, and GB-seconds at the reserved memory.
void fill_billing(v1::Usage& usage, double billed_source_ms, uint64_t unit_ms, uint64_t memory_bytes);

}  // namespace stoke::agent
