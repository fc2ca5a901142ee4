// Whether this host can restore an image: kernel, vdso, CPU, mapped files.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string_view>

#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/image/image.h"

namespace stoke::image {
namespace {

// A path as the kernel reports a mapping: absolute, no empty, "." or ".."
// component. Anything else in a manifest did not come from the kernel.
bool is_plain_absolute(const std::string& path) {
  if (path.size() < 2 || path[0] != '/') return false;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    std::string_view part(path.data() + pos, end - pos);
    if (part.empty() || part == "." || part == "..") return false;
    pos = end + 1;
  }
  return true;
}

// The bind `inside` came through (longest matching prefix), or null.
const PathPrefix* bind_for(const std::string& inside, const std::vector<PathPrefix>& binds) {
  const PathPrefix* best = nullptr;
  for (const auto& b : binds) {
    const std::string& pre = b.inside;
    if (pre.empty()) continue;
    bool match = inside == pre || (inside.size() > pre.size() && inside.compare(0, pre.size(), pre) == 0 &&
                                   (pre.back() == '/' || inside[pre.size()] == '/'));
    if (match && (best == nullptr || pre.size() > best->inside.size())) best = &b;
  }
  return best;
}

// stat() of the file the sandbox mapped, found beneath its bind's host
// directory only: the path comes from an untrusted dump, so no symlink, no
// ".." and no magic link may lead the root agent anywhere else; O_PATH opens
// nothing (no FIFO or device open can block or have effects).
Status stat_beneath(const PathPrefix& bind, const std::string& inside, struct stat* st) {
  unique_fd root(::open(bind.host.c_str(), O_PATH | O_CLOEXEC));
  if (!root) return sys_error("open bind source " + bind.host);
  std::string rest = inside.substr(bind.inside.size());
  while (!rest.empty() && rest[0] == '/') rest.erase(0, 1);
  if (rest.empty()) {
    if (::fstat(root.get(), st) != 0) return sys_error("stat bind source " + bind.host);
    return {};
  }
  open_how how{};
  how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, root.get(), rest.c_str(), &how, sizeof how);
  if (fd < 0) return sys_error("mapped file " + inside);
  unique_fd file(static_cast<int>(fd));
  if (::fstat(file.get(), st) != 0) return sys_error("stat mapped file " + inside);
  return {};
}

}  // namespace

Result<HostIdentity> host_identity() {
  HostIdentity id;
  struct utsname u;
  if (uname(&u) != 0) return sys_error("uname");
  id.kernel_release = u.release;
  id.kernel_version = u.version;
  read_cpu_identity(&id.cpu);
  auto maps = read_file("/proc/self/maps");
  if (!maps.ok()) return maps.error();
  size_t pos = 0;
  const std::string& text = maps.value();
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    unsigned long long start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx", &start, &end) != 2) continue;
    auto ends_with = [&](const char* name) {
      size_t n = std::strlen(name);
      return line.size() >= n && line.compare(line.size() - n, n, name) == 0;
    };
    if (ends_with("[vvar]")) id.vvar_size = end - start;
    if (ends_with("[vvar_vclock]")) id.vvar_vclock_size = end - start;
    if (ends_with("[vdso]")) {
      id.vdso_size = end - start;
      id.vdso_hash = hash64(reinterpret_cast<const void*>(start), end - start);
    }
  }
  if (id.vdso_size == 0) return plain_error("host identity", "this process has no [vdso]");
  return id;
}

Status check_compatible(const Manifest& m, const std::vector<PathPrefix>& binds) {
  const std::string step = "image not restorable here";
  auto host = host_identity();
  if (!host.ok()) return host.error();
  const HostIdentity& h = host.value();
  const auto& k = m.kernel();
  if (k.release() != h.kernel_release || k.version() != h.kernel_version)
    return plain_error(step, "kernel differs: image " + k.release() + " " + k.version() + ", host " +
                                 h.kernel_release + " " + h.kernel_version);
  if (k.vdso_size() != h.vdso_size || k.vvar_size() != h.vvar_size || k.vvar_vclock_size() != h.vvar_vclock_size)
    return plain_error(step, "vdso layout differs: image vvar/vvar_vclock/vdso " + std::to_string(k.vvar_size()) + "/" +
                                 std::to_string(k.vvar_vclock_size()) + "/" + std::to_string(k.vdso_size()) +
                                 " bytes, host " + std::to_string(h.vvar_size) + "/" +
                                 std::to_string(h.vvar_vclock_size) + "/" + std::to_string(h.vdso_size));
  if (k.vdso_hash() != hex64(h.vdso_hash))
    return plain_error(step, "vdso differs: image hash " + k.vdso_hash() + ", host " + hex64(h.vdso_hash));
  const uint32_t* words = reinterpret_cast<const uint32_t*>(&h.cpu);
  bool cpu_same = m.cpu().words_size() == 16;
  for (int i = 0; cpu_same && i < 16; ++i) cpu_same = m.cpu().words(i) == words[i];
  if (!cpu_same) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "CPU differs: image signature %#x xcr0 %#llx xsave %u, host signature %#x xcr0 %#llx xsave %u",
                  m.cpu().signature(), static_cast<unsigned long long>(m.cpu().xcr0()), m.cpu().xsave_size(),
                  h.cpu.signature, static_cast<unsigned long long>(h.cpu.xcr0), h.cpu.xsave_size);
    return plain_error(step, buf);
  }
  // Mapped files: only those the sandbox got through one of `binds`, each
  // checked beneath its bind's host directory. The messages name the
  // sandbox's path and what differs, not the host's device and inode numbers.
  for (const auto& f : m.files()) {
    const PathPrefix* bind = is_plain_absolute(f.path()) ? bind_for(f.path(), binds) : nullptr;
    if (bind == nullptr)
      return plain_error(step, "mapped file " + f.path() + " did not come from the sandbox's binds");
    struct stat st;
    if (Status found = stat_beneath(*bind, f.path(), &st); !found.ok()) return found.error().context(step);
    auto differs = [&](const char* what) {
      return plain_error(step, "mapped file " + f.path() + " changed since the image was made: " + what);
    };
    if (!S_ISREG(st.st_mode)) return differs("not a regular file");
    if (st.st_dev != f.dev()) return differs("device");
    if (st.st_ino != f.ino()) return differs("inode");
    if (static_cast<uint64_t>(st.st_size) != f.size()) return differs("size");
    if (st.st_mtim.tv_sec != f.mtime_sec() || st.st_mtim.tv_nsec != f.mtime_nsec()) return differs("mtime");
  }
  return {};
}

}  // namespace stoke::image
