// Constants of the wire protocol shared by the agent and every client.
// docs/api.md is the human-readable form; keep the two in step.
#pragma once

#include <cstddef>
#include <cstdint>

namespace stoke::wire {

// Bumped on any incompatible change of api.proto or the framing.
inline constexpr uint32_t kProtocolVersion = 1;

// Frames are a 4-byte big-endian length, then the message.
inline constexpr size_t kFrameHeaderBytes = 4;
// Largest message either side accepts: a 1 MiB payload or result plus its
// envelope, or a code archive (see kMaxCodeBytes). Bigger frames are a
// protocol error and close the connection.
inline constexpr size_t kMaxFrameBytes = 64u << 20;
// Defaults the agent applies (configurable there).
inline constexpr size_t kMaxPayloadBytes = 1u << 20;
inline constexpr size_t kMaxCodeBytes = 48u << 20;

inline constexpr const char* kDefaultSocketPath = "/run/stoke/stoke.sock";
inline constexpr const char* kAgentVersion = "0.1.0";

}  // namespace stoke::wire
