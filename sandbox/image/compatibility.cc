// Whether this host can restore an image: kernel, vdso, CPU, mapped files.
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstring>

#include "sandbox/base/file_util.h"
#include "sandbox/image/image.h"

namespace stoke::image {
namespace {

std::string host_path_for(const std::string& inside, const std::vector<PathPrefix>& binds) {
  const PathPrefix* best = nullptr;
  for (const auto& b : binds) {
    const std::string& pre = b.inside;
    bool match = inside == pre || (inside.size() > pre.size() && inside.compare(0, pre.size(), pre) == 0 &&
                                   (pre.back() == '/' || inside[pre.size()] == '/'));
    if (match && (best == nullptr || pre.size() > best->inside.size())) best = &b;
  }
  if (best == nullptr) return inside;
  return best->host + inside.substr(best->inside.size());
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
  for (const auto& f : m.files()) {
    std::string path = host_path_for(f.path(), binds);
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return sys_error(step + ": mapped file " + path);
    auto differs = [&](const char* what, uint64_t image, uint64_t now) {
      return plain_error(step, "mapped file " + f.path() + (path != f.path() ? " (" + path + ")" : "") + " changed: " +
                                   what + " " + std::to_string(image) + " in the image, " + std::to_string(now) + " now");
    };
    if (st.st_dev != f.dev()) return differs("device", f.dev(), st.st_dev);
    if (st.st_ino != f.ino()) return differs("inode", f.ino(), st.st_ino);
    if (static_cast<uint64_t>(st.st_size) != f.size()) return differs("size", f.size(), static_cast<uint64_t>(st.st_size));
    if (st.st_mtim.tv_sec != f.mtime_sec() || st.st_mtim.tv_nsec != f.mtime_nsec())
      return differs("mtime (s)", static_cast<uint64_t>(f.mtime_sec()), static_cast<uint64_t>(st.st_mtim.tv_sec));
  }
  return {};
}

}  // namespace stoke::image
