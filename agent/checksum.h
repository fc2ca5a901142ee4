// FNV-1a (64-bit) over a byte range: the checksum of the agent's own crash
// files (running journal slots, activation log records). It detects a write
// torn by a crash or bytes that are not ours, not an attacker: both files are
// root's alone (0600 in a 0700 state dir).
#pragma once

#include <cstddef>
#include <cstdint>

namespace stoke::agent {

inline uint64_t fnv1a64(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace stoke::agent
