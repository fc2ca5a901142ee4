// libFuzzer target for what an instance sends back: the result line on fd 3
// (classify_result) and its log bytes (append_log_bytes). Both come from
// tenant code and are handled by the root agent.
//
// Input: byte 0 picks the log chunking; the rest is used twice, as a result
// line and as log bytes.
//
// Checked, beyond "no crash, no sanitizer report":
//  - every outcome is a reply with a result that is a JSON object, of bounded
//    size (the agent never stores what it cannot parse back);
//  - log capture keeps its limits, and chunked capture equals one-shot capture.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/activation_run.h"

#define FUZZ_CHECK(condition) \
  do {                        \
    if (!(condition)) __builtin_trap(); \
  } while (0)

namespace {

using stoke::agent::ActivationLimits;

struct Captured {
  std::string partial;
  std::vector<std::string> lines;
  size_t total = 0;
  bool truncated = false;
};

Captured capture(std::string_view bytes, const ActivationLimits& limits, uint8_t control) {
  Captured c;
  uint32_t state = 0x2545f491u ^ control;
  while (!bytes.empty()) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    size_t n = control == 0 ? bytes.size() : std::min<size_t>(bytes.size(), state % 64);
    stoke::agent::append_log_bytes(bytes.substr(0, n), limits, c.partial, c.lines, c.total, c.truncated);
    bytes.remove_prefix(n);
  }
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t control = data[0];
  std::string body(reinterpret_cast<const char*>(data + 1), size - 1);

  auto outcome = stoke::agent::classify_result(body);
  FUZZ_CHECK(outcome.replied);
  // The stored result must parse as an object (depth-limited parse: the
  // classifier must not produce what the agent cannot read back safely).
  auto parsed = nlohmann::json::parse(outcome.result_json, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(!parsed.is_discarded() && parsed.is_object());
  // Never larger than what was sent, or than an error quoting 200 bytes of it
  // (each escaped to at most 6: \u0015).
  FUZZ_CHECK(outcome.result_json.size() <= std::max<size_t>(body.size(), 2048));

  ActivationLimits limits;
  limits.max_log_bytes = 256;
  limits.max_log_lines = 8;
  Captured one = capture(body, limits, 0);
  Captured chunked = capture(body, limits, control | 1);
  FUZZ_CHECK(one.lines == chunked.lines && one.partial == chunked.partial && one.total == chunked.total &&
             one.truncated == chunked.truncated);
  FUZZ_CHECK(one.total <= limits.max_log_bytes);
  FUZZ_CHECK(one.lines.size() <= limits.max_log_lines);
  return 0;
}
