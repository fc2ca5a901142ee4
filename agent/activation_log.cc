#include "agent/activation_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/checksum.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {

namespace {

// Record header (host byte order: the file never leaves this machine):
//   magic "stka" (4), payload length (u32), FNV-1a 64 of the payload (u64).
constexpr char kMagic[4] = {'s', 't', 'k', 'a'};
constexpr size_t kHeaderBytes = 16;
// A record is at most a 1 MiB result, 1 MiB of logs and its fields.
constexpr uint32_t kMaxPayload = 64u << 20;

// The header of the payload that follows it in `record` (kHeaderBytes reserved at its start).
void put_header(std::string& record) {
  const char* payload = record.data() + kHeaderBytes;
  const size_t n = record.size() - kHeaderBytes;
  std::memcpy(record.data(), kMagic, 4);
  auto len = static_cast<uint32_t>(n);
  std::memcpy(record.data() + 4, &len, 4);
  uint64_t sum = fnv1a64(payload, n);
  std::memcpy(record.data() + 8, &sum, 8);
}

}  // namespace

std::string encode_log_record(const v1::Activation& record) {
  std::string out(kHeaderBytes, '\0');
  record.AppendToString(&out);
  put_header(out);
  return out;
}

std::vector<v1::Activation> decode_log_records(const std::string& bytes, size_t* valid_bytes) {
  std::vector<v1::Activation> out;
  size_t at = 0;
  while (bytes.size() - at >= kHeaderBytes) {
    const char* h = bytes.data() + at;
    if (std::memcmp(h, kMagic, 4) != 0) break;
    uint32_t len = 0;
    uint64_t sum = 0;
    std::memcpy(&len, h + 4, 4);
    std::memcpy(&sum, h + 8, 8);
    if (len > kMaxPayload || bytes.size() - at - kHeaderBytes < len) break;  // torn
    const char* payload = h + kHeaderBytes;
    if (fnv1a64(payload, len) != sum) break;
    v1::Activation a;
    if (!a.ParseFromArray(payload, static_cast<int>(len))) break;
    out.push_back(std::move(a));
    at += kHeaderBytes + len;
  }
  if (valid_bytes) *valid_bytes = at;
  return out;
}

Result<std::unique_ptr<ActivationLog>> ActivationLog::open(const std::string& path) {
  // Results and logs of functions: the owner's alone, like the registry.
  auto owned = open_private_file(path, 0600);
  if (!owned.ok()) return owned.error().context("open the activation log");
  struct stat st {};
  if (::fstat(owned->get(), &st) != 0) return sys_error("stat " + path);
  return std::unique_ptr<ActivationLog>(
      new ActivationLog(std::move(owned.value()), path, static_cast<uint64_t>(st.st_size)));
}

Result<std::vector<v1::Activation>> ActivationLog::read_all() const {
  std::string bytes;
  bytes.resize(end_);
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::pread(fd_.get(), bytes.data() + got, bytes.size() - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read the activation log " + path_);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  return decode_log_records(bytes);
}

Status ActivationLog::append(const v1::Activation& record) {
  buf_.assign(kHeaderBytes, '\0');
  if (!record.AppendToString(&buf_)) return plain_error("log activation " + record.activation_id(), "cannot serialize it");
  if (buf_.size() - kHeaderBytes > kMaxPayload)
    return plain_error("log activation " + record.activation_id(), "the record is over 64 MiB");
  put_header(buf_);
  size_t done = 0;
  while (done < buf_.size()) {
    ssize_t n = ::pwrite(fd_.get(), buf_.data() + done, buf_.size() - done, static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Not counted: end_ stays, and the next append writes over the part
      // that reached the file (reading stops at it if none comes).
      return n < 0 ? Status(sys_error("log activation " + record.activation_id() + " in " + path_))
                   : Status(plain_error("log activation " + record.activation_id() + " in " + path_, "no progress"));
    }
    done += static_cast<size_t>(n);
  }
  end_ += buf_.size();
  return {};
}

Status ActivationLog::clear() {
  if (::ftruncate(fd_.get(), 0) != 0) return sys_error("empty the activation log " + path_);
  end_ = 0;
  return {};
}

}  // namespace stoke::agent
