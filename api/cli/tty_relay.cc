#include "api/cli/tty_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace stoke::cli {
namespace {

// Writes all of `len` bytes; false when the reader is gone (or another error).
bool write_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<TtyRelay>> TtyRelay::create(std::vector<FdMapping>& fds) {
  std::unique_ptr<TtyRelay> relay(new TtyRelay());
  for (FdMapping& m : fds) {
    if (!::isatty(m.source)) continue;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return sys_error("pipe for the sandbox's fd " + std::to_string(m.target));
    auto c = std::make_unique<Copy>();
    // The target decides the direction: the sandbox reads its stdin and writes
    // the rest, whatever mode the caller's terminal fd was opened with.
    c->input = m.target == 0;
    if (c->input) {
      c->from = m.source;
      c->child_end.reset(p[0]);
      c->pipe_end.reset(p[1]);
      c->to = p[1];
    } else {
      c->child_end.reset(p[1]);
      c->pipe_end.reset(p[0]);
      c->from = p[0];
      c->to = m.source;
    }
    m.source = c->child_end.get();
    relay->copies_.push_back(std::move(c));
  }
  relay->stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!relay->stop_) return sys_error("eventfd for the terminal relay");
  return relay;
}

TtyRelay::~TtyRelay() { finish(); }

void TtyRelay::start() {
  // A sandbox that exits without reading its stdin must not kill us with
  // SIGPIPE on the next copied line.
  if (!copies_.empty()) ::signal(SIGPIPE, SIG_IGN);
  for (auto& c : copies_) {
    c->child_end.reset();
    threads_.emplace_back([this, copy = c.get()] { run(*copy); });
  }
}

void TtyRelay::finish() {
  if (finished_) return;
  finished_ = true;
  uint64_t one = 1;
  if (stop_) (void)!::write(stop_.get(), &one, sizeof one);
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void TtyRelay::run(Copy& c) {
  char buf[16384];
  for (;;) {
    if (c.input) {
      // Read the terminal only while the sandbox lives: after it, keystrokes
      // are the shell's.
      pollfd p[2] = {{c.from, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      int n = ::poll(p, 2, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || p[1].revents != 0) break;
    }
    ssize_t n = ::read(c.from, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the terminal's ^D, or every sandbox writer gone
    if (!write_all(c.to, buf, static_cast<size_t>(n))) break;
  }
  // The sandbox sees EOF on its stdin once the copy ends.
  if (c.input) c.pipe_end.reset();
}

}  // namespace stoke::cli
