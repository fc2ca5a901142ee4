#include "agent/worker_pool.h"

namespace stoke::agent {

Result<std::unique_ptr<WorkerPool>> WorkerPool::start(size_t threads, const SpawnerOptions& options) {
  std::unique_ptr<WorkerPool> pool(new WorkerPool());
  for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) {
    auto worker = std::make_unique<Worker>();
    // Created here, on the main thread: the parent-death signal of a sandbox
    // follows the thread that spawned it, and that is the worker (see run).
    auto spawner = Spawner::create(options);
    if (!spawner.ok()) return spawner.error().context("worker " + std::to_string(i));
    worker->spawner = std::move(spawner.value());
    pool->workers_.push_back(std::move(worker));
  }
  for (auto& w : pool->workers_) {
    Worker* worker = w.get();
    pool->threads_.emplace_back([p = pool.get(), worker] { p->run(*worker); });
  }
  return pool;
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void WorkerPool::run(Worker& worker) {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job(worker);
  }
}

}  // namespace stoke::agent
