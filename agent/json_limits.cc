#include "agent/json_limits.h"

namespace stoke::agent {
namespace {

Error too_deep(size_t max_depth) {
  return plain_error("JSON nested too deeply",
                     "more than " + std::to_string(max_depth) + " levels of arrays and objects (the limit is " +
                         std::to_string(max_depth) + ")");
}

}  // namespace

size_t json_nesting_depth(std::string_view text, size_t max_depth) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > max_depth) return max_depth + 1;
        }
        break;
      case ']':
      case '}':
        // Unbalanced closers make the text invalid; the parser says so.
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

Result<nlohmann::json> parse_json_bounded(std::string_view text, size_t max_depth) {
  if (json_nesting_depth(text, max_depth) > max_depth) return too_deep(max_depth);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return plain_error("not JSON", e.what());
  }
}

Status validate_json_object_bounded(std::string_view text, size_t max_depth) {
  if (json_nesting_depth(text, max_depth) > max_depth) return too_deep(max_depth);
  // accept() runs the parser with a SAX handler that builds nothing.
  if (!nlohmann::json::accept(text)) {
    // Parse only to get the parser's message (position, token); the depth is
    // already bounded, so the partial value it builds is harmless.
    try {
      nlohmann::json ignored = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      return plain_error("not JSON", e.what());
    }
    return plain_error("not JSON");
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') return plain_error("not a JSON object");
  return {};
}

Status validate_annotations(std::string_view text) {
  auto parsed = parse_json_bounded(text);
  if (!parsed.ok()) return plain_error("annotations", parsed.error().message());
  if (!parsed->is_array()) return plain_error("annotations", "must be a JSON array of {\"key\", \"value\"}");
  for (const auto& a : *parsed)
    if (!a.is_object() || !a.contains("key") || !a["key"].is_string() || !a.contains("value"))
      return plain_error("annotations", "each must be an object with a string \"key\" and a \"value\"");
  return {};
}

std::string with_defaults(std::string_view defaults, std::string_view overrides) {
  auto d = parse_json_bounded(defaults);
  auto o = parse_json_bounded(overrides);
  if (!d.ok() || !d->is_object()) return std::string(overrides);
  if (o.ok() && o->is_object())
    for (auto& [k, v] : o->items()) (*d)[k] = v;
  return d->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string json_on_one_line(std::string_view valid_json) {
  std::string out(valid_json);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace stoke::agent
