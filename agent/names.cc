#include "agent/names.h"

#include <string>

namespace stoke::agent {

Status check_function_name(std::string_view name) {
  auto bad = [&](std::string why) { return plain_error("function name", std::move(why)); };
  if (name.empty()) return bad("must not be empty");
  if (name.size() > 128) return bad("is " + std::to_string(name.size()) + " characters long; at most 128 are allowed");
  auto word = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; };
  if (!word(name[0])) return bad("must start with a letter, digit or '_'");
  for (size_t i = 1; i < name.size(); ++i) {
    char c = name[i];
    if (!word(c) && c != '.' && c != '-')
      return bad("has a character that is not allowed at position " + std::to_string(i + 1) +
                 " (use letters, digits, '_', '.', '-')");
  }
  return {};
}

}  // namespace stoke::agent
