// Result<T>: a value or an Error that names the step that failed and its errno.
//
// Exceptions are used only at the edges (argument parsing, JSON); everything in
// sandbox/ returns Result so a failure can travel to the user as one sentence:
//   "sandbox setup failed at 'pivot_root': Operation not permitted (errno 1)".
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace stoke {

// What kind of failure it is, where a caller decides on it rather than only
// printing it: the words of an Error are for people, its cause is for code
// (so no caller matches strings). Survives context().
enum class ErrorCause : uint8_t {
  kUnspecified,
  kExec,           // the program to run could not be executed (missing, not executable, bad format)
  kPeerRefused,    // a helper process answered with a refusal (a zygote whose code failed to load)
  kPeerUntrusted,  // a helper process's answer failed the caller's verification (a forged fork)
  // The registry's and code store's kinds (agent/registry.h ErrorKind):
  kNotFound,
  kAlreadyExists,
  kInvalid,        // the caller's input is wrong
  kNotEmpty,       // it still holds something
};

struct Error {
  std::string step;     // what was being done, e.g. "mkdir /sys/fs/cgroup/pids/stoke"
  int err = 0;          // errno, 0 when the failure is not a system call's
  std::string detail;   // optional extra words (already human readable)
  ErrorCause cause = ErrorCause::kUnspecified;

  // One clear sentence for the user.
  std::string message() const {
    std::string m = step;
    if (!detail.empty()) m += ": " + detail;
    if (err != 0) m += ": " + std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
    return m;
  }
  // Prefix more context, keeping errno: "spawn: " + "mkdir ...".
  Error context(const std::string& outer) const { return Error{outer + ": " + step, err, detail, cause}; }
};

// errno-carrying error for the last failed libc call.
inline Error sys_error(std::string step, int e = errno) { return Error{std::move(step), e, {}}; }
inline Error plain_error(std::string step, std::string detail = {}) {
  return Error{std::move(step), 0, std::move(detail)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}       // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace stoke

// Propagate an error from an expression returning Result<...>.
#define STOKE_TRY(expr)                          \
  do {                                           \
    auto stoke_try_r_ = (expr);                  \
    if (!stoke_try_r_.ok()) return stoke_try_r_.error(); \
  } while (0)
