#include "agent/names.h"

#include <string>

namespace stoke::agent {

namespace {

Status check_name(const char* what, std::string_view name) {
  auto bad = [&](std::string why) { return plain_error(what, std::move(why)); };
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

}  // namespace

Status check_function_name(std::string_view name) { return check_name("function name", name); }
Status check_namespace_name(std::string_view name) { return check_name("namespace name", name); }

Status check_qualified_name(std::string_view qualified) {
  size_t slash = qualified.find('/');
  if (slash == std::string_view::npos) return check_function_name(qualified);
  STOKE_TRY(check_namespace_name(qualified.substr(0, slash)));
  if (qualified.substr(0, slash) == kDefaultNamespace)
    return plain_error("function name", "the default namespace's functions are named without it");
  return check_function_name(qualified.substr(slash + 1));
}

std::string qualified_name(std::string_view ns, std::string_view name) {
  if (ns.empty() || ns == kDefaultNamespace) return std::string(name);
  std::string out;
  out.reserve(ns.size() + 1 + name.size());
  out.append(ns).append("/").append(name);
  return out;
}

std::string_view namespace_of(std::string_view qualified) {
  size_t slash = qualified.find('/');
  return slash == std::string_view::npos ? kDefaultNamespace : qualified.substr(0, slash);
}

std::string_view local_name(std::string_view qualified) {
  size_t slash = qualified.find('/');
  return slash == std::string_view::npos ? qualified : qualified.substr(slash + 1);
}

}  // namespace stoke::agent
