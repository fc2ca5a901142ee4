// Group commit of activation records.
//
// The event loop and the workers hand a write (an activation begun, or
// finished) and what to do once it is stored; one thread writes whatever has
// queued up meanwhile in one SQLite transaction (Registry::write_activations)
// and hands every completion back to the loop in one post. Under load one
// commit, one wake-up and one post serve many activations; an idle node pays
// for one write as before.
//
// The crash guarantee is the registry's: a completion runs only after its
// write is committed, and the agent replies (or starts the activation) only
// from the completion, so every reply follows its record.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/event_loop.h"
#include "agent/registry.h"

namespace stoke::agent {

class ActivationWriter {
 public:
  using Done = std::function<void(Status)>;  // runs on the loop

  ActivationWriter(Registry& registry, EventLoop& loop);
  // Writes what is queued, then stops (completions still go to the loop).
  ~ActivationWriter();
  ActivationWriter(const ActivationWriter&) = delete;
  ActivationWriter& operator=(const ActivationWriter&) = delete;

  // Thread-safe.
  void write(Registry::ActivationWrite::Kind kind, v1::Activation record, Done done);

  // Since start: transactions committed and writes in them (their ratio is
  // the batching under the load seen).
  uint64_t batches() const;
  uint64_t writes() const;

 private:
  struct Item {
    Registry::ActivationWrite write;
    Done done;
  };
  void run();

  Registry& registry_;
  EventLoop& loop_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Item> queue_;
  bool stopping_ = false;
  uint64_t batches_ = 0, writes_ = 0;
  std::thread thread_;  // last: starts once the rest is set up
};

}  // namespace stoke::agent
