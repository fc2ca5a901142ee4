// A forked child that joins a cgroup and then does work in two phases on the
// test's signal: for tests that read a group's counters between the phases.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace stoke::test {

class TwoPhaseCgroupChild {
 public:
  // The child writes itself to each attach fd, then: touches `first_bytes`
  // of fresh memory and gives it back, and burns `first_cpu_ns` of CPU; says
  // so and waits; on go() burns `second_cpu_ns`, says so and sleeps until killed.
  TwoPhaseCgroupChild(const std::vector<int>& attach_fds, size_t first_bytes, uint64_t first_cpu_ns,
                      uint64_t second_cpu_ns);
  ~TwoPhaseCgroupChild();  // SIGKILLs and reaps it
  pid_t pid() const { return pid_; }
  bool wait_first_phase();   // false: the child died
  bool run_second_phase();   // false: the child died

 private:
  pid_t pid_ = -1;
  int done_fd_ = -1;  // the child's "phase done" bytes
  int go_fd_ = -1;    // the test's "go"
};

}  // namespace stoke::test
