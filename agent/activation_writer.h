// Group commit of activation records.
//
// The event loop and the workers hand a write (an activation begun, or
// finished) and what to do once it is stored; one thread writes whatever has
// queued up meanwhile in one SQLite transaction (Registry::write_activations)
// and hands every completion back to the loop in one post. Under load one
// commit, one wake-up and one post serve many activations; an idle node pays
// for one write as before.
//
// The crash guarantee: a completion runs only after its write is committed,
// and the agent replies only from a finish's completion, so every reply
// follows its record. A begin may be held back (begin_hold): an activation
// starts once the running journal has it (agent/running_journal.h), which
// covers a crash meanwhile, so its row need not be written before. When its
// finish comes within the hold, the two are written as one row (the finish
// upserts the whole record); an activation that runs longer gets its running
// row when the hold ends. Short activations, the warm path's, then cost one
// row write each instead of two, in fewer and larger transactions.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/event_loop.h"
#include "agent/registry.h"

namespace stoke::agent {

class ActivationWriter {
 public:
  using Done = std::function<void(Status)>;  // runs on the loop

  // begin_hold 0: every write is taken as it comes (no folding). linger:
  // when commits come back to back (the last one ended less than `linger`
  // ago), wait that long for more before the next; 0: never.
  ActivationWriter(Registry& registry, EventLoop& loop,
                   std::chrono::milliseconds begin_hold = std::chrono::milliseconds(0),
                   std::chrono::microseconds linger = std::chrono::microseconds(0));
  // Writes what is queued, then stops (completions still go to the loop).
  ~ActivationWriter();
  ActivationWriter(const ActivationWriter&) = delete;
  ActivationWriter& operator=(const ActivationWriter&) = delete;

  // Thread-safe. more_coming: other writes are expected soon (activations
  // in flight), which lets a busy writer linger for them.
  void write(Registry::ActivationWrite::Kind kind, v1::Activation record, Done done, bool more_coming = false);

  // Thread-safe. `done` runs on the loop once every write handed over before
  // it is committed (a begin still held back excepted): a read after it sees them.
  void barrier(Done done);

  // Since start: transactions committed and writes in them (their ratio is
  // the batching under the load seen).
  uint64_t batches() const;
  uint64_t writes() const;
  // Begins folded into their finish (never written on their own).
  uint64_t folded() const;

 private:
  struct Item {
    Registry::ActivationWrite write;
    Done done;
    bool barrier = false;  // no write: completes after the writes before it
  };
  void run();

  Registry& registry_;
  EventLoop& loop_;
  const std::chrono::milliseconds begin_hold_;
  const std::chrono::microseconds linger_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Item> queue_;
  bool stopping_ = false;
  bool writer_on_timer_ = false;  // it waits for a hold to end (and wakes then by itself)
  bool lingering_ = false;        // it gathers writes for a moment (and takes them all then)
  bool more_coming_ = false;      // as the last write said
  std::chrono::steady_clock::time_point last_commit_{};  // the writer thread's own
  uint64_t batches_ = 0, writes_ = 0, folded_ = 0;
  // The writer thread's own: begins held back, by activation id, and when
  // each hold ends (in the order they came; an entry whose begin was folded
  // meanwhile is skipped).
  std::unordered_map<std::string, Item> held_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> hold_ends_;
  std::thread thread_;  // last: starts once the rest is set up
};

}  // namespace stoke::agent
