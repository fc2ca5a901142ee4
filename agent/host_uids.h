// Host uids of functions (security finding #13): one per function, allocated,
// never derived from the name.
//
// A uid derived from a hash of the name let a tenant choose a name that
// collides with another's. Here every function name gets the next unused id
// of the functions' part of the range when it is first started, and keeps it
// until it is deleted. A deleted function's id is not given out again while
// this agent runs (instances of the deleted function may still be ending, and
// per-uid kernel accounting is shared); ids retired in an earlier run (every
// sandbox dies with its agent) are reused only once the range has no never-used
// id left.
//
// The table is a small file in the state dir, rewritten atomically (write,
// fsync, rename) on every change; changes happen on function create and delete,
// never per invocation. Thread-safe.
//
// Layout of the configured range (docs/security/zygote-trust.md):
//   [ functions ........ | prewarm (1024) | zygote block (1024) ]
// `stoke run` picks from its own range above the agent's default one
// (sandbox/id_map.h kRunHostIds).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "sandbox/base/result.h"
#include "sandbox/id_map.h"

namespace stoke::agent {

class HostUids {
 public:
  // Loads (or starts) the table at `path` for ids in `range`; ids in the file
  // outside the range (the range was reconfigured) are dropped.
  static Result<std::unique_ptr<HostUids>> open(const std::string& path, const HostIdRange& range);

  // The function's id, allocating (and persisting) one on first use.
  Result<uint32_t> uid_for(const std::string& function);
  // The function is deleted: its id is retired (not reused in this run).
  Status release(const std::string& function);

  size_t assigned() const;

 private:
  HostUids() = default;
  Status save();  // callers hold mu_

  std::string path_;
  HostIdRange range_;
  mutable std::mutex mu_;
  uint64_t run_ = 0;                      // incremented at every open
  uint32_t next_ = 0;                     // lowest never-used id
  std::map<std::string, uint32_t> owner_;  // function -> id
  std::set<uint32_t> used_;               // ids of owner_
  std::map<uint32_t, uint64_t> retired_;  // id -> run in which its function was deleted
};

}  // namespace stoke::agent
