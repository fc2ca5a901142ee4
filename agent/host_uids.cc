#include "agent/host_uids.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {
namespace {

constexpr const char* kHeader = "stoke-host-uids 1";

}  // namespace

Result<std::unique_ptr<HostUids>> HostUids::open(const std::string& path, const HostIdRange& range) {
  std::unique_ptr<HostUids> t(new HostUids());
  t->path_ = path;
  t->range_ = range;
  t->next_ = range.first;
  const uint64_t end = uint64_t{range.first} + range.count;
  auto in_range = [&](uint64_t id) { return id >= range.first && id < end; };
  auto text = read_file(path);
  if (text.ok()) {
    std::istringstream in(*text);
    std::string line;
    if (!std::getline(in, line) || line != kHeader)
      return plain_error("read host uid table " + path, "not a host uid table (first line is not \"" +
                                                            std::string(kHeader) + "\")");
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string kind, name;
      uint64_t a = 0, b = 0;
      words >> kind;
      if (kind == "run" && (words >> a)) {
        t->run_ = a;
      } else if (kind == "next" && (words >> a)) {
        t->next_ = in_range(a) || a == end ? static_cast<uint32_t>(a) : range.first;
      } else if (kind == "fn" && (words >> a >> name) && in_range(a) && !t->used_.count(static_cast<uint32_t>(a))) {
        t->owner_[name] = static_cast<uint32_t>(a);
        t->used_.insert(static_cast<uint32_t>(a));
      } else if (kind == "retired" && (words >> a >> b) && in_range(a)) {
        t->retired_[static_cast<uint32_t>(a)] = b;
      } else if (!kind.empty()) {
        return plain_error("read host uid table " + path, "bad line \"" + line + "\"");
      }
    }
  } else if (text.error().err != ENOENT) {
    return text.error().context("read host uid table");
  }
  // Ids handed out before but dropped from the file (range change) are never
  // below next_: keep next_ above everything in use.
  for (uint32_t id : t->used_)
    if (id >= t->next_) t->next_ = id + 1;
  for (const auto& [id, run] : t->retired_)
    if (id >= t->next_) t->next_ = id + 1;
  ++t->run_;
  std::lock_guard<std::mutex> lock(t->mu_);
  STOKE_TRY(t->save());
  return t;
}

Result<uint32_t> HostUids::uid_for(const std::string& function) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owner_.find(function);
  if (it != owner_.end()) return it->second;
  const uint64_t end = uint64_t{range_.first} + range_.count;
  uint32_t id = 0;
  if (next_ < end) {
    id = next_++;
  } else {
    // Only ids retired in an earlier run: nothing of their owner is alive.
    for (auto r = retired_.begin(); r != retired_.end(); ++r) {
      if (r->second < run_) {
        id = r->first;
        retired_.erase(r);
        break;
      }
    }
    if (id == 0)
      return plain_error("allocate a host uid for " + function,
                         "every id of the functions' range is in use or was retired in this run");
  }
  owner_[function] = id;
  used_.insert(id);
  if (Status saved = save(); !saved.ok()) {
    owner_.erase(function);
    used_.erase(id);
    return saved.error();
  }
  return id;
}

Status HostUids::release(const std::string& function) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owner_.find(function);
  if (it == owner_.end()) return {};
  retired_[it->second] = run_;
  used_.erase(it->second);
  owner_.erase(it);
  return save();
}

size_t HostUids::assigned() const {
  std::lock_guard<std::mutex> lock(mu_);
  return owner_.size();
}

Status HostUids::save() {
  std::string text = std::string(kHeader) + "\nrun " + std::to_string(run_) + "\nnext " + std::to_string(next_) + "\n";
  for (const auto& [name, id] : owner_) text += "fn " + std::to_string(id) + " " + name + "\n";
  for (const auto& [id, run] : retired_) text += "retired " + std::to_string(id) + " " + std::to_string(run) + "\n";
  const std::string tmp = path_ + ".tmp";
  unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return sys_error("write " + tmp);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return sys_error("fsync " + tmp);
  fd.reset();
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return sys_error("rename " + tmp);
  return {};
}

}  // namespace stoke::agent
