// stoke: the command line. `stoke run` runs one command in a sandbox; the agent
// verbs (fn, invoke, activation, status) talk to stoked over its socket.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "api/cli/agent_commands.h"
#include "api/cli/image_command.h"
#include "api/cli/run_command.h"

namespace {

constexpr const char* kUsage =
    "usage: stoke [--socket PATH] COMMAND [ARGS...]\n"
    "  run [options] -- CMD [ARGS...]   run one command in a fresh sandbox (stoke run --help)\n"
    "  fn, invoke, activation, status   talk to the agent (stoke help agent)\n"
    "  image inspect PATH               print a checkpoint image's manifest as JSON\n"
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
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string socket_path;
  if (args[0] == "--socket" || args[0].rfind("--socket=", 0) == 0) {
    if (args[0] == "--socket") {
      if (args.size() < 2) {
        std::fputs("stoke: --socket needs a path\n", stderr);
        return 2;
      }
      socket_path = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else {
      socket_path = args[0].substr(9);
      args.erase(args.begin());
    }
    if (args.empty()) {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  std::string verb = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (verb == "run") return stoke::cli::run_command(rest);
  if (verb == "image") return stoke::cli::image_command(rest);
  if (stoke::cli::is_agent_verb(verb)) return stoke::cli::agent_command(socket_path, args);
  if (verb == "help" && !rest.empty() && rest[0] == "agent") {
    std::fputs(stoke::cli::agent_usage(), stdout);
    return 0;
  }
  if (verb == "version" || verb == "--version") {
    std::puts("stoke 0.1.0");
    return 0;
  }
  std::fprintf(stderr, "stoke: unknown command '%s'\n%s", verb.c_str(), kUsage);
  return 2;
}
