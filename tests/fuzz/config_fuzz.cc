// libFuzzer target for the agent's config parser (text-format protobuf,
// read as root from /etc/stoke/stoked.conf): parse, then validate.
//
// Checked, beyond "no crash, no sanitizer report": a config that parses and
// validates prints back to text that parses and validates to the same config.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>

#include "agent/config.h"

#define FUZZ_CHECK(condition) \
  do {                        \
    if (!(condition)) __builtin_trap(); \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = stoke::agent::parse_config(text, "fuzz.conf");
  if (!cfg.ok()) {
    FUZZ_CHECK(!cfg.error().message().empty());
    return 0;
  }
  if (!stoke::agent::validate_config(cfg.value()).ok()) return 0;
  std::string printed;
  FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(cfg.value(), &printed));
  auto again = stoke::agent::parse_config(printed, "printed.conf");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(stoke::agent::validate_config(again.value()).ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(cfg.value(), again.value()));
  return 0;
}
