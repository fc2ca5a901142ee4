// One activation's conversation with its instance, on the event loop: write
// the request line, read one result line from fd 3, collect logs, and watch
// for the deadline and for the runtime dying. Ends exactly once with an
// ActivationOutcome; the instance is then killed and accounted by the caller.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/event_loop.h"
#include "agent/instance.h"
#include "proto/stoke/v1/api.pb.h"

namespace stoke::agent {

// What language runtimes print on stdout and stderr after an activation's logs
// (OpenWhisk's marker): everything before it belongs to that activation.
inline constexpr const char* kEndOfActivation = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

struct ActivationLimits {
  std::chrono::milliseconds timeout{60000};
  size_t max_result_bytes = 1u << 20;
  size_t max_log_bytes = 64u << 10;
  size_t max_log_lines = 1000;
  // Log output read (and, past the limits above, thrown away) in one
  // activation before the agent stops reading the pipe at all; then the
  // function's own writes block until its deadline.
  size_t max_log_bytes_read = 32u << 20;
};

struct ActivationOutcome {
  v1::ActivationStatus status = v1::INTERNAL_ERROR;
  std::string result_json;  // the runtime's result, or {"error": "..."}
  std::vector<std::string> logs;
  bool logs_truncated = false;
  bool runtime_exited = false;  // pid 1 of the sandbox exited on its own
  bool replied = false;         // a result line came (before or despite the exit)
  bool never_started = false;   // a restored runtime died before saying it was ready
  std::chrono::steady_clock::time_point ready_at{};  // when a restored runtime said it was ready
};

// Classifies a runtime's result line (without the newline): a JSON object is
// success, or application_error when it has an "error" member; anything else
// is the developer's error. A result is kept as sent (not re-encoded), so it
// is never larger than the line. Pure; unit-tested.
ActivationOutcome classify_result(const std::string& line);

// Splits log bytes into lines within the limits (pure; unit-tested). `partial`
// carries an unterminated last line between calls.
void append_log_bytes(std::string_view bytes, const ActivationLimits& limits, std::string& partial,
                      std::vector<std::string>& lines, size_t& total_bytes, bool& truncated);

class ActivationRun : public std::enable_shared_from_this<ActivationRun> {
 public:
  using Done = std::function<void(ActivationOutcome)>;
  // first_line_is_ready: the instance is being restored and first says
  // {"ready": true, ...} on fd 3; the request is written at once (the pipe
  // holds it until the runtime reads), and that line is skipped.
  static std::shared_ptr<ActivationRun> start(EventLoop& loop, Instance& instance, std::string request_line,
                                              ActivationLimits limits, Done done, bool first_line_is_ready = false);
  // Ends the activation now with this status (e.g. the agent is stopping).
  void cancel(v1::ActivationStatus status, const std::string& message) { finish(failure(status, message)); }

 private:
  ActivationRun(EventLoop& loop, Instance& instance, ActivationLimits limits, Done done)
      : loop_(loop), instance_(instance), limits_(limits), done_(std::move(done)) {}
  void write_request(size_t offset);
  void read_result();
  void read_logs();
  void on_exit();
  void drain_logs_now();
  void take_log_bytes(const char* bytes, size_t n);
  void finish(ActivationOutcome outcome);
  ActivationOutcome failure(v1::ActivationStatus status, const std::string& message);

  EventLoop& loop_;
  Instance& instance_;
  ActivationLimits limits_;
  Done done_;
  std::string request_;
  std::string result_;
  std::string log_partial_;
  std::vector<std::string> logs_;
  size_t log_bytes_ = 0;
  bool logs_truncated_ = false;
  size_t log_bytes_read_ = 0;
  bool stopped_reading_logs_ = false;
  bool finished_ = false;
  bool awaiting_ready_ = false;
  std::chrono::steady_clock::time_point ready_at_{};
  // Consumes the ready line from result_ once complete; false if it is not one.
  bool take_ready_line();
  uint64_t timer_ = 0;
  // Operations in flight on the instance's fds: cancelled when the activation
  // ends, so none is left to swallow the next activation's bytes when the
  // instance is reused.
  uint64_t write_op_ = 0, result_op_ = 0, log_op_ = 0, exit_op_ = 0;
  static constexpr size_t kChunk = 64 * 1024;
  // The asynchronous read of fd 3 owns this one (not zeroed: the kernel fills it).
  std::unique_ptr<char[]> result_buf_ = std::make_unique_for_overwrite<char[]>(kChunk);
  // For the synchronous reads (logs, drains), which end before they return
  // to the loop: one buffer of the loop thread's, not two per activation.
  static char* sync_read_buffer();
  // Most log bytes one synchronous drain reads before it returns to the loop.
  static constexpr size_t kDrainBudget = 1u << 20;
  // A restored runtime's ready line ahead of the result (it is short).
  static constexpr size_t kReadySlack = 4096;
};

}  // namespace stoke::agent
