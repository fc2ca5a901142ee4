#include "rootfs/lean_rootfs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>

namespace stoke {
namespace {

// Top-level directories shared read-only with the host (merged-/usr hosts have
// most of these as symlinks into /usr; then the sandbox gets the same links).
const std::vector<std::string> kSystemDirs = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

// Host /etc entries a program needs at run time: the loader cache, time zone,
// the alternatives links behind many /usr/bin names, CA certificates, name
// databases, Python's site config. Everything else in the host's /etc (shadow,
// ssh keys, machine-id, credentials, ldconfig's inputs) stays out; each entry
// costs a bind per sandbox, so the list is kept to what programs read.
const std::vector<std::string> kEtcFromHost = {
    "/etc/ld.so.cache", "/etc/localtime", "/etc/timezone", "/etc/alternatives", "/etc/ssl/certs",
    "/etc/mime.types", "/etc/protocols", "/etc/services", "/etc/os-release", "/etc/python3",
    "/etc/python3.11"};

std::string join(const std::string& root, const std::string& path) {
  if (root == "/" || root.empty()) return path;
  return root + path;
}

}  // namespace

const std::vector<std::string>& lean_rootfs_system_paths() {
  static const std::vector<std::string> paths = [] {
    std::vector<std::string> p = kSystemDirs;
    p.insert(p.end(), {"/etc", "/dev", "/proc"});
    return p;
  }();
  return paths;
}

std::vector<RootfsEntry> host_lean_rootfs(const LeanRootfsOptions& options) {
  std::vector<RootfsEntry> out;
  auto add_host = [&](const std::string& path) {
    std::string host = join(options.host_root, path);
    struct stat st;
    if (lstat(host.c_str(), &st) != 0) return;
    if (S_ISLNK(st.st_mode)) {
      char buf[PATH_MAX];
      ssize_t n = readlink(host.c_str(), buf, sizeof buf - 1);
      if (n <= 0) return;
      out.push_back({RootfsEntry::Kind::kSymlink, path, std::string(buf, static_cast<size_t>(n)), 0777});
    } else if (S_ISDIR(st.st_mode)) {
      out.push_back({RootfsEntry::Kind::kBindDir, path, host, 0755});
    } else if (S_ISREG(st.st_mode)) {
      out.push_back({RootfsEntry::Kind::kBindFile, path, host, 0644});
    }
  };

  for (const auto& dir : kSystemDirs) add_host(dir);

  out.push_back({RootfsEntry::Kind::kDir, "/etc", "", 0755});
  out.push_back({RootfsEntry::Kind::kDir, "/etc/ssl", "", 0755});
  for (const auto& path : kEtcFromHost) add_host(path);

  // Generated identity and name-service files: the sandbox's root is uid 0
  // inside its user namespace; nobody is the overflow id unmapped files show as.
  out.push_back({RootfsEntry::Kind::kFile, "/etc/passwd",
                 "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"});
  out.push_back({RootfsEntry::Kind::kFile, "/etc/group", "root:x:0:\nnogroup:x:65534:\n"});
  out.push_back({RootfsEntry::Kind::kFile, "/etc/hostname", options.hostname + "\n"});
  out.push_back({RootfsEntry::Kind::kFile, "/etc/hosts",
                 "127.0.0.1\tlocalhost " + options.hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"});
  out.push_back({RootfsEntry::Kind::kFile, "/etc/nsswitch.conf",
                 "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n"});
  // No network beyond loopback, so no resolver.
  out.push_back({RootfsEntry::Kind::kFile, "/etc/resolv.conf", ""});
  return out;
}

}  // namespace stoke
