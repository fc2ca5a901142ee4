#include "sandbox/base/parse.h"

#include <charconv>
#include <cmath>
#include <string>

namespace stoke {
namespace {

// 'text' for messages. (Built by append: GCC 12 warns falsely, -Wrestrict,
// on "literal" + std::string chains.)
std::string quoted(std::string_view text) {
  std::string s;
  s.reserve(text.size() + 2);
  s.push_back('\'');
  s.append(text);
  s.push_back('\'');
  return s;
}

// Leading decimal number (digits with one optional '.'), rest returned in `suffix`.
bool split_number(std::string_view text, double& value, std::string_view& suffix) {
  size_t i = 0;
  bool digits = false, dot = false;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c >= '0' && c <= '9') {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (!digits) return false;
  value = std::stod(std::string(text.substr(0, i)));
  suffix = text.substr(i);
  return true;
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text) {
  double v;
  std::string_view suf;
  if (!split_number(text, v, suf)) return plain_error("parse size", quoted(text) + " is not a size (e.g. 64M, 1G)");
  double mult = 1;
  std::string s(suf);
  if (!s.empty() && (s.back() == 'B' || s.back() == 'b')) s.pop_back();
  if (s.size() == 2 && (s[1] == 'i')) s.pop_back();
  if (s.empty()) mult = 1;
  else if (s == "K" || s == "k") mult = 1024.0;
  else if (s == "M" || s == "m") mult = 1024.0 * 1024;
  else if (s == "G" || s == "g") mult = 1024.0 * 1024 * 1024;
  else if (s == "T" || s == "t") mult = 1024.0 * 1024 * 1024 * 1024;
  else return plain_error("parse size", "unknown unit in " + quoted(text) + " (use K, M, G or T)");
  double bytes = v * mult;
  if (bytes >= 18446744073709551615.0) return plain_error("parse size", quoted(text) + " is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  double v;
  std::string_view suf;
  if (!split_number(text, v, suf))
    return plain_error("parse duration", quoted(text) + " is not a duration (e.g. 500ms, 2s, 1m)");
  double ms;
  if (suf.empty() || suf == "s") ms = v * 1000;
  else if (suf == "ms") ms = v;
  else if (suf == "m" || suf == "min") ms = v * 60'000;
  else if (suf == "h") ms = v * 3'600'000;
  else return plain_error("parse duration", "unknown unit in " + quoted(text) + " (use ms, s, m or h)");
  if (ms > 365.0 * 24 * 3'600'000) return plain_error("parse duration", quoted(text) + " is too long");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

Result<double> parse_cpus(std::string_view text) {
  double v;
  std::string_view suf;
  if (!split_number(text, v, suf) || !suf.empty())
    return plain_error("parse cpus", quoted(text) + " is not a CPU count (e.g. 0.5, 2)");
  if (v <= 0 || v > 1024) return plain_error("parse cpus", quoted(text) + " must be > 0 and <= 1024");
  return v;
}

Result<uint64_t> parse_count(std::string_view text) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty())
    return plain_error("parse number", quoted(text) + " is not a whole number");
  return v;
}

}  // namespace stoke
