#include "sandbox/base/file_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox/base/unique_fd.h"

namespace stoke {

Result<std::string> read_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status write_file(const std::string& path, std::string_view data) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  ssize_t n = ::write(fd.get(), data.data(), data.size());
  if (n < 0) return sys_error("write '" + std::string(data) + "' to " + path);
  if (static_cast<size_t>(n) != data.size()) return plain_error("write " + path, "short write");
  return {};
}

Status write_file_atomic(const std::string& path, std::string_view data, unsigned mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) return sys_error("create " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::unlink(tmp.c_str());
      return sys_error("write " + tmp, e);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error("fsync " + tmp, e);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error("rename " + tmp + " to " + path, e);
  }
  return {};
}

Status make_dirs(const std::string& path, unsigned mode) {
  if (path.empty()) return plain_error("mkdir", "empty path");
  for (size_t pos = 1;; ++pos) {
    pos = path.find('/', pos);
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return sys_error("mkdir " + part);
    if (pos == std::string::npos) break;
  }
  return {};
}

Status make_private_dir(const std::string& path, unsigned mode) {
  STOKE_TRY(make_dirs(path, mode));
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return sys_error("open directory " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path);
  if (st.st_uid != ::geteuid())
    return plain_error("directory " + path, "is owned by uid " + std::to_string(st.st_uid) + ", not by us");
  if ((st.st_mode & 07777) != mode && ::fchmod(fd.get(), mode) != 0) return sys_error("chmod " + path);
  return {};
}

Status restrict_file_mode(const std::string& path, unsigned mode) {
  // O_NONBLOCK: a FIFO planted under the name must not block us.
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    return sys_error("open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path);
  if (!S_ISREG(st.st_mode)) return plain_error(path, "is not a regular file");
  if ((st.st_mode & 07777) != mode && ::fchmod(fd.get(), mode) != 0) return sys_error("chmod " + path);
  return {};
}

Result<unique_fd> open_private_file(const std::string& path, unsigned mode) {
  // O_NONBLOCK: a FIFO planted under the name must not block the open.
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode));
  if (!fd) return sys_error("open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path);
  if (!S_ISREG(st.st_mode)) return plain_error(path, "is not a regular file");
  if ((st.st_mode & 07777) != mode && ::fchmod(fd.get(), mode) != 0) return sys_error("chmod " + path);
  // Back to blocking I/O: a regular file's reads and writes never wait on O_NONBLOCK anyway.
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) return sys_error("fcntl " + path);
  return fd;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Result<unique_fd> named_then_unlinked_file_in(const std::string& dir) {
  std::string path = dir + "/.unnamed-XXXXXX";
  unique_fd fd(::mkostemp(path.data(), O_CLOEXEC));  // 0600
  if (!fd) return sys_error("create a temp file in " + dir);
  if (::unlink(path.c_str()) != 0) {
    int saved = errno;
    return sys_error("unlink the temp file " + path, saved);
  }
  return fd;
}

Result<unique_fd> unnamed_file_in(const std::string& dir) {
  unique_fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd) return fd;
  // EOPNOTSUPP: the filesystem has no tmpfile; EISDIR/EINVAL: the kernel
  // or filesystem does not know the flag.
  if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return named_then_unlinked_file_in(dir);
  return sys_error("create a temp file in " + dir);
}

}  // namespace stoke
