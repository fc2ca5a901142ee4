// What tests need to know when built with a sanitizer (scripts/test
// --sanitize=address|thread): the instrumented agent is several times slower
// and its allocator keeps freed memory in quarantine, so latency and RSS
// bounds do not hold there (the attacks still run: memory errors are what that
// build looks for); tests that simulate a crashed owner leak on purpose.
#pragma once

#include <memory>
#include <sstream>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace stoke::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif

// Lets go of an object without destroying it, as a crashed owner would; the
// leak checker is told this one is meant.
template <class T>
void abandon(std::unique_ptr<T> p) {
  T* raw = p.release();
#if defined(__SANITIZE_ADDRESS__)
  __lsan_ignore_object(raw);
#else
  (void)raw;
#endif
}

// stderr without the sanitizer runtime's own notes (ASan warns once per
// process about clone()'s separate stack, "False positive error reports may
// follow" and a link), which no build without it prints.
inline std::string without_sanitizer_notes(const std::string& err) {
  if (!kUnderSanitizer) return err;
  std::istringstream in(err);
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.rfind("==", 0) == 0 || line.rfind("False positive error reports may follow", 0) == 0 ||
        line.rfind("For details see https://github.com/google/sanitizers", 0) == 0)
      continue;
    out += line + "\n";
  }
  return out;
}

}  // namespace stoke::test
