// Which checkpoint image serves which function version (docs/checkpoint.md).
//
// Images themselves are content-addressed and immutable (sandbox/image:
// <dir>/<sha256>.img, mode 0444). This store keeps the small index beside
// them, one file per function version (<dir>/index/<function>@<version>,
// holding the image's sha256), written atomically, so images survive an agent
// restart: the first cold start after it restores. Thread-safe.
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
  explicit ImageStore(std::string dir) : dir_(std::move(dir)) {}
  // Creates the directories, reads the index (entries whose image is gone
  // are dropped) and removes images no entry names and leftover temp files.
  Status open();
  const std::string& dir() const { return dir_; }
  std::optional<std::string> image_for(const std::string& function, uint32_t version) const;
  Status record(const std::string& function, uint32_t version, const std::string& sha256);
  // Forgets the entry and removes the image unless another entry names it.
  void drop(const std::string& function, uint32_t version);
  void drop_function(const std::string& function);  // every version
  size_t size() const;

 private:
  std::string image_path(const std::string& sha256) const { return dir_ + "/" + sha256 + ".img"; }
  void remove_if_unused_locked(const std::string& sha256);
  std::string dir_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, uint32_t>, std::string> index_;  // (function, version) -> sha256
};

}  // namespace stoke::agent
