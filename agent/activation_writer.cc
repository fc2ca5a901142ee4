#include "agent/activation_writer.h"

#include <pthread.h>

#include <memory>

namespace stoke::agent {

namespace {
// Writes per transaction at most: bounds the time the registry's mutex is
// held (API reads of activations wait for it) and the size of one post.
constexpr size_t kMaxBatch = 256;
}  // namespace

ActivationWriter::ActivationWriter(Registry& registry, EventLoop& loop, std::chrono::milliseconds begin_hold,
                                   std::chrono::microseconds linger)
    : registry_(registry), loop_(loop), begin_hold_(begin_hold), linger_(linger), thread_([this] { run(); }) {}

ActivationWriter::~ActivationWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ActivationWriter::write(Registry::ActivationWrite::Kind kind, v1::Activation record, Done done,
                             bool more_coming) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Item{Registry::ActivationWrite{kind, std::move(record)}, std::move(done)});
    more_coming_ = more_coming;
    // A begin to hold back need not wake the writer when it is going to wake
    // anyway (at the end of an earlier hold, which comes first): under load
    // only finishes wake it, one wake-up per activation instead of two.
    wake = kind != Registry::ActivationWrite::kBegin || begin_hold_.count() == 0 || !writer_on_timer_;
    if (lingering_) wake = queue_.size() >= kMaxBatch;  // it takes everything when the moment ends
  }
  if (wake) wake_.notify_one();
}

void ActivationWriter::barrier(Done done) {
  {
    std::lock_guard lock(mu_);
    Item item;
    item.done = std::move(done);
    item.barrier = true;
    queue_.push_back(std::move(item));
  }
  wake_.notify_one();
}

uint64_t ActivationWriter::batches() const {
  std::lock_guard lock(mu_);
  return batches_;
}

uint64_t ActivationWriter::writes() const {
  std::lock_guard lock(mu_);
  return writes_;
}

uint64_t ActivationWriter::folded() const {
  std::lock_guard lock(mu_);
  return folded_;
}

void ActivationWriter::run() {
  pthread_setname_np(pthread_self(), "stoke-records");
  using Clock = std::chrono::steady_clock;
  std::vector<Item> taken;
  for (;;) {
    bool stopping;
    {
      std::unique_lock lock(mu_);
      auto has_work = [this] { return stopping_ || !queue_.empty(); };
      writer_on_timer_ = !hold_ends_.empty();
      if (hold_ends_.empty()) wake_.wait(lock, has_work);
      else wake_.wait_until(lock, hold_ends_.front().first, has_work);
      writer_on_timer_ = false;
      if (linger_.count() > 0 && more_coming_ && !stopping_ && queue_.size() < kMaxBatch &&
          Clock::now() - last_commit_ < linger_) {
        // Busy (this commit would follow the last one closely, and the
        // writer was told more are on their way): gather for a moment more,
        // unwoken, so one transaction serves the finishes of several
        // instances. A transaction's fixed cost (locks, WAL frames, a
        // wake-up each way) is most of a short activation's record. Alone
        // (one call at a time) nothing waits.
        lingering_ = true;
        wake_.wait_until(lock, Clock::now() + linger_, [this] { return stopping_ || queue_.size() >= kMaxBatch; });
        lingering_ = false;
      }
      stopping = stopping_;
      if (stopping && queue_.empty() && held_.empty()) return;  // everything is written
      if (queue_.size() <= kMaxBatch) {
        taken.swap(queue_);
      } else {
        taken.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + kMaxBatch));
        queue_.erase(queue_.begin(), queue_.begin() + kMaxBatch);
      }
    }
    const auto now = Clock::now();
    std::vector<Item> items;  // this transaction's, in the order they came
    items.reserve(taken.size());
    // Begins written as part of their finish: (completion, the finish's index in items).
    std::vector<std::pair<Done, size_t>> folded;
    std::vector<Done> barriers;  // complete after this transaction, which holds every write before them
    for (auto& item : taken) {
      if (item.barrier) {
        barriers.push_back(std::move(item.done));
        continue;
      }
      const std::string& id = item.write.record.activation_id();
      if (item.write.kind == Registry::ActivationWrite::kBegin && begin_hold_.count() > 0 && !stopping &&
          !held_.count(id)) {
        hold_ends_.emplace_back(now + begin_hold_, id);
        held_.emplace(id, std::move(item));
        continue;
      }
      if (item.write.kind == Registry::ActivationWrite::kFinish) {
        if (auto h = held_.find(id); h != held_.end()) {
          folded.emplace_back(std::move(h->second.done), items.size());
          held_.erase(h);
        }
      }
      items.push_back(std::move(item));
    }
    taken.clear();
    // Begins whose hold ended (all of them when stopping) get their running row.
    while (!hold_ends_.empty() && (stopping || hold_ends_.front().first <= now)) {
      auto h = held_.find(hold_ends_.front().second);
      hold_ends_.pop_front();
      if (h == held_.end()) continue;  // folded into its finish meanwhile
      items.push_back(std::move(h->second));
      held_.erase(h);
    }
    if (items.empty() && folded.empty() && barriers.empty()) continue;
    std::vector<Registry::ActivationWrite> batch;
    batch.reserve(items.size());
    for (auto& item : items) batch.push_back(std::move(item.write));
    std::vector<Status> results =
        batch.empty() ? std::vector<Status>{} : registry_.write_activations(batch);
    {
      std::lock_guard lock(mu_);
      if (!batch.empty()) ++batches_;
      writes_ += items.size() + folded.size();
      folded_ += folded.size();
    }
    // One post for the whole batch, in the order the writes came; a folded
    // begin completes with its finish's transaction.
    auto completions = std::make_shared<std::vector<std::pair<Done, Status>>>();
    completions->reserve(items.size() + folded.size());
    for (auto& [done, finish] : folded) completions->emplace_back(std::move(done), results[finish]);
    for (size_t i = 0; i < items.size(); ++i) completions->emplace_back(std::move(items[i].done), std::move(results[i]));
    for (auto& done : barriers) completions->emplace_back(std::move(done), Status{});
    loop_.post([completions] {
      for (auto& [done, status] : *completions)
        if (done) done(std::move(status));
    });
    if (!batch.empty()) last_commit_ = Clock::now();
  }
}

}  // namespace stoke::agent
