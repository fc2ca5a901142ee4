// `stoke run` never hands the caller's terminal to the sandbox: each of the
// sandbox's stdin/stdout/stderr that would be a terminal becomes a pipe, and
// this process copies between the pipe and the terminal.
//
// Why pipes and not a pty: a terminal fd inside the sandbox is an ioctl
// surface on the caller's terminal (TIOCSTI input injection, termios and
// window-size changes, line disciplines) that outlives the sandbox; a pty of
// our own would still need a relay and raw mode on the caller's terminal, and
// gives the function a tty it can script. `stoke run` runs one command and
// reports its exit code; it is not an interactive shell. Programs that check
// isatty() see a pipe, as under any CI runner.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "sandbox/base/unique_fd.h"
#include "sandbox/spec.h"

namespace stoke::cli {

class TtyRelay {
 public:
  // Rewrites every mapping in `fds` whose source is a terminal to a pipe end.
  // Returns an empty relay when none is.
  static Result<std::unique_ptr<TtyRelay>> create(std::vector<FdMapping>& fds);
  ~TtyRelay();  // finish()

  // After the spawn: drop our copies of the sandbox's ends (so EOF arrives
  // when the sandbox is gone) and start copying.
  void start();
  // After the sandbox has ended: stop reading the terminal (what the user
  // types next belongs to their shell) and copy what the sandbox wrote.
  void finish();

 private:
  struct Copy {
    int from = -1;        // caller's terminal (input) or our pipe end (output)
    unique_fd pipe_end;   // ours
    unique_fd child_end;  // the sandbox's, closed at start()
    int to = -1;          // pipe end (input) or caller's terminal (output)
    bool input = false;
  };
  void run(Copy& c);

  std::vector<std::unique_ptr<Copy>> copies_;
  std::vector<std::thread> threads_;
  unique_fd stop_;  // eventfd: the input copy stops when it is readable
  bool finished_ = false;
};

}  // namespace stoke::cli
