#include "agent/code_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <memory>
#include <vector>

#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {
namespace {

constexpr std::string_view kTempPrefix = ".tmp-";
constexpr size_t kMaxNameBytes = 255;       // NAME_MAX on every Linux filesystem we use
constexpr size_t kMaxPathBytes = 4000;      // below PATH_MAX, leaving room for the store's prefix
constexpr size_t kMaxPathComponents = 128;  // bounds recursion (one fd per level) when walking trees
constexpr int kMaxSymlinkHops = 40;         // the kernel's own limit

// Temp dir names must be unique across concurrent store() calls of this
// process; pid separates processes sharing a state dir by mistake.
std::atomic<uint64_t> g_temp_counter{0};

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string shown_path(const std::string& path) { return path.size() > 200 ? path.substr(0, 197) + "..." : path; }

Error invalid_entry(const std::string& path, std::string why) {
  return kind_error(ErrorKind::kInvalid, "code archive entry '" + shown_path(path) + "'", std::move(why));
}

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n && i < parts.size(); ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

// The components of an archive entry's path, "." and empty ones dropped.
// Refuses what could place a file outside the tree or that the filesystem
// would refuse anyway, so the user hears why.
Result<std::vector<std::string>> entry_components(const std::string& path) {
  if (path.empty()) return invalid_entry(path, "has an empty name");
  if (path[0] == '/') return invalid_entry(path, "is an absolute path");
  if (path.size() > kMaxPathBytes)
    return invalid_entry(path, "path is longer than " + std::to_string(kMaxPathBytes) + " bytes");
  std::vector<std::string> out;
  for (auto& c : split(path)) {
    if (c.empty() || c == ".") continue;
    if (c == "..") return invalid_entry(path, "has a '..' component");
    if (c.size() > kMaxNameBytes)
      return invalid_entry(path, "has a name longer than " + std::to_string(kMaxNameBytes) + " bytes");
    out.push_back(std::move(c));
  }
  if (out.size() > kMaxPathComponents)
    return invalid_entry(path, "is nested deeper than " + std::to_string(kMaxPathComponents) + " directories");
  return out;
}

Status write_all(int fd, const char* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + what);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}

// Names in a directory, "." and ".." excluded. Read fully before the caller
// changes the directory, since readdir's view of a changing one is unspecified.
Result<std::vector<std::pair<std::string, bool>>> list_dir(int dirfd, const std::string& shown) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("open " + shown);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int e = errno;
    ::close(fd);
    return sys_error("opendir " + shown, e);
  }
  std::unique_ptr<DIR, int (*)(DIR*)> dir(d, ::closedir);
  std::vector<std::pair<std::string, bool>> out;  // name, is a directory (not a symlink to one)
  for (;;) {
    errno = 0;
    dirent* ent = ::readdir(d);
    if (ent == nullptr) {
      if (errno != 0) return sys_error("readdir " + shown);
      break;
    }
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = ent->d_type == DT_DIR;
    if (ent->d_type == DT_UNKNOWN) {
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) is_dir = S_ISDIR(st.st_mode);
    }
    out.emplace_back(std::move(name), is_dir);
  }
  return out;
}

// rm -rf of parent/name without following symlinks anywhere.
Status remove_tree_at(int parent, const std::string& name, const std::string& shown) {
  unique_fd fd(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    if (errno != ENOTDIR && errno != ELOOP) return sys_error("open " + shown);
    if (::unlinkat(parent, name.c_str(), 0) != 0 && errno != ENOENT) return sys_error("unlink " + shown);
    return {};
  }
  auto entries = list_dir(fd.get(), shown);
  if (!entries.ok()) return entries.error();
  for (const auto& [child, is_dir] : *entries) {
    std::string child_shown = shown + "/" + child;
    if (is_dir) {
      STOKE_TRY(remove_tree_at(fd.get(), child, child_shown));
    } else if (::unlinkat(fd.get(), child.c_str(), 0) != 0 && errno != ENOENT) {
      return sys_error("unlink " + child_shown);
    }
  }
  fd.reset();
  if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return sys_error("rmdir " + shown);
  return {};
}

