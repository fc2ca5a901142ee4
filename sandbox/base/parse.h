// Parsers for human-written sizes, durations and CPU counts ("64M", "1.5s", "0.5").
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "sandbox/base/result.h"

namespace stoke {

// "4096", "64K", "256M", "1G", "1.5G" (binary units; optional trailing "B"/"iB").
Result<uint64_t> parse_size(std::string_view text);
// "500ms", "2s", "1.5s", "3m", "1h", or a bare number of seconds.
Result<std::chrono::milliseconds> parse_duration(std::string_view text);
// "0.5", "2" (CPUs); must be > 0 and at most 1024.
Result<double> parse_cpus(std::string_view text);
// A positive integer that fits in uint64.
Result<uint64_t> parse_count(std::string_view text);

}  // namespace stoke
