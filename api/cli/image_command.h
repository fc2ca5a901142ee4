// `stoke image inspect PATH`: a checkpoint image's manifest as JSON.
#pragma once

#include <string>
#include <vector>

namespace stoke::cli {

// args: everything after "image". Returns the exit code.
int image_command(const std::vector<std::string>& args);

}  // namespace stoke::cli
