#include "api/cli/image_command.h"

#include <cstdio>

#include "sandbox/image/image.h"

namespace stoke::cli {

int image_command(const std::vector<std::string>& args) {
  if (args.size() != 2 || args[0] != "inspect") {
    std::fputs("usage: stoke image inspect PATH   print a checkpoint image's manifest as JSON\n", stderr);
    return 2;
  }
  // Validates the whole structure (header, hashes, bounds) before printing.
  auto manifest = image::read_image(args[1]);
  if (!manifest.ok()) {
    std::fprintf(stderr, "stoke: %s\n", manifest.error().message().c_str());
    return 1;
  }
  std::fputs(image::manifest_json(manifest.value()).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

}  // namespace stoke::cli
