// Names users give to functions and namespaces: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
//
// Inside the agent a function is known by its qualified name: its own name in
// the default namespace ("guest", the one local clients act in unless they
// name another), "<namespace>/<name>" in any other. The qualified name is the
// key of everything kept per function (registry rows, pools, zygotes,
// images); only the API's edge (agent/namespace_scope.h) turns one into the
// other.
#pragma once

#include <string>
#include <string_view>

#include "sandbox/base/result.h"

namespace stoke::agent {

inline constexpr std::string_view kDefaultNamespace = "guest";

// OK, or an error saying what is wrong with the name (quoted, length, first bad char).
Status check_function_name(std::string_view name);
Status check_namespace_name(std::string_view name);
// A function name as the agent keeps it: "name" or "namespace/name", each valid.
Status check_qualified_name(std::string_view qualified);

std::string qualified_name(std::string_view ns, std::string_view name);
// The namespace and the function's own name of a qualified name.
std::string_view namespace_of(std::string_view qualified);
std::string_view local_name(std::string_view qualified);

}  // namespace stoke::agent
