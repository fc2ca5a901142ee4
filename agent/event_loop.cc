#include "agent/event_loop.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

namespace stoke::agent {
namespace {

// user_data values that are not callbacks.
constexpr uint64_t kWakeupTag = 0;
constexpr uint64_t kSignalTag = ~uint64_t{0};
constexpr uint64_t kIgnoreTag = ~uint64_t{0} - 1;  // cancellations

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned entries) {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  int rc = io_uring_queue_init(entries, &loop->ring_, 0);
  if (rc < 0) {
    std::string why = rc == -EPERM ? "io_uring is disabled (kernel.io_uring_disabled or a seccomp policy)"
                    : rc == -ENOSYS ? "this kernel has no io_uring"
                                    : "io_uring_queue_init failed";
    return Error{"start event loop", -rc, why};
  }
  loop->ring_ready_ = true;
  // The probe: every opcode the agent relies on must be there.
  io_uring_probe* probe = io_uring_get_probe_ring(&loop->ring_);
  if (probe == nullptr) return plain_error("start event loop", "cannot probe io_uring opcodes");
  for (int op : {IORING_OP_ACCEPT, IORING_OP_READ, IORING_OP_WRITE, IORING_OP_POLL_ADD, IORING_OP_TIMEOUT,
                 IORING_OP_TIMEOUT_REMOVE}) {
    if (!io_uring_opcode_supported(probe, op)) {
      io_uring_free_probe(probe);
      return plain_error("start event loop", "io_uring lacks opcode " + std::to_string(op));
    }
  }
  io_uring_free_probe(probe);
  loop->wakeup_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!loop->wakeup_) return sys_error("eventfd for the event loop");
  loop->arm_wakeup();
  return loop;
}

EventLoop::~EventLoop() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* EventLoop::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (s == nullptr) {
    // Queue full: hand what we have to the kernel and take a fresh slot.
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;  // cannot be null after a submit of a non-empty queue
}

uint64_t EventLoop::remember(Callback cb) {
  uint64_t id = next_id_++;
  if (id == kSignalTag || id == kIgnoreTag || id == kWakeupTag) id = next_id_++;
  pending_.emplace(id, std::move(cb));
  return id;
}

uint64_t EventLoop::accept(int fd, Callback cb) {
  io_uring_sqe* s = sqe();
  io_uring_prep_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC);
  uint64_t id = remember(std::move(cb));
  io_uring_sqe_set_data64(s, id);
  return id;
}

uint64_t EventLoop::read(int fd, void* buf, size_t len, Callback cb) {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(-1));
  uint64_t id = remember(std::move(cb));
  io_uring_sqe_set_data64(s, id);
  return id;
}

uint64_t EventLoop::write(int fd, const void* buf, size_t len, Callback cb) {
  io_uring_sqe* s = sqe();
  io_uring_prep_write(s, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(-1));
  uint64_t id = remember(std::move(cb));
  io_uring_sqe_set_data64(s, id);
  return id;
}

uint64_t EventLoop::poll(int fd, unsigned events, Callback cb) {
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_add(s, fd, events);
  uint64_t id = remember(std::move(cb));
  io_uring_sqe_set_data64(s, id);
  return id;
}

void EventLoop::cancel(uint64_t id) {
  if (!pending_.count(id)) return;
  io_uring_sqe* s = sqe();
  io_uring_prep_cancel64(s, id, 0);
  io_uring_sqe_set_data64(s, kIgnoreTag);
}

uint64_t EventLoop::timer(std::chrono::milliseconds delay, Callback cb) {
  auto spec = std::make_unique<__kernel_timespec>();
  spec->tv_sec = delay.count() / 1000;
  spec->tv_nsec = (delay.count() % 1000) * 1'000'000;
  uint64_t id = remember(std::move(cb));
  io_uring_sqe* s = sqe();
  io_uring_prep_timeout(s, spec.get(), 0, 0);
  io_uring_sqe_set_data64(s, id);
  timer_specs_.emplace(id, std::move(spec));
  return id;
}

void EventLoop::cancel_timer(uint64_t id) {
  if (!pending_.count(id)) return;
  io_uring_sqe* s = sqe();
  io_uring_prep_timeout_remove(s, id, 0);
  io_uring_sqe_set_data64(s, kIgnoreTag);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!::write(wakeup_.get(), &one, sizeof one);
}

void EventLoop::stop() {
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wakeup_.get(), &one, sizeof one);
}

void EventLoop::arm_wakeup() {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, wakeup_.get(), &wakeup_value_, sizeof wakeup_value_, static_cast<__u64>(-1));
  io_uring_sqe_set_data64(s, kWakeupTag);
}

Status EventLoop::watch_signals(const std::vector<int>& signals, std::function<void(int)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : signals) sigaddset(&set, sig);
  signals_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) return sys_error("signalfd");
  signal_buf_ = std::make_unique<char[]>(sizeof(signalfd_siginfo));
  on_signal_ = std::move(on_signal);
  arm_signals();
  return {};
}

void EventLoop::arm_signals() {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, signals_.get(), signal_buf_.get(), sizeof(signalfd_siginfo), static_cast<__u64>(-1));
  io_uring_sqe_set_data64(s, kSignalTag);
}

Status EventLoop::run() {
  while (!stopping_) {
    io_uring_submit(&ring_);
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) return Error{"event loop wait", -rc, {}};
    // Drain everything that is ready before submitting again.
    unsigned head;
    unsigned seen = 0;
    std::vector<std::pair<uint64_t, int>> ready;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ready.emplace_back(io_uring_cqe_get_data64(cqe), cqe->res);
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    for (auto [tag, res] : ready) {
      if (tag == kIgnoreTag) continue;
      if (tag == kWakeupTag) {
        std::deque<std::function<void()>> work;
        {
          std::lock_guard<std::mutex> lock(posted_mu_);
          work.swap(posted_);
        }
        for (auto& fn : work) fn();
        if (!stopping_) arm_wakeup();
        continue;
      }
      if (tag == kSignalTag) {
        if (res == static_cast<int>(sizeof(signalfd_siginfo))) {
          auto* info = reinterpret_cast<signalfd_siginfo*>(signal_buf_.get());
          if (on_signal_) on_signal_(static_cast<int>(info->ssi_signo));
        }
        if (!stopping_) arm_signals();
        continue;
      }
      auto it = pending_.find(tag);
      if (it == pending_.end()) continue;
      Callback cb = std::move(it->second);
      pending_.erase(it);
      timer_specs_.erase(tag);
      // A timer that simply expired reports -ETIME; callers want 0.
      if (res == -ETIME) res = 0;
      cb(res);
    }
  }
  return {};
}

}  // namespace stoke::agent
