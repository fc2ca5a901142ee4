#include "agent/activation_writer.h"

#include <pthread.h>

#include <memory>

namespace stoke::agent {

namespace {
// Writes per transaction at most: bounds the time the registry's mutex is
// held (API reads of activations wait for it) and the size of one post.
constexpr size_t kMaxBatch = 256;
}  // namespace

ActivationWriter::ActivationWriter(Registry& registry, EventLoop& loop)
    : registry_(registry), loop_(loop), thread_([this] { run(); }) {}

ActivationWriter::~ActivationWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ActivationWriter::write(Registry::ActivationWrite::Kind kind, v1::Activation record, Done done) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Item{Registry::ActivationWrite{kind, std::move(record)}, std::move(done)});
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

void ActivationWriter::run() {
  pthread_setname_np(pthread_self(), "stoke-records");
  std::vector<Item> taken;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is written
      if (queue_.size() <= kMaxBatch) {
        taken.swap(queue_);
      } else {
        taken.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + kMaxBatch));
        queue_.erase(queue_.begin(), queue_.begin() + kMaxBatch);
      }
    }
    std::vector<Registry::ActivationWrite> batch;
    batch.reserve(taken.size());
    for (auto& item : taken) batch.push_back(std::move(item.write));
    std::vector<Status> results = registry_.write_activations(batch);
    {
      std::lock_guard lock(mu_);
      ++batches_;
      writes_ += taken.size();
    }
    // One post for the whole batch, in the order the writes came.
    auto completions = std::make_shared<std::vector<std::pair<Done, Status>>>();
    completions->reserve(taken.size());
    for (size_t i = 0; i < taken.size(); ++i) completions->emplace_back(std::move(taken[i].done), std::move(results[i]));
    taken.clear();
    loop_.post([completions] {
      for (auto& [done, status] : *completions)
        if (done) done(std::move(status));
    });
  }
}

}  // namespace stoke::agent