// Bytes of regular files under dirfd (for a tree stored earlier).
Result<uint64_t> tree_bytes(int dirfd, const std::string& shown) {
  auto entries = list_dir(dirfd, shown);
  if (!entries.ok()) return entries.error();
  uint64_t total = 0;
  for (const auto& [child, is_dir] : *entries) {
    std::string child_shown = shown + "/" + child;
    if (is_dir) {
      unique_fd sub(::openat(dirfd, child.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return sys_error("open " + child_shown);
      auto n = tree_bytes(sub.get(), child_shown);
      if (!n.ok()) return n.error();
      total += *n;
      continue;
    }
    struct stat st;
    if (::fstatat(dirfd, child.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return sys_error("stat " + child_shown);
    if (S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
  }
  return total;
}

std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m != nullptr ? m : "unreadable archive";
}

// ---- extraction -------------------------------------------------------------

// Builds one tree under rootfd (the temp dir). Every path is walked from
// rootfd one component at a time with O_NOFOLLOW, so no entry can write
// through a symlink another entry planted.
class TreeWriter {
 public:
  TreeWriter(int rootfd, std::string root_shown) : rootfd_(rootfd), root_shown_(std::move(root_shown)) {}

  Status add_dir(const std::string& path, const std::vector<std::string>& comps) {
    auto fd = walk_dirs(path, comps, comps.size());
    if (!fd.ok()) return fd.error();
    return {};
  }

  // An empty file, 0600 until finished, for the caller to fill.
  Result<unique_fd> create_file(const std::string& path, const std::vector<std::string>& comps) {
    auto parent = walk_dirs(path, comps, comps.size() - 1);
    if (!parent.ok()) return parent.error();
    STOKE_TRY(clear_slot(parent->get(), path, comps.back()));
    unique_fd fd(::openat(parent->get(), comps.back().c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return sys_error("create " + root_shown_ + "/" + join(comps, comps.size()));
    ++files_;
    return fd;
  }

  Status add_symlink(const std::string& path, const std::vector<std::string>& comps, const std::string& target) {
    if (target.empty()) return invalid_entry(path, "is a symlink with an empty target");
    if (target[0] == '/') return invalid_entry(path, "is a symlink to an absolute path ('" + shown_path(target) + "')");
    if (target.size() > kMaxPathBytes) return invalid_entry(path, "is a symlink with a too long target");
    // Lexical check: resolve the target from the link's directory by name.
    std::vector<std::string> at(comps.begin(), comps.end() - 1);
    for (const auto& c : split(target)) {
      if (c.empty() || c == ".") continue;
      if (c == "..") {
        if (at.empty())
          return invalid_entry(path, "is a symlink leading outside the code ('" + shown_path(target) + "')");
        at.pop_back();
      } else {
        at.push_back(c);
      }
    }
    auto parent = walk_dirs(path, comps, comps.size() - 1);
    if (!parent.ok()) return parent.error();
    STOKE_TRY(clear_slot(parent->get(), path, comps.back()));
    if (::symlinkat(target.c_str(), parent->get(), comps.back().c_str()) != 0)
      return sys_error("symlink " + root_shown_ + "/" + join(comps, comps.size()));
    links_.push_back({path, comps});
    return {};
  }

  // After the last entry: the physical symlink check, then directory modes.
  Status finish() {
    for (const auto& link : links_) STOKE_TRY(check_link_stays_inside(link.path, link.comps));
    for (const auto& rel : dirs_) {
      unique_fd fd(::openat(rootfd_, rel.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return sys_error("open " + root_shown_ + "/" + rel);
      if (::fchmod(fd.get(), 0755) != 0) return sys_error("chmod " + root_shown_ + "/" + rel);
    }
    return {};
  }

  uint64_t files() const { return files_; }
  // Bytes of files a later entry replaced: written (and counted against the
  // cap) but no longer part of the tree.
  uint64_t replaced_bytes() const { return replaced_bytes_; }

 private:
  struct Link {
    std::string path;
    std::vector<std::string> comps;
  };

  // mkdir -p of comps[0..n) under rootfd; returns the fd of the last one.
  Result<unique_fd> walk_dirs(const std::string& path, const std::vector<std::string>& comps, size_t n) {
    unique_fd cur(::openat(rootfd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cur) return sys_error("open " + root_shown_);
    for (size_t i = 0; i < n; ++i) {
      const std::string& c = comps[i];
      if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST)
        return sys_error("mkdir " + root_shown_ + "/" + join(comps, i + 1));
      unique_fd next(::openat(cur.get(), c.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) {
        if (errno == ELOOP || errno == ENOTDIR)
          return invalid_entry(path, "'" + shown_path(join(comps, i + 1)) + "' is a symlink or a file, not a directory");
        return sys_error("open " + root_shown_ + "/" + join(comps, i + 1));
      }
      dirs_.insert(join(comps, i + 1));
      cur = std::move(next);
    }
    return cur;
  }

  // A later entry for the same path replaces a file or symlink (tar's
  // "last one wins"), but never a directory.
  Status clear_slot(int parentfd, const std::string& path, const std::string& name) {
    struct stat st;
    if (::fstatat(parentfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return {};
      return sys_error("stat " + root_shown_ + "/" + path);
    }
    if (S_ISDIR(st.st_mode)) return invalid_entry(path, "replaces a directory");
    if (::unlinkat(parentfd, name.c_str(), 0) != 0) return sys_error("unlink " + root_shown_ + "/" + path);
    if (S_ISREG(st.st_mode)) {
      --files_;
      replaced_bytes_ += static_cast<uint64_t>(st.st_size);
    }
    return {};
  }

  // Resolves the link like the kernel would, but with the tree's root as a
  // ceiling: following symlinks already in the tree, a '..' past the root is
  // an escape. Catches what the per-entry lexical check cannot see, e.g.
  // "s -> ." and "t -> s/s/.." (lexically ".", physically the parent).
  Status check_link_stays_inside(const std::string& path, const std::vector<std::string>& comps) {
    std::deque<std::string> pending(comps.begin(), comps.end());
    std::vector<std::string> cur;
    int hops = 0;
    while (!pending.empty()) {
      std::string c = std::move(pending.front());
      pending.pop_front();
      if (c.empty() || c == ".") continue;
      if (c == "..") {
        if (cur.empty()) return invalid_entry(path, "is a symlink leading outside the code (through other symlinks)");
        cur.pop_back();
        continue;
      }
      cur.push_back(std::move(c));
      // Every component before the last in cur is a real directory (symlinks
      // were replaced by their targets), so this lstat follows nothing.
      std::string rel = join(cur, cur.size());
      struct stat st;
      if (::fstatat(rootfd_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // dangling: by name only
      if (!S_ISLNK(st.st_mode)) continue;
      if (++hops > kMaxSymlinkHops) return invalid_entry(path, "is a symlink in a loop or a too deep chain");
      char buf[PATH_MAX];
      ssize_t n = ::readlinkat(rootfd_, rel.c_str(), buf, sizeof buf);
      if (n < 0) return sys_error("readlink " + root_shown_ + "/" + rel);
      std::string target(buf, static_cast<size_t>(n));
      if (target.empty() || target[0] == '/') return invalid_entry(path, "leads to an absolute symlink");
      cur.pop_back();
      auto parts = split(target);
      pending.insert(pending.begin(), parts.begin(), parts.end());
    }
    return {};
  }

  int rootfd_;
  std::string root_shown_;
  std::set<std::string> dirs_;  // relative paths of every directory made or entered
  std::vector<Link> links_;
  uint64_t files_ = 0;
  uint64_t replaced_bytes_ = 0;
};

// Extracts an uploaded archive into rootfd; returns the bytes of the files in the tree.
Result<uint64_t> extract_archive(const std::string& data, v1::CodeFormat format, int rootfd,
                                 const std::string& root_shown, const CodeLimits& limits) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) return plain_error("code archive", "libarchive could not allocate a reader");
  if (format == v1::ZIP) {
    archive_read_support_format_zip(a.get());
  } else {
    archive_read_support_format_tar(a.get());
    // gzip only when libarchive has zlib built in: ARCHIVE_WARN would mean
    // it runs an external gzip program from the agent.
    if (archive_read_support_filter_gzip(a.get()) != ARCHIVE_OK)
      return plain_error("code archive", "libarchive has no built-in gzip support");
  }
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK)
    return kind_error(ErrorKind::kInvalid, "code archive", archive_message(a.get()));

  TreeWriter tree(rootfd, root_shown);
  std::vector<char> buf(64 * 1024);
  uint64_t total = 0, entries = 0;
  auto too_big = [&](const std::string& path) {
    return invalid_entry(path, "makes the unpacked code larger than " + std::to_string(limits.max_total_bytes) +
                                   " bytes (the limit, max_code_unpacked_bytes)");
  };
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)  // WARN: e.g. an unconvertible name charset; still usable
      return kind_error(ErrorKind::kInvalid, "code archive", archive_message(a.get()));
    if (++entries > limits.max_entries)
      return kind_error(ErrorKind::kInvalid, "code archive",
                        "has more than " + std::to_string(limits.max_entries) + " entries (the limit)");
    const char* raw = archive_entry_pathname(e);
    if (raw == nullptr) raw = archive_entry_pathname_utf8(e);
    if (raw == nullptr)
      return kind_error(ErrorKind::kInvalid, "code archive", "entry " + std::to_string(entries) + " has no readable name");
    std::string path = raw;
    auto comps = entry_components(path);
    if (!comps.ok()) return comps.error();

    // A hardlink entry often has type "regular file"; check it first.
    if (archive_entry_hardlink(e) != nullptr) return invalid_entry(path, "is a hardlink (not supported)");
    auto type = archive_entry_filetype(e);
    switch (type) {
      case AE_IFDIR:
        if (comps->empty()) continue;  // "./": the root itself
        STOKE_TRY(tree.add_dir(path, *comps));
        continue;
      case AE_IFLNK: {
        if (comps->empty()) return invalid_entry(path, "is a symlink in place of the code directory");
        const char* target = archive_entry_symlink(e);
        if (target == nullptr) target = archive_entry_symlink_utf8(e);
        STOKE_TRY(tree.add_symlink(path, *comps, target != nullptr ? target : ""));
        continue;
      }
      case AE_IFREG: break;
      case AE_IFCHR: return invalid_entry(path, "is a character device (not allowed)");
      case AE_IFBLK: return invalid_entry(path, "is a block device (not allowed)");
      case AE_IFIFO: return invalid_entry(path, "is a FIFO (not allowed)");
      case AE_IFSOCK: return invalid_entry(path, "is a socket (not allowed)");
      default: return invalid_entry(path, "has an unknown file type");
    }

    if (comps->empty()) return invalid_entry(path, "is a file in place of the code directory");
    // The header's size is a hint to fail early; the bytes actually read are what count.
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
        static_cast<uint64_t>(archive_entry_size(e)) > limits.max_total_bytes - total)
      return too_big(path);
    auto fd = tree.create_file(path, *comps);
    if (!fd.ok()) return fd.error();
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n < 0) return invalid_entry(path, archive_message(a.get()));
      if (n == 0) break;
      if (static_cast<uint64_t>(n) > limits.max_total_bytes - total) return too_big(path);
      total += static_cast<uint64_t>(n);
      STOKE_TRY(write_all(fd->get(), buf.data(), static_cast<size_t>(n), root_shown + "/" + path));
    }
    // Keep "is executable", drop the rest: the sandbox uid must read everything.
    mode_t mode = (archive_entry_perm(e) & 0111) != 0 ? 0755 : 0644;
    if (::fchmod(fd->get(), mode) != 0) return sys_error("chmod " + root_shown + "/" + path);
  }
  if (tree.files() == 0) return kind_error(ErrorKind::kInvalid, "code archive", "has no files");
  STOKE_TRY(tree.finish());
  return total - tree.replaced_bytes();
}

Status check_file_name(const std::string& name) {
  auto bad = [](std::string why) { return kind_error(ErrorKind::kInvalid, "code_file_name", std::move(why)); };
  if (name.empty()) return bad("must be set for SINGLE_FILE code");
  if (name == "." || name == "..") return bad("must be a file name, not '" + name + "'");
  if (name.size() > kMaxNameBytes) return bad("is longer than " + std::to_string(kMaxNameBytes) + " bytes");
  for (char c : name) {
    if (c == '/') return bad("must be a plain file name without '/'");
    if (c == '\0') return bad("must not contain a NUL byte");
  }
  return {};
}

// Removes a temp dir on every exit path except success.
class TempDirGuard {
 public:
  TempDirGuard(int parentfd, std::string name, std::string shown)
      : parentfd_(parentfd), name_(std::move(name)), shown_(std::move(shown)) {}
  ~TempDirGuard() {
    if (armed_) (void)remove_tree_at(parentfd_, name_, shown_);
  }
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;
  void release() { armed_ = false; }

 private:
  int parentfd_;
  std::string name_, shown_;
  bool armed_ = true;
};

}  // namespace

// ---- code store ---------------------------------------------------------------

Result<std::string> code_sha256(const v1::FunctionConfig& config) {
  const char* format = nullptr;
  switch (config.code_format()) {
    case v1::SINGLE_FILE: format = "single_file"; break;
    case v1::ZIP: format = "zip"; break;
    case v1::TAR: format = "tar"; break;
    default: return kind_error(ErrorKind::kInvalid, "code_format", "must be SINGLE_FILE, ZIP or TAR");
  }
  std::string name;
  if (config.code_format() == v1::SINGLE_FILE) {
    STOKE_TRY(check_file_name(config.code_file_name()));
    name = config.code_file_name();
  }
  // "stoke-code-v1\0<format>\0<name>\0<bytes>": format and name hold no NUL,
  // so distinct uploads can never frame to the same input.
  std::string header = std::string("stoke-code-v1") + '\0' + format + '\0' + name + '\0';
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), header.data(), header.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), config.code().data(), config.code().size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), md, &md_len) != 1)
    return plain_error("sha256 of the code", "OpenSSL digest failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < md_len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 0xf];
  }
  return hex;
}

