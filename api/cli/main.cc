// stoke: the command line. `stoke run` runs one command in a sandbox; the agent
// verbs (fn, invoke, activation, status) talk to stoked over its socket.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "api/cli/run_command.h"

namespace {

constexpr const char* kUsage =
    "usage: stoke COMMAND [ARGS...]\n"
    "  run [options] -- CMD [ARGS...]   run one command in a fresh sandbox (stoke run --help)\n"
    "  version                          print the version\n";

}  // namespace

int main(int argc, char** argv) {
  // A command line tool stays quiet unless something is wrong; STOKE_LOG=debug
  // (or info, trace...) shows what the library does.
  const char* level = std::getenv("STOKE_LOG");
  spdlog::set_level(level != nullptr ? spdlog::level::from_str(level) : spdlog::level::warn);
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string verb = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (verb == "run") return stoke::cli::run_command(rest);
  if (verb == "version" || verb == "--version") {
    std::puts("stoke 0.1.0");
    return 0;
  }
  std::fprintf(stderr, "stoke: unknown command '%s'\n%s", verb.c_str(), kUsage);
  return 2;
}
