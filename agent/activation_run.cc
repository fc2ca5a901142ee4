#include "agent/activation_run.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "agent/json_limits.h"

namespace stoke::agent {
namespace {

// The message may quote the runtime's bytes, which need not be UTF-8: those
// are replaced (a strict dump would throw on the loop thread).
std::string error_json(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

ActivationOutcome classify_result(const std::string& line) {
  ActivationOutcome o;
  o.replied = true;
  // Bounded: the result is the tenant's text, and the dump() below (like any
  // copy of the value) recurses once per nesting level.
  auto parsed = parse_json_bounded(line);
  if (!parsed.ok()) {
    o.status = v1::DEVELOPER_ERROR;
    o.result_json = parsed.error().step == "not JSON"
                        ? error_json("the runtime replied with something that is not JSON: " + line.substr(0, 200))
                        : error_json("the result is not acceptable: " + parsed.error().message());
    return o;
  }
  nlohmann::json& j = parsed.value();
  if (!j.is_object()) {
    o.status = v1::DEVELOPER_ERROR;
    o.result_json = error_json(std::string("the result must be a JSON object, not ") + j.type_name());
    return o;
  }
  o.status = j.contains("error") ? v1::APPLICATION_ERROR : v1::SUCCESS;
  auto marker = j.find("__stoke");
  if (marker == j.end()) {
    // Kept as the instance sent it (less surrounding whitespace), never
    // re-encoded: it is a valid JSON object, its numbers stay exactly as
    // written (1E15 or a 30-digit integer would come back as a float), and
    // it is no bigger than the line, which the reader already capped.
    const size_t first = line.find_first_not_of(" \t\r\n");
    const size_t last = line.find_last_not_of(" \t\r\n");
    o.result_json = line.substr(first, last - first + 1);
    return o;
  }
  // A language runtime marks the failures that are the code's, not the
  // function's answer (failed import, a non-dict return): developer_error.
  if (marker->is_object() && marker->value("status", "") == "developer_error") o.status = v1::DEVELOPER_ERROR;
  j.erase(marker);
  o.result_json = j.dump();
  // Re-encoding can grow a crafted result (each 1E15 becomes
  // 1000000000000000.0): past the line's own size it is refused, so no
  // stored result exceeds what the reader's cap let in.
  if (o.result_json.size() > line.size()) {
    o.status = v1::DEVELOPER_ERROR;
    o.result_json = error_json("the result is not acceptable: without the runtime's marker it re-encodes to " +
                               std::to_string(o.result_json.size()) + " bytes, more than the " +
                               std::to_string(line.size()) + " sent");
  }
  return o;
}

void append_log_bytes(std::string_view bytes, const ActivationLimits& limits, std::string& partial,
                      std::vector<std::string>& lines, size_t& total_bytes, bool& truncated) {
  for (char c : bytes) {
    if (truncated) return;
    if (c == '\n') {
      // The runtime's end-of-activation marker is protocol, not a log line.
      if (partial == kEndOfActivation) {
        partial.clear();
        continue;
      }
      if (lines.size() >= limits.max_log_lines) {
        truncated = true;
        return;
      }
      lines.push_back(std::move(partial));
      partial.clear();
      continue;
    }
    if (total_bytes >= limits.max_log_bytes) {
      truncated = true;
      return;
    }
    partial.push_back(c);
    ++total_bytes;
  }
}

char* ActivationRun::sync_read_buffer() {
  thread_local std::unique_ptr<char[]> buffer = std::make_unique_for_overwrite<char[]>(kChunk);
  return buffer.get();
}

std::shared_ptr<ActivationRun> ActivationRun::start(EventLoop& loop, Instance& instance, std::string request_line,
                                                    ActivationLimits limits, Done done, bool first_line_is_ready) {
  std::shared_ptr<ActivationRun> run(new ActivationRun(loop, instance, limits, std::move(done)));
  run->request_ = std::move(request_line);
  run->awaiting_ready_ = first_line_is_ready;
  instance.state = Instance::State::kBusy;
  auto self = run;
  run->timer_ = loop.timer(limits.timeout, [self](int res) {
    if (res == -ECANCELED || self->finished_) return;
    self->finish(self->failure(v1::TIMEOUT, "timed out after " + std::to_string(self->limits_.timeout.count()) + " ms"));
  });
  run->exit_op_ = loop.poll(instance.sandbox().pidfd(), POLLIN, [self](int) {
    self->exit_op_ = 0;
    self->on_exit();
  });
  run->read_logs();
  run->read_result();
  run->write_request(0);
  return run;
}

void ActivationRun::write_request(size_t offset) {
  if (finished_ || offset >= request_.size()) return;
  auto self = shared_from_this();
  write_op_ = loop_.write(instance_.request_fd(), request_.data() + offset, request_.size() - offset, [self, offset](int res) {
    self->write_op_ = 0;
    if (self->finished_) return;
    if (res < 0) {
      // EPIPE: the runtime is gone (its exit is reported by on_exit).
      if (res != -EPIPE) self->finish(self->failure(v1::INTERNAL_ERROR, "writing the request failed"));
      return;
    }
    self->write_request(offset + static_cast<size_t>(res));
  });
}

void ActivationRun::read_result() {
  auto self = shared_from_this();
  result_op_ = loop_.read(instance_.result_fd(), result_buf_.get(), kChunk, [self](int res) {
    self->result_op_ = 0;
    if (self->finished_) return;
    if (res <= 0 && self->awaiting_ready_) {
      self->drain_logs_now();
      ActivationOutcome o = self->failure(v1::INTERNAL_ERROR, "the restored runtime never started");
      o.never_started = true;
      self->finish(std::move(o));
      return;
    }
    if (res <= 0) {
      // fd 3 closed without a full line: the runtime exited or closed it.
      self->drain_logs_now();
      self->finish(self->failure(v1::DEVELOPER_ERROR, self->result_.empty()
                                                          ? "the runtime exited (or closed fd 3) without replying"
                                                          : "the runtime's reply was not terminated by a newline"));
      return;
    }
    self->result_.append(self->result_buf_.get(), static_cast<size_t>(res));
    if (self->awaiting_ready_ && self->result_.find('\n') != std::string::npos && !self->take_ready_line()) {
      self->finish(self->failure(v1::INTERNAL_ERROR, "the restored runtime's first line was not its ready line"));
      return;
    }
    size_t nl = self->awaiting_ready_ ? std::string::npos : self->result_.find('\n');
    if (nl != std::string::npos) {
      std::string line = self->result_.substr(0, nl);
      if (line.size() > self->limits_.max_result_bytes) {
        self->finish(self->failure(v1::DEVELOPER_ERROR, "the result is larger than " +
                                                            std::to_string(self->limits_.max_result_bytes) + " bytes"));
        return;
      }
      self->drain_logs_now();
      ActivationOutcome o = classify_result(line);
      o.logs = std::move(self->logs_);
      o.logs_truncated = self->logs_truncated_;
      self->finish(std::move(o));
      return;
    }
    if (self->result_.size() > self->limits_.max_result_bytes) {
      self->finish(self->failure(v1::DEVELOPER_ERROR,
                                 "the result is larger than " + std::to_string(self->limits_.max_result_bytes) + " bytes"));
      return;
    }
    self->read_result();
  });
}

void ActivationRun::read_logs() {
  // Readiness, then a read on this thread: an asynchronous read in flight
  // takes the bytes out of the pipe when it completes, which can be after the
  // result arrived (in the v2 VM a warm activation's logs went missing that
  // way); the drain at the result would then find the pipe empty and the
  // bytes would land nowhere.
  auto self = shared_from_this();
  log_op_ = loop_.poll(instance_.log_fd(), POLLIN, [self](int res) {
    self->log_op_ = 0;
    if (self->finished_ || res < 0) return;
    // At most one chunk per loop turn: a flood waits for the next turn.
    ssize_t n;
    do n = ::read(self->instance_.log_fd(), sync_read_buffer(), kChunk);
    while (n < 0 && errno == EINTR);
    if (n == 0) return;  // every writer is gone
    if (n < 0 && errno != EAGAIN) return;
    if (n > 0) self->take_log_bytes(sync_read_buffer(), static_cast<size_t>(n));
    // Past the budget the pipe is left full: the function's own writes block
    // (its deadline still runs), and the agent stops copying its output.
    if (!self->stopped_reading_logs_) self->read_logs();
  });
}

void ActivationRun::take_log_bytes(const char* bytes, size_t n) {
  append_log_bytes(std::string_view(bytes, n), limits_, log_partial_, logs_, log_bytes_, logs_truncated_);
  log_bytes_read_ += n;
  if (log_bytes_read_ >= limits_.max_log_bytes_read) {
    logs_truncated_ = true;
    stopped_reading_logs_ = true;
  }
}

void ActivationRun::drain_logs_now() {
  // What the runtime printed just before replying may still sit in the pipe.
  // Bounded: a function can keep the pipe full (a big pipe, vmsplice) so that
  // a read-until-empty loop never returns, and this runs on the loop thread
  // that serves every other tenant and fires every deadline.
  size_t read_now = 0;
  while (!stopped_reading_logs_) {
    if (read_now >= kDrainBudget) {
      // Still not empty after this much: a flood, not a last few lines.
      logs_truncated_ = true;
      return;
    }
    ssize_t n = ::read(instance_.log_fd(), sync_read_buffer(), kChunk);
    if (n <= 0) return;
    read_now += static_cast<size_t>(n);
    take_log_bytes(sync_read_buffer(), static_cast<size_t>(n));
  }
}

void ActivationRun::on_exit() {
  if (finished_) return;
  // A reply may have been written just before exiting: read what is left,
  // but no more than a result can be. In the zygote path the function zygote
  // (tenant code) may still hold the pipe's write end and keep it full.
  const size_t cap = limits_.max_result_bytes + kReadySlack + 1;
  while (result_.size() < cap) {
    ssize_t n = ::read(instance_.result_fd(), sync_read_buffer(), std::min(kChunk, cap - result_.size()));
    if (n <= 0) break;
    result_.append(sync_read_buffer(), static_cast<size_t>(n));
  }
  drain_logs_now();
  if (awaiting_ready_ && (result_.find('\n') == std::string::npos || !take_ready_line())) {
    ActivationOutcome o = failure(v1::INTERNAL_ERROR, "the restored runtime never started");
    o.never_started = true;
    o.runtime_exited = true;
    finish(std::move(o));
    return;
  }
  size_t nl = result_.find('\n');
  if (nl != std::string::npos && nl <= limits_.max_result_bytes) {
    ActivationOutcome o = classify_result(result_.substr(0, nl));
    o.logs = std::move(logs_);
    o.logs_truncated = logs_truncated_;
    o.runtime_exited = true;
    finish(std::move(o));
    return;
  }
  ActivationOutcome o = failure(v1::DEVELOPER_ERROR, result_.size() > limits_.max_result_bytes
                                                         ? "the result is larger than " +
                                                               std::to_string(limits_.max_result_bytes) + " bytes"
                                                         : std::string("the runtime exited without replying"));
  o.runtime_exited = true;
  finish(std::move(o));
}

bool ActivationRun::take_ready_line() {
  size_t nl = result_.find('\n');
  if (result_.rfind("{\"ready\": true", 0) != 0) return false;
  result_.erase(0, nl + 1);
  awaiting_ready_ = false;
  ready_at_ = std::chrono::steady_clock::now();
  return true;
}

ActivationOutcome ActivationRun::failure(v1::ActivationStatus status, const std::string& message) {
  ActivationOutcome o;
  o.status = status;
  o.result_json = error_json(message);
  o.logs = std::move(logs_);
  o.logs_truncated = logs_truncated_;
  return o;
}

void ActivationRun::finish(ActivationOutcome outcome) {
  outcome.ready_at = ready_at_;
  if (finished_) return;
  finished_ = true;
  if (!log_partial_.empty() && outcome.logs.size() < limits_.max_log_lines) outcome.logs.push_back(log_partial_);
  loop_.cancel_timer(timer_);
  for (uint64_t op : {write_op_, result_op_, log_op_, exit_op_})
    if (op != 0) loop_.cancel(op);
  Done done = std::move(done_);
  done(std::move(outcome));
}

}  // namespace stoke::agent
