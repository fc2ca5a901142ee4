// Which checkpoint image serves which function version (docs/checkpoint.md).
//
// Images themselves are content-addressed and immutable (sandbox/image:
// <dir>/<sha256>.img, mode 0444). This store keeps the small index beside
// them, one file per function version (<dir>/index/<function>@<version>,
// holding the image's sha256 and then the image key of the version it was
// built for: checkpoint_build.h image_key), written atomically, so images
// survive an agent restart: the first cold start after it restores.
//
// A name@version is not an identity (a function deleted and created again
// starts at version 1 again), so a lookup names the key too and an entry
// whose key differs is never returned; retain() drops, at start, every entry
// that is not the current version of a function the registry still has.
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "sandbox/base/result.h"

namespace stoke::agent {

class ImageStore {
 public:
  // runtime_id: runtime_shim_id() of the runtimes the agent runs; part of
  // every key it computes (held here so that every caller uses the same).
  ImageStore(std::string dir, std::string runtime_id) : dir_(std::move(dir)), runtime_id_(std::move(runtime_id)) {}
  // Creates the directories (0700, tightened if wider), reads the index
  // (entries whose image is gone are dropped) and removes images no entry
  // names and leftover temp files.
  Status open();
  const std::string& dir() const { return dir_; }
  const std::string& runtime_id() const { return runtime_id_; }
  // The image recorded for function@version if it was built for `key`.
  std::optional<std::string> image_for(const std::string& function, uint32_t version, const std::string& key) const;
  Status record(const std::string& function, uint32_t version, const std::string& key, const std::string& sha256);
  // Forgets the entry and removes the image unless another entry names it.
  void drop(const std::string& function, uint32_t version);
  void drop_function(const std::string& function);  // every version
  // Keeps only the entries of current: function -> (version, key) of its
  // current version. Returns how many entries were dropped.
  size_t retain(const std::map<std::string, std::pair<uint32_t, std::string>>& current);
  size_t size() const;

 private:
  struct Entry {
    std::string sha256;
    std::string key;
  };
  std::string image_path(const std::string& sha256) const { return dir_ + "/" + sha256 + ".img"; }
  void drop_locked(const std::string& function, uint32_t version);
  void remove_if_unused_locked(const std::string& sha256);
  std::string dir_;
  std::string runtime_id_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, uint32_t>, Entry> index_;  // (function, version) -> image, key
};

}  // namespace stoke::agent
