// Finished activation records, on disk before their reply: the registry's
// write-ahead log for activations.
//
// A finished activation is appended here by the loop thread (one pwrite of
// the serialized record, a length and a checksum before it) and its caller
// gets the reply right away; the registry row is written afterwards by the
// group-commit writer, off the reply's path. A SQLite commit and two thread
// hand-offs cost the reply ~180 µs at low load; with the append instead, the
// agent's whole own time per warm call measured 41-54 µs p50.
// Like the registry's WAL under synchronous=NORMAL, an appended record
// survives the agent's crash (kill -9: the page cache has it), not a power
// loss. At start the agent replays the log into the registry (upserts:
// replaying a record already there changes nothing) and empties it; while it
// runs, the log is emptied whenever every record in it is in the registry
// and it has grown past a threshold. Reading stops at the first record that
// is torn or fails its checksum (a crash cut the last append short).
// Not thread-safe: the loop's.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

class ActivationLog {
 public:
  // Opens (creating, mode 0600) the log at `path`; appends go after what it holds.
  static Result<std::unique_ptr<ActivationLog>> open(const std::string& path);

  // Every whole, valid record from the start, in order.
  Result<std::vector<v1::Activation>> read_all() const;
  // Appends one record. On failure nothing of it counts: the next append
  // writes over whatever part of it reached the file.
  Status append(const v1::Activation& record);
  // Empties the file (its records are all in the registry).
  Status clear();
  uint64_t size_bytes() const { return end_; }

 private:
  ActivationLog(unique_fd fd, std::string path, uint64_t end) : fd_(std::move(fd)), path_(std::move(path)), end_(end) {}
  unique_fd fd_;
  std::string path_;
  uint64_t end_ = 0;  // where the next record goes
  std::string buf_;   // reused for each append
};

// One record's bytes in the log (header + payload), and the parse of a whole
// log's bytes (pure; tested without a file): stops at the first torn or
// corrupt record.
std::string encode_log_record(const v1::Activation& record);
std::vector<v1::Activation> decode_log_records(const std::string& bytes, size_t* valid_bytes = nullptr);

}  // namespace stoke::agent
