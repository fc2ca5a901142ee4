#include "agent/image_store.h"

#include <algorithm>

#include <unistd.h>

#include <filesystem>
#include <set>
#include <vector>

#include <spdlog/spdlog.h>

#include "sandbox/base/file_util.h"

namespace stoke::agent {
namespace {

bool is_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// The index file of function@version. A namespaced function's name holds a
// '/' ("team/hello", agent/names.h), which a file name cannot: it is written
// as '+', which no function or namespace name contains.
std::string index_file_name(const std::string& function, uint32_t version) {
  std::string name = function;
  std::replace(name.begin(), name.end(), '/', '+');
  return name + "@" + std::to_string(version);
}

}  // namespace

Status ImageStore::open() {
  STOKE_TRY(make_private_dir(dir_, 0700));
  STOKE_TRY(make_private_dir(dir_ + "/index", 0700));
  std::lock_guard<std::mutex> lock(mu_);
  index_.clear();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/index", ec)) {
    std::string name = entry.path().filename().string();
    size_t at = name.rfind('@');
    auto text = read_file(entry.path().string());
    // "<sha256>\n<key>\n"; an entry of an older version has no key and
    // matches no lookup (retain() then drops it).
    std::string body = text.ok() ? text.value() : "";
    size_t eol = body.find('\n');
    std::string sha = body.substr(0, eol);
    std::string key;
    if (eol != std::string::npos) key = body.substr(eol + 1, body.find('\n', eol + 1) - eol - 1);
    uint32_t version = at == std::string::npos ? 0 : static_cast<uint32_t>(std::strtoul(name.c_str() + at + 1, nullptr, 10));
    if (at == std::string::npos || at == 0 || version == 0 || !is_sha256(sha) || !path_exists(image_path(sha))) {
      spdlog::warn("images: dropping index entry {} (its image is missing or the entry is damaged)", name);
      std::filesystem::remove(entry.path(), ec);
      continue;
    }
    std::string function = name.substr(0, at);
    std::replace(function.begin(), function.end(), '+', '/');
    index_[{function, version}] = Entry{sha, key};
  }
  // Images nobody names any more, and temp files of a write a crash cut short.
  std::set<std::string> named;
  for (const auto& [fv, e] : index_) named.insert(e.sha256);
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().filename().string();
    bool image = name.size() == 68 && name.compare(64, 4, ".img") == 0 && is_sha256(name.substr(0, 64));
    if (image && named.count(name.substr(0, 64))) continue;
    std::filesystem::remove(entry.path(), ec);
  }
  return {};
}

std::optional<std::string> ImageStore::image_for(const std::string& function, uint32_t version,
                                                const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find({function, version});
  if (it == index_.end() || key.empty() || it->second.key != key) return std::nullopt;
  return image_path(it->second.sha256);
}

Status ImageStore::record(const std::string& function, uint32_t version, const std::string& key,
                          const std::string& sha256) {
  if (!is_sha256(sha256)) return plain_error("record image", "not a sha256: " + sha256);
  if (!is_sha256(key)) return plain_error("record image", "not an image key: " + key);
  std::lock_guard<std::mutex> lock(mu_);
  STOKE_TRY(write_file_atomic(dir_ + "/index/" + index_file_name(function, version), sha256 + "\n" + key + "\n", 0600));
  auto& slot = index_[{function, version}];
  std::string old = slot.sha256;
  slot = Entry{sha256, key};
  if (!old.empty() && old != sha256) remove_if_unused_locked(old);
  return {};
}

void ImageStore::drop(const std::string& function, uint32_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  drop_locked(function, version);
}

void ImageStore::drop_locked(const std::string& function, uint32_t version) {
  auto it = index_.find({function, version});
  if (it == index_.end()) return;
  std::string sha = it->second.sha256;
  index_.erase(it);
  std::error_code ec;
  std::filesystem::remove(dir_ + "/index/" + index_file_name(function, version), ec);
  remove_if_unused_locked(sha);
}

void ImageStore::drop_function(const std::string& function) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint32_t> versions;
  for (const auto& [fv, e] : index_)
    if (fv.first == function) versions.push_back(fv.second);
  for (uint32_t v : versions) drop_locked(function, v);
}

size_t ImageStore::retain(const std::map<std::string, std::pair<uint32_t, std::string>>& current) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, uint32_t>> doomed;
  for (const auto& [fv, e] : index_) {
    auto it = current.find(fv.first);
    if (it == current.end() || it->second.first != fv.second || it->second.second != e.key) doomed.push_back(fv);
  }
  for (const auto& [function, version] : doomed) drop_locked(function, version);
  return doomed.size();
}

size_t ImageStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.size();
}

void ImageStore::remove_if_unused_locked(const std::string& sha256) {
  for (const auto& [fv, e] : index_)
    if (e.sha256 == sha256) return;
  // Restored instances map the file; unlinking it leaves their mappings intact.
  std::error_code ec;
  std::filesystem::remove(image_path(sha256), ec);
}

}  // namespace stoke::agent