Result<CodeStore> CodeStore::open(const std::string& root, CodeLimits limits) {
  if (root.empty() || root[0] != '/') return plain_error("open code store", "root must be an absolute path");
  // 0700, tightened if it exists: nobody but root lists or walks the store.
  // The trees below stay 0755 because sandboxes read them as an unprivileged
  // uid, but only through a bind the spawner clones as host root, never by
  // this path.
  auto st = make_private_dir(root, 0700);
  if (!st.ok()) return st.error().context("open code store");
  return CodeStore(root, limits);
}

std::string CodeStore::path_for(const std::string& sha256) const { return root_ + "/" + sha256; }

bool CodeStore::exists(const std::string& sha256) const {
  if (!is_sha256_hex(sha256)) return false;
  struct stat st;
  return ::lstat(path_for(sha256).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string CodeStore::temp_path(const std::string& tag) const {
  return std::string(kTempPrefix) + tag + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(g_temp_counter.fetch_add(1));
}

Result<StoredCode> CodeStore::store(const v1::FunctionConfig& config) {
  if (config.code().size() > limits_.max_upload_bytes)
    return kind_error(ErrorKind::kInvalid, "code",
                      "is " + std::to_string(config.code().size()) + " bytes; the limit is " +
                          std::to_string(limits_.max_upload_bytes) + " (max_code_bytes)");
  if (config.code().size() > limits_.max_total_bytes && config.code_format() == v1::SINGLE_FILE)
    return kind_error(ErrorKind::kInvalid, "code",
                      "is larger than " + std::to_string(limits_.max_total_bytes) +
                          " bytes unpacked (the limit, max_code_unpacked_bytes)");
  auto sha = code_sha256(config);
  if (!sha.ok()) return sha.error();
  StoredCode out{*sha, path_for(*sha), 0};

  unique_fd rootfd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return sys_error("open " + root_);

  // Already stored: trees are immutable, so only the size is needed.
  if (exists(*sha)) {
    unique_fd dir(::openat(rootfd.get(), sha->c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) return sys_error("open " + out.dir);
    auto size = tree_bytes(dir.get(), out.dir);
    if (!size.ok()) return size.error();
    out.size = *size;
    return out;
  }

  std::string tmp_name = temp_path(*sha);
  std::string tmp_shown = root_ + "/" + tmp_name;
  if (::mkdirat(rootfd.get(), tmp_name.c_str(), 0700) != 0) return sys_error("mkdir " + tmp_shown);
  TempDirGuard guard(rootfd.get(), tmp_name, tmp_shown);
  unique_fd tmpfd(::openat(rootfd.get(), tmp_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!tmpfd) return sys_error("open " + tmp_shown);

  if (config.code_format() == v1::SINGLE_FILE) {
    const std::string& name = config.code_file_name();
    unique_fd fd(::openat(tmpfd.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return sys_error("create " + tmp_shown + "/" + name);
    STOKE_TRY(write_all(fd.get(), config.code().data(), config.code().size(), tmp_shown + "/" + name));
    // 0755: the exec runtime runs the file itself.
    if (::fchmod(fd.get(), 0755) != 0) return sys_error("chmod " + tmp_shown + "/" + name);
    out.size = config.code().size();
  } else {
    auto bytes = extract_archive(config.code(), config.code_format(), tmpfd.get(), tmp_shown, limits_);
    if (!bytes.ok()) return bytes.error();
    out.size = *bytes;
  }
  // mkdir's 0700 kept other users out while the tree was incomplete.
  if (::fchmod(tmpfd.get(), 0755) != 0) return sys_error("chmod " + tmp_shown);
  // One syncfs instead of an fsync per file and directory: the same
  // guarantee (all of the tree is on disk before the rename makes it
  // visible) at a fraction of the cost for trees of thousands of files.
  if (::syncfs(tmpfd.get()) != 0) return sys_error("syncfs " + tmp_shown);
  tmpfd.reset();

  if (::renameat(rootfd.get(), tmp_name.c_str(), rootfd.get(), sha->c_str()) != 0) {
    // A concurrent store() of the same code won the race: its tree is equal.
    if ((errno == EEXIST || errno == ENOTEMPTY) && exists(*sha)) return out;
    return sys_error("rename " + tmp_shown + " to " + out.dir);
  }
  guard.release();
  // The rename itself must be durable before a registry row points at it.
  if (::fsync(rootfd.get()) != 0) return sys_error("fsync " + root_);
  return out;
}

Result<int> CodeStore::remove_unreferenced(const std::set<std::string>& keep) {
  unique_fd rootfd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return sys_error("open " + root_);
  auto entries = list_dir(rootfd.get(), root_);
  if (!entries.ok()) return entries.error();
  int removed = 0;
  for (const auto& [name, is_dir] : *entries) {
    if (!is_dir || !is_sha256_hex(name) || keep.count(name) != 0) continue;
    // Renamed away first so a crash mid-delete never leaves a partial tree
    // under a name store() would trust.
    std::string doomed = temp_path("gc-" + name);
    if (::renameat(rootfd.get(), name.c_str(), rootfd.get(), doomed.c_str()) != 0)
      return sys_error("rename " + root_ + "/" + name + " to " + doomed);
    STOKE_TRY(remove_tree_at(rootfd.get(), doomed, root_ + "/" + doomed));
    ++removed;
  }
  if (removed > 0 && ::fsync(rootfd.get()) != 0) return sys_error("fsync " + root_);
  return removed;
}

Result<int> CodeStore::cleanup_partial() {
  unique_fd rootfd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return sys_error("open " + root_);
  auto entries = list_dir(rootfd.get(), root_);
  if (!entries.ok()) return entries.error();
  int removed = 0;
  for (const auto& [name, is_dir] : *entries) {
    if (name.compare(0, kTempPrefix.size(), kTempPrefix) != 0) continue;
    STOKE_TRY(remove_tree_at(rootfd.get(), name, root_ + "/" + name));
    ++removed;
  }
  return removed;
}

Status link_code_tree(const std::string& from, const std::string& to) {
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(from, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::filesystem::path target = std::filesystem::path(to) / std::filesystem::relative(it->path(), from);
    if (it->is_symlink()) {
      std::filesystem::copy_symlink(it->path(), target, ec);
    } else if (it->is_directory()) {
      std::filesystem::create_directory(target, ec);
      if (!ec) std::filesystem::permissions(target, std::filesystem::perms(0755), ec);
    } else {
      std::filesystem::create_hard_link(it->path(), target, ec);
      if (ec) std::filesystem::copy_file(it->path(), target, ec);  // another filesystem
    }
    if (ec) return plain_error("link the function's code", target.string() + ": " + ec.message());
  }
  if (ec) return plain_error("read the function's code", ec.message());
  return {};
}


}  // namespace stoke::agent
