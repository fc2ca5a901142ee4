// How an activation gets its instance, decided from facts alone (pure logic,
// unit-tested without root in tests/unit/start_path_test.cc).
//
// Two decisions, because memory is reserved between them:
//   1. pooled_paths: instances that already hold their memory, tried in
//      order (an idle instance of the function, a prewarmed runtime);
//   2. new_instance_path: once memory is reserved for a new instance (the
//      activation may have waited for it, so the facts are read again), how
//      it is made. A path that fails at run time (a zygote died, an image was
//      refused) falls back to a cold start, the one fall-back.
#pragma once

#include <cstdint>
#include <vector>

#include "proto/stoke/v1/api.pb.h"

namespace stoke::agent {

enum class StartPath : uint8_t {
  kWarm,           // an idle instance of this function version
  kPrewarmed,      // a runtime started ahead, given the function's code
  kZygoteFork,     // forked (or forked ahead) by the function's zygote
  kWaitForZygote,  // --start zygote: until the function's zygote is ready
  kRestore,        // mapped back from the function's checkpoint image
  kWaitForImage,   // --start restore: until the function's image is built
  kCold,           // a new sandbox, the runtime started from scratch
};
const char* start_path_name(StartPath path);

struct StartFacts {
  // The client's --start. WARM is checked at invoke (an idle instance must
  // exist) and then chosen like UNSPECIFIED.
  v1::StartKind forced = v1::START_KIND_UNSPECIFIED;
  v1::Runtime runtime = v1::PYTHON;
  bool zygote_ready = false;  // the function version's zygote is ready
  bool image_ready = false;   // the function version has a checkpoint image
};

std::vector<StartPath> pooled_paths(const StartFacts& facts);
StartPath new_instance_path(const StartFacts& facts);

}  // namespace stoke::agent
