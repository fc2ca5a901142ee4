#include "tests/util/cgroup_child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace stoke::test {
namespace {

uint64_t process_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void burn(uint64_t ns) {
  uint64_t start = process_cpu_ns();
  volatile uint64_t x = 0;
  while (process_cpu_ns() - start < ns) x = x + 1;
}

bool read_byte(int fd) {
  char c;
  ssize_t n;
  do n = ::read(fd, &c, 1);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

}  // namespace

TwoPhaseCgroupChild::TwoPhaseCgroupChild(const std::vector<int>& attach_fds, size_t first_bytes,
                                         uint64_t first_cpu_ns, uint64_t second_cpu_ns) {
  int done[2], go[2];
  if (::pipe2(done, O_CLOEXEC) != 0) return;
  if (::pipe2(go, O_CLOEXEC) != 0) {
    ::close(done[0]);
    ::close(done[1]);
    return;
  }
  pid_ = ::fork();
  if (pid_ == 0) {
    ::close(done[0]);
    ::close(go[1]);
    const char self[] = "0";  // "0": the writing process itself
    for (int fd : attach_fds)
      if (::write(fd, self, 1) != 1) ::_exit(92);
    if (first_bytes > 0) {
      void* p = ::mmap(nullptr, first_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) ::_exit(90);
      for (size_t off = 0; off < first_bytes; off += 4096) static_cast<volatile char*>(p)[off] = 1;
      ::munmap(p, first_bytes);
    }
    burn(first_cpu_ns);
    if (::write(done[1], "1", 1) != 1) ::_exit(91);
    if (!read_byte(go[0])) ::_exit(0);
    burn(second_cpu_ns);
    if (::write(done[1], "2", 1) != 1) ::_exit(91);
    for (;;) ::pause();
  }
  ::close(done[1]);
  ::close(go[0]);
  done_fd_ = done[0];
  go_fd_ = go[1];
}

TwoPhaseCgroupChild::~TwoPhaseCgroupChild() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (done_fd_ >= 0) ::close(done_fd_);
  if (go_fd_ >= 0) ::close(go_fd_);
}

bool TwoPhaseCgroupChild::wait_first_phase() { return pid_ > 0 && read_byte(done_fd_); }

bool TwoPhaseCgroupChild::run_second_phase() {
  return pid_ > 0 && ::write(go_fd_, "g", 1) == 1 && read_byte(done_fd_);
}

}  // namespace stoke::test
