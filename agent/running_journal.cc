#include "agent/running_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/checksum.h"
#include "sandbox/base/file_util.h"

namespace stoke::agent {

namespace {

// Slot layout (host byte order: the file never leaves this machine):
//   0  magic "stkj"           4  format (u16) = 1     6  name length (u16)
//   8  checksum (u64, FNV-1a of bytes 16..255)
//   16 start_ms (i64)        24 version (u32)        28 zero
//   32 activation id (32 bytes)                      64 function name
constexpr char kMagic[4] = {'s', 't', 'k', 'j'};
constexpr uint16_t kFormat = 1;
constexpr size_t kIdAt = 32, kNameAt = 64;
static_assert(kNameAt + RunningJournal::kMaxFunctionBytes == RunningJournal::kSlotBytes);

}  // namespace

bool encode_journal_slot(const JournalEntry& e, unsigned char (&slot)[RunningJournal::kSlotBytes]) {
  if (e.activation_id.size() != RunningJournal::kIdBytes || e.function.empty() ||
      e.function.size() > RunningJournal::kMaxFunctionBytes)
    return false;
  std::memset(slot, 0, sizeof slot);
  std::memcpy(slot, kMagic, 4);
  std::memcpy(slot + 4, &kFormat, 2);
  auto name_len = static_cast<uint16_t>(e.function.size());
  std::memcpy(slot + 6, &name_len, 2);
  std::memcpy(slot + 16, &e.start_ms, 8);
  std::memcpy(slot + 24, &e.version, 4);
  std::memcpy(slot + kIdAt, e.activation_id.data(), RunningJournal::kIdBytes);
  std::memcpy(slot + kNameAt, e.function.data(), e.function.size());
  uint64_t sum = fnv1a64(slot + 16, RunningJournal::kSlotBytes - 16);
  std::memcpy(slot + 8, &sum, 8);
  return true;
}

bool decode_journal_slot(const unsigned char* slot, JournalEntry* out) {
  if (std::memcmp(slot, kMagic, 4) != 0) return false;
  uint16_t format = 0, name_len = 0;
  std::memcpy(&format, slot + 4, 2);
  std::memcpy(&name_len, slot + 6, 2);
  if (format != kFormat || name_len == 0 || name_len > RunningJournal::kMaxFunctionBytes) return false;
  uint64_t sum = 0;
  std::memcpy(&sum, slot + 8, 8);
  if (sum != fnv1a64(slot + 16, RunningJournal::kSlotBytes - 16)) return false;
  JournalEntry e;
  std::memcpy(&e.start_ms, slot + 16, 8);
  std::memcpy(&e.version, slot + 24, 4);
  e.activation_id.assign(reinterpret_cast<const char*>(slot + kIdAt), RunningJournal::kIdBytes);
  e.function.assign(reinterpret_cast<const char*>(slot + kNameAt), name_len);
  *out = std::move(e);
  return true;
}

Result<std::unique_ptr<RunningJournal>> RunningJournal::open(const std::string& path) {
  // Activation ids and function names: the owner's alone, like the registry.
  auto owned = open_private_file(path, 0600);
  if (!owned.ok()) return owned.error().context("open the running journal");
  return std::unique_ptr<RunningJournal>(new RunningJournal(std::move(owned.value()), path));
}

Result<std::vector<JournalEntry>> RunningJournal::entries() const {
  std::vector<JournalEntry> out;
  unsigned char buf[64 * kSlotBytes];
  off_t at = 0;
  for (;;) {
    ssize_t n = ::pread(fd_.get(), buf, sizeof buf, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read the running journal " + path_);
    }
    if (n == 0) break;
    // A partial slot at the end (a write cut short) is skipped like a torn one.
    for (size_t i = 0; i + kSlotBytes <= static_cast<size_t>(n); i += kSlotBytes) {
      JournalEntry e;
      if (decode_journal_slot(buf + i, &e)) out.push_back(std::move(e));
    }
    at += n;
    if (static_cast<size_t>(n) < sizeof buf) break;
  }
  return out;
}

Status RunningJournal::clear() {
  if (::ftruncate(fd_.get(), 0) != 0) return sys_error("empty the running journal " + path_);
  free_.clear();
  next_ = 0;
  return {};
}

Result<uint32_t> RunningJournal::begin(const JournalEntry& e) {
  unsigned char slot_bytes[kSlotBytes];
  if (!encode_journal_slot(e, slot_bytes))
    return plain_error("journal activation " + e.activation_id,
                       "an entry needs a 32-character id and a function name of 1 to " +
                           std::to_string(kMaxFunctionBytes) + " bytes");
  uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = next_++;
  }
  const auto at = static_cast<off_t>(slot) * static_cast<off_t>(kSlotBytes);
  ssize_t n;
  do n = ::pwrite(fd_.get(), slot_bytes, kSlotBytes, at);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(kSlotBytes)) {
    Error err = n < 0 ? sys_error("journal activation " + e.activation_id + " in " + path_)
                      : plain_error("journal activation " + e.activation_id + " in " + path_, "short write");
    free_.push_back(slot);  // nothing (whole) was written there
    return err;
  }
  return slot;
}

void RunningJournal::end(uint32_t slot) {
  if (slot < next_) free_.push_back(slot);
}

}  // namespace stoke::agent
