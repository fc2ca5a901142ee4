// Host uid/gid that a sandbox's root is mapped to.
//
// The sandbox sees itself as uid/gid 0 inside its own user namespace; on the host
// that is an unprivileged id from a range reserved for stoke, never a host account
// (checked against the passwd/group databases).
#pragma once

#include <cstdint>
#include <string>

#include "sandbox/base/result.h"

namespace stoke {

struct HostIdRange {
  uint32_t first = 1'100'000;  // well above login ranges and the usual subuid ranges
  uint32_t count = 65'536;

  bool operator==(const HostIdRange&) const = default;
};

// `stoke run` (a sandbox without an agent): its own range, right above the
// agent's default one, so a CLI run never shares an id with a function,
// prewarmed instance or zygote of an agent with the default range.
inline constexpr HostIdRange kRunHostIds{1'100'000 + 65'536, 65'536};

// Pick an id in the range from a seed (e.g. a function id hash, or a pid).
uint32_t host_id_for(const HostIdRange& range, uint64_t seed);

// Refuse 0 and ids outside [1000, 2^32-2). Cheap: no lookups.
Status check_host_id_range(uint32_t uid, uint32_t gid);
// Refuse ids that name a host user or group (passwd/group lookups: slow-ish,
// so the spawner caches the answer per id).
Status check_not_host_account(uint32_t uid, uint32_t gid);
// Both.
Status check_unprivileged_host_id(uint32_t uid, uint32_t gid);

// Contents of /proc/PID/{uid,gid}_map that map sandbox 0 to the host id.
std::string single_id_map(uint32_t host_id);
// Sandbox ids 0..count-1 to host ids host_id..host_id+count-1 (zygotes).
std::string block_id_map(uint32_t host_id, uint32_t count);

}  // namespace stoke
