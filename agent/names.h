// Names users give to functions: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
#pragma once

#include <string_view>

#include "sandbox/base/result.h"

namespace stoke::agent {

// OK, or an error saying what is wrong with the name (quoted, length, first bad char).
Status check_function_name(std::string_view name);

}  // namespace stoke::agent
