// The restore source's bookkeeping: which functions have a checkpoint image
// being built (one build at a time per function, and who waits for it), which
// function versions cannot be checkpointed (not tried again), and which image
// files this agent has already checked compatible (by inode, so a replaced
// file is checked again). The images themselves live in the ImageStore; the
// agent's image_pool.cc builds and restores them on workers.
//
// Pure and generic over what waits (the agent's activations), so the policy
// is unit-tested without root (tests/unit/image_builds_test.cc).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace stoke::agent {

template <typename W>
class ImageBuilds {
 public:
  // A build of this version may start: none runs for the function and this
  // version was not refused.
  bool may_build(const std::string& function, uint32_t version) const {
    return !builds_.count(function) && !refused_.count(key(function, version));
  }
  void started(const std::string& function, uint32_t version) { builds_[function] = Build{version, {}}; }
  // A build of exactly this version runs.
  bool building(const std::string& function, uint32_t version) const {
    auto it = builds_.find(function);
    return it != builds_.end() && it->second.version == version;
  }
  // Waits for the function's running build (false: none runs; nothing kept).
  bool wait(const std::string& function, W waiter) {
    auto it = builds_.find(function);
    if (it == builds_.end()) return false;
    it->second.waiting.push_back(std::move(waiter));
    return true;
  }
  // The function's build ended: who waited for it, in arrival order.
  std::vector<W> finished(const std::string& function) {
    auto it = builds_.find(function);
    if (it == builds_.end()) return {};
    std::vector<W> out = std::move(it->second.waiting);
    builds_.erase(it);
    return out;
  }

  // The same code would fail the same way: not tried again for this version.
  void refuse(const std::string& function, uint32_t version, std::string why) {
    refused_[key(function, version)] = std::move(why);
  }
  bool refused(const std::string& function, uint32_t version) const { return refused_.count(key(function, version)) > 0; }
  // The function changed (updated, deleted): its refusals go (a new version
  // is tried afresh; an old one is never asked for again).
  void forget_refusals(const std::string& function) {
    const std::string prefix = function + "@";
    for (auto it = refused_.begin(); it != refused_.end();)
      it = it->first.compare(0, prefix.size(), prefix) == 0 ? refused_.erase(it) : std::next(it);
  }

  // An image file checked compatible for `label` (its path and key), as the
  // inode it had then; nullopt when never checked.
  std::optional<ino_t> verified(const std::string& label) const {
    auto it = verified_.find(label);
    if (it == verified_.end()) return std::nullopt;
    return it->second;
  }
  void set_verified(const std::string& label, ino_t ino) { verified_[label] = ino; }
  void forget_verified(const std::string& label) { verified_.erase(label); }

  size_t builds() const { return builds_.size(); }

 private:
  struct Build {
    uint32_t version = 0;
    std::vector<W> waiting;  // --start restore, until it is built
  };
  static std::string key(const std::string& function, uint32_t version) {
    return function + "@" + std::to_string(version);
  }
  std::unordered_map<std::string, Build> builds_;         // by function, while one is built
  std::unordered_map<std::string, std::string> refused_;  // "fn@version" -> why
  std::unordered_map<std::string, ino_t> verified_;       // path + key -> inode checked compatible
};

}  // namespace stoke::agent
