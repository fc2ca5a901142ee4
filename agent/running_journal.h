// Activations that have begun, on disk before they start: the crash record.
//
// An activation starts (and an async caller gets its id) once its entry is
// in this file: one pwrite of a fixed-size slot on the loop thread, with no
// thread hand-off and no SQLite transaction in between. Its registry row
// comes later, from the group-commit writer (agent/activation_writer.h),
// which folds a short activation's begin into its finish: one row written,
// not two. After a crash the next agent reads the file back and records
// every entry without a finished row as failed
// (Registry::fail_interrupted_activations), as it does the rows left
// `running`. Like the registry's WAL under synchronous=NORMAL, a written slot
// survives the agent's crash (kill -9: it is in the page cache), not a power
// loss.
//
// A slot is reused once its activation's finished row is committed; the old
// entry is simply overwritten (a leftover entry of a finished activation is
// harmless: its row says finished). Each slot carries a checksum, so a torn
// or foreign slot is skipped, never trusted. Not thread-safe: the loop's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

struct JournalEntry {
  std::string activation_id;
  std::string function;
  uint32_t version = 0;
  int64_t start_ms = 0;
};

class RunningJournal {
 public:
  static constexpr size_t kSlotBytes = 256;
  // Longest function name a slot holds (names are at most 128 bytes).
  static constexpr size_t kMaxFunctionBytes = 192;
  static constexpr size_t kIdBytes = 32;

  // Opens (creating, mode 0600) the journal at `path`.
  static Result<std::unique_ptr<RunningJournal>> open(const std::string& path);

  // The entries in the file: valid slots only (empty, torn or foreign ones
  // are skipped). Read once at start, before any begin().
  Result<std::vector<JournalEntry>> entries() const;
  // Empties the file, once its entries are recorded in the registry.
  Status clear();

  // Writes `e` into a free slot (growing the file when none is) and returns
  // the slot. Refuses an entry a slot cannot hold.
  Result<uint32_t> begin(const JournalEntry& e);
  // The slot may be reused: its activation's finished row is committed.
  void end(uint32_t slot);

  size_t slots_in_use() const { return next_ - free_.size(); }

 private:
  explicit RunningJournal(unique_fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  unique_fd fd_;
  std::string path_;
  std::vector<uint32_t> free_;  // slots below next_ that may be reused
  uint32_t next_ = 0;           // slots [0, next_) have been handed out
};

// The bytes of one slot for `e`, and back (pure; tested without a file).
// decode_journal_slot returns false for anything but a valid slot.
bool encode_journal_slot(const JournalEntry& e, unsigned char (&slot)[RunningJournal::kSlotBytes]);
bool decode_journal_slot(const unsigned char* slot, JournalEntry* out);

}  // namespace stoke::agent
