// Names of the API's enums as clients show them (the CLI's JSON, the
// gateway's activation records): one spelling for every client.
#pragma once

#include "proto/stoke/v1/api.pb.h"

namespace stoke::wire {

// "cold", "prewarm", "zygote", "restore", "warm"; "" when unspecified.
inline const char* start_kind_name(v1::StartKind kind) {
  switch (kind) {
    case v1::COLD: return "cold";
    case v1::PREWARM: return "prewarm";
    case v1::ZYGOTE: return "zygote";
    case v1::RESTORE: return "restore";
    case v1::WARM: return "warm";
    default: return "";
  }
}

}  // namespace stoke::wire
