// Text helpers for code that may not call libc: the checkpoint writer (it runs
// in a signal handler of the process it dumps) and the freestanding restorer.
// No allocation, no locale, no errno.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace stoke::rawtext {

inline size_t length(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') ++n;
  return n;
}

inline bool equal(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) ++a, ++b;
  return *a == *b;
}

inline bool starts_with(const char* s, size_t n, const char* prefix) {
  size_t i = 0;
  for (; prefix[i] != '\0'; ++i)
    if (i >= n || s[i] != prefix[i]) return false;
  return true;
}

inline void copy_bytes(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) d[i] = s[i];
}

// A fixed buffer that a message is appended to; silently truncates.
class Line {
 public:
  Line(char* buf, size_t cap) : buf_(buf), cap_(cap) {
    if (cap_ > 0) buf_[0] = '\0';
  }
  Line& add(const char* s) { return add(s, length(s)); }
  Line& add(const char* s, size_t n) {
    for (size_t i = 0; i < n && len_ + 1 < cap_; ++i) buf_[len_++] = s[i];
    if (cap_ > 0) buf_[len_] = '\0';
    return *this;
  }
  Line& num(int64_t v) {
    if (v < 0) {
      add("-");
      return unum(static_cast<uint64_t>(-(v + 1)) + 1);
    }
    return unum(static_cast<uint64_t>(v));
  }
  Line& unum(uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) add(&tmp[--n], 1);
    return *this;
  }
  Line& hex(uint64_t v) {
    char tmp[18];
    int n = 0;
    do {
      tmp[n++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v != 0);
    add("0x");
    while (n > 0) add(&tmp[--n], 1);
    return *this;
  }
  const char* c_str() const { return buf_; }
  size_t size() const { return len_; }

 private:
  char* buf_;
  size_t cap_;
  size_t len_ = 0;
};

// Parsing from a cursor over a buffer that need not be NUL-terminated.
struct Cursor {
  const char* p;
  const char* end;

  bool done() const { return p >= end; }
  void skip_spaces() {
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
  }
  bool hex(uint64_t* out) {
    uint64_t v = 0;
    const char* start = p;
    for (; p < end; ++p) {
      char c = *p;
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (d < 0) break;
      v = v << 4 | static_cast<uint64_t>(d);
    }
    *out = v;
    return p != start;
  }
  bool dec(uint64_t* out) {
    uint64_t v = 0;
    const char* start = p;
    for (; p < end && *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<uint64_t>(*p - '0');
    *out = v;
    return p != start;
  }
  bool expect(char c) {
    if (p < end && *p == c) {
      ++p;
      return true;
    }
    return false;
  }
  // Skips to just past the next '\n' (or to the end).
  void next_line() {
    while (p < end && *p != '\n') ++p;
    if (p < end) ++p;
  }
  // The rest of the current line, without its '\n'.
  size_t rest_of_line(const char** start) const {
    const char* q = p;
    while (q < end && *q != '\n') ++q;
    *start = p;
    return static_cast<size_t>(q - p);
  }
};

}  // namespace stoke::rawtext
