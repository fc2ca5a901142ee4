// The agent's one event loop: io_uring (liburing) for sockets, runtime pipes,
// timers, child exits (pidfd polls) and signals; blocking work runs elsewhere
// and comes back through post().
//
// Every operation takes a callback that runs on the loop thread with the
// kernel's result (bytes, fd, or -errno). The loop owns nothing it is given:
// buffers and fds must outlive the operation (callers keep them in the object
// the callback captures).
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

class EventLoop {
 public:
  using Callback = std::function<void(int result)>;

  // Sets up the ring; fails with a clear message when io_uring is unavailable
  // (kernel.io_uring_disabled, seccomp, old kernel).
  static Result<std::unique_ptr<EventLoop>> create(unsigned entries = 256);
  ~EventLoop();

  // accept4(fd) once; the callback gets the new fd (O_CLOEXEC) or -errno.
  // Each call returns the operation's id, for cancel().
  uint64_t accept(int fd, Callback cb);
  uint64_t read(int fd, void* buf, size_t len, Callback cb);
  uint64_t write(int fd, const void* buf, size_t len, Callback cb);
  // Fires once when `fd` is ready for `events` (POLLIN for a pidfd: exited).
  uint64_t poll(int fd, unsigned events, Callback cb);
  // Cancel a pending operation; its callback then runs with -ECANCELED (or
  // with its result, if it completed first). No-op for finished operations.
  void cancel(uint64_t id);
  // Fires after `delay` with 0, or -ECANCELED after cancel_timer(id).
  uint64_t timer(std::chrono::milliseconds delay, Callback cb);
  void cancel_timer(uint64_t id);

  // Thread-safe: run `fn` on the loop thread soon.
  void post(std::function<void()> fn);

  // Runs until stop(); stop() may be called from any thread.
  Status run();
  void stop();

  // signalfd-style: deliver these signals (blocked in every thread by the
  // caller beforehand) to `on_signal` on the loop thread.
  Status watch_signals(const std::vector<int>& signals, std::function<void(int)> on_signal);

 private:
  EventLoop() = default;
  io_uring_sqe* sqe();
  uint64_t remember(Callback cb);
  void arm_wakeup();
  void arm_signals();

  io_uring ring_{};
  bool ring_ready_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Callback> pending_;
  unique_fd wakeup_;  // eventfd written by post()/stop()
  uint64_t wakeup_value_ = 0;
  std::mutex posted_mu_;
  std::deque<std::function<void()>> posted_;
  std::atomic<bool> stopping_{false};
  unique_fd signals_;  // signalfd
  std::unique_ptr<char[]> signal_buf_;
  std::function<void(int)> on_signal_;
  std::unordered_map<uint64_t, std::unique_ptr<__kernel_timespec>> timer_specs_;
};

}  // namespace stoke::agent
