// What agent.cc and instance_pools.cc share: the state of an activation in
// flight and a few small helpers. Internal to the agent.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/activation_run.h"
#include "agent/agent.h"
#include "agent/instance.h"
#include "agent/server.h"

namespace stoke::agent {

// One activation in flight. Lives on the loop thread; workers get copies of
// what they need or run while the loop does not touch the fields they use.
struct Agent::Running {
  v1::Activation record;
  InstanceSpec spec;
  // image_key(spec) (checkpoint_build.h), "" without images: lookups, builds
  // and label checks all use it, so a version only ever meets an image of its
  // own content. Hashed once per function version (Agent::fill_spec).
  std::string image_key;
  ActivationLimits limits;
  std::string request_line;
  Server::Reply reply;  // empty for async invocations
  bool async = false;
  Server::Reply async_reply;  // async: answered with the activation id once it is recorded
  std::chrono::steady_clock::time_point accepted;  // the request arrived
  std::chrono::steady_clock::time_point queued;    // ready to run, waiting for a slot
  std::chrono::steady_clock::time_point admitted;  // got its slot
  std::chrono::steady_clock::time_point outcome_at;  // the conversation ended
  std::chrono::steady_clock::time_point conversing;  // the conversation began (the runtime has the request)
  std::unique_ptr<Instance> instance;
  std::shared_ptr<ActivationRun> conversation;
  uint64_t request_id = 0;   // to answer a sync invocation
  uint32_t concurrency = 1;  // the function version's instance limit
  bool holds_slot = false;   // counted in its function's running instances
  std::optional<uint32_t> journal_slot;  // its entry in the running journal, until its row is final
  bool force_cold = false;   // --start cold: never take an idle instance
  bool force_zygote = false; // --start zygote: wait for the function's zygote
  bool force_restore = false;  // --start restore: wait for the function's image
  bool force_prewarm = false;  // --start prewarm: a stem cell if one is free, else cold
  std::string pending_image;   // the image built for it while it waited
  std::chrono::steady_clock::time_point restore_requested;  // its restore began
  bool retried_cold = false; // its zygote instance died with the zygote: ran again cold
  bool origin_checked = false;  // finish() looked whether the zygote died too
  uint64_t generation = 0;   // of the function when the activation was accepted
  bool reuse = false;        // the instance goes back to the idle pool afterwards
  bool reserved = false;     // its memory limit is counted against the node budget
  uint64_t memory_timer = 0; // waiting for memory: the admission deadline
  std::string refused;       // set when admission refused it (resource exhausted)
  std::vector<std::string> init_logs;  // printed while a prewarmed instance loaded the code
  bool cancelled = false;  // the agent is stopping
  bool finishing = false;
};


// Host ids: a runtime zygote maps the block at the top of the configured
// range (itself and one id per function zygote); function sandboxes' single
// ids come from the rest, so the two never meet.
HostIdRange zygote_id_block(const HostIdRange& range);
HostIdRange host_ids_for_functions(const HostIdRange& range);
HostIdRange prewarm_id_block(const HostIdRange& range);  // prewarmed instances' ids

namespace detail {

inline int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// Replaces bytes that are not UTF-8 (messages may quote a function's output).
inline std::string error_json(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace detail

}  // namespace stoke::agent
