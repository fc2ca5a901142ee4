// Threads for blocking work (spawning and tearing down sandboxes, SQLite,
// unpacking code) so the event loop never waits on it. Each worker owns a
// sandbox Spawner (a Spawner serialises its spawns) and jobs may use it.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/spawner.h"

namespace stoke::agent {

struct Worker {
  std::unique_ptr<Spawner> spawner;
};

class WorkerPool {
 public:
  using Job = std::function<void(Worker&)>;

  // Starts `threads` workers, each creating its Spawner with `options` first.
  static Result<std::unique_ptr<WorkerPool>> start(size_t threads, const SpawnerOptions& options);
  ~WorkerPool();  // finishes queued jobs, then joins

  void submit(Job job);

 private:
  WorkerPool() = default;
  void run(Worker& worker);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
};

}  // namespace stoke::agent
