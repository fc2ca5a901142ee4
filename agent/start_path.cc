#include "agent/start_path.h"

namespace stoke::agent {

const char* start_path_name(StartPath path) {
  switch (path) {
    case StartPath::kWarm: return "warm";
    case StartPath::kPrewarmed: return "prewarmed";
    case StartPath::kZygoteFork: return "zygote fork";
    case StartPath::kWaitForZygote: return "wait for zygote";
    case StartPath::kRestore: return "restore";
    case StartPath::kWaitForImage: return "wait for image";
    case StartPath::kCold: return "cold";
  }
  return "?";
}

std::vector<StartPath> pooled_paths(const StartFacts& f) {
  switch (f.forced) {
    case v1::COLD:
    case v1::ZYGOTE:
    case v1::RESTORE:
      return {};  // a new instance, made the way asked for
    case v1::PREWARM:
      return {StartPath::kPrewarmed};  // none free: cold, and start_kind says so
    default:
      break;
  }
  // An idle instance is fastest. A prewarmed runtime still has to load the
  // function's code, which a zygote fork or a restore have already done: it
  // is taken only when neither is there. An exec function's process is its
  // code: nothing to prewarm.
  if (f.runtime == v1::EXEC || f.zygote_ready || f.image_ready) return {StartPath::kWarm};
  return {StartPath::kWarm, StartPath::kPrewarmed};
}

StartPath new_instance_path(const StartFacts& f) {
  switch (f.forced) {
    case v1::ZYGOTE: return StartPath::kWaitForZygote;
    case v1::RESTORE: return StartPath::kWaitForImage;
    case v1::COLD:
    case v1::PREWARM: return StartPath::kCold;
    default: break;
  }
  // Zygotes and images are Python's (a fork needs a single-threaded runtime);
  // the facts say "not ready" for anything else.
  if (f.runtime != v1::PYTHON) return StartPath::kCold;
  if (f.zygote_ready) return StartPath::kZygoteFork;  // fastest: ~1.4 ms
  if (f.image_ready) return StartPath::kRestore;
  return StartPath::kCold;
}

}  // namespace stoke::agent
