// Bounded JSON input: tenant code (function results, zygote answers) and API
// clients (invoke params) hand the agent JSON text. nlohmann parses
// iteratively, but copying a value and dump() recurse once per nesting level,
// so 500k levels of `[` in a 1 MiB result overflow the agent's stack. Every
// untrusted JSON text goes through here first; deeper input is refused before
// any DOM exists.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sandbox/base/result.h"

namespace stoke::agent {

// Deep enough for any real payload; shallow enough that recursive copy, dump
// and compare of a value stay a few KiB of stack.
inline constexpr size_t kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text`, counted in one pass
// without recursion (brackets inside strings, escaped quotes included, do not
// count). Stops counting and returns max_depth + 1 as soon as that is passed.
// Says nothing about whether `text` is valid JSON.
size_t json_nesting_depth(std::string_view text, size_t max_depth);

// Parses `text` as JSON if it nests at most max_depth levels; otherwise an
// error that names the limit. Syntax errors come back as errors, not
// exceptions.
Result<nlohmann::json> parse_json_bounded(std::string_view text, size_t max_depth = kMaxJsonDepth);

// Checks that `text` is one JSON object nesting at most max_depth levels,
// without building it (for text the agent forwards as is).
Status validate_json_object_bounded(std::string_view text, size_t max_depth = kMaxJsonDepth);

// Valid JSON with its line breaks (which can only be whitespace between
// tokens: inside strings they must be escaped) turned into spaces, so the
// text fits in one line of a line-delimited protocol.
std::string json_on_one_line(std::string_view valid_json);

// Checks OpenWhisk-style annotations: a JSON array (bounded depth) of objects
// each with a string "key" and a "value".
Status validate_annotations(std::string_view text);

// The JSON object `overrides` laid over the JSON object `defaults` (both
// valid, as checked above): top-level keys of overrides win. One line.
std::string with_defaults(std::string_view defaults, std::string_view overrides);

// Appends `text` to `out` as a JSON string literal (quotes, backslashes and
// control characters escaped; other bytes as they are), for JSON lines built
// by hand on the hot path instead of through a value and dump().
void append_json_string(std::string& out, std::string_view text);

}  // namespace stoke::agent
