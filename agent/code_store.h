// Function code on disk, content-addressed: <state>/code/<sha256>/ holds the
// extracted tree of one upload, and is never changed once it exists.
//
// Crash safety. An upload is extracted into a temp dir next to the final one
// (<root>/.tmp-*), every file and directory is fsynced, and only then is the
// temp dir renamed to <sha256>; so a <sha256> dir is always complete, and a
// crash leaves at most a temp dir, which cleanup_partial() removes at start.
// Collection renames a tree away to a temp name before deleting it, for the
// same reason.
//
// Safety. Archives come from API clients and the agent runs as root, so
// extraction trusts nothing: paths may not be absolute or contain '..';
// files are created with openat(O_NOFOLLOW) under an fd of the temp dir and
// never through a symlink; symlinks must stay inside the code tree (checked
// lexically per entry, then once more against the finished tree, following
// links, since "s -> ." plus "t -> s/s/.." passes a lexical check alone);
// hardlinks, devices, FIFOs and sockets are refused; total size and entry
// count are capped. Modes are normalised for the unprivileged sandbox uid:
// directories 0755, files 0755 if any execute bit was set else 0644 (setuid,
// setgid and sticky dropped); owners are not restored. Every refusal is an
// ErrorKind::kInvalid error naming the entry.
//
// Thread-safety: store() may run concurrently, also for the same code (each
// call extracts into its own temp dir; the first rename wins, the others
// discard theirs). cleanup_partial() and remove_unreferenced() must not run
// while store() runs or between store() and the registry commit that
// references the code; the agent calls them at start, before serving.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>

#include "agent/registry.h"  // ErrorKind: the same error kinds as the registry
#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"

namespace stoke::agent {

struct StoredCode {
  std::string sha256;  // 64 lowercase hex digits
  std::string dir;     // <root>/<sha256>: mount this into the sandbox
  uint64_t size = 0;   // bytes of regular files after extraction
};

// From the agent's config (max_code_bytes, max_code_unpacked_bytes): every
// store() enforces them, whatever the caller checked before.
struct CodeLimits {
  uint64_t max_total_bytes = 256ull << 20;  // uncompressed, summed over files
  uint64_t max_entries = 100000;            // archive entries of any type
  uint64_t max_upload_bytes = 48ull << 20;  // the upload as sent (archive or single file)
};

class CodeStore {
 public:
  // root is <state>/code; it is created if missing and made 0700 (root only).
  static Result<CodeStore> open(const std::string& root, CodeLimits limits = {});

  // Stores config.code (config.code_format, and config.code_file_name for
  // SINGLE_FILE) unless the same upload is already stored. The sha256 covers
  // the format, the file name (SINGLE_FILE only) and the bytes, so the same
  // bytes uploaded as a different file name are a different tree. A
  // SINGLE_FILE is stored as <dir>/<code_file_name> with mode 0755.
  Result<StoredCode> store(const v1::FunctionConfig& config);

  // <root>/<sha256> (whether or not it exists).
  std::string path_for(const std::string& sha256) const;
  bool exists(const std::string& sha256) const;

  // Deletes every stored tree whose sha256 is not in keep. Returns how many.
  Result<int> remove_unreferenced(const std::set<std::string>& keep);
  // Deletes temp dirs left by a crash. Returns how many.
  Result<int> cleanup_partial();

  const std::string& root() const { return root_; }
  const CodeLimits& limits() const { return limits_; }

 private:
  CodeStore(std::string root, CodeLimits limits) : root_(std::move(root)), limits_(limits) {}
  std::string temp_path(const std::string& tag) const;

  std::string root_;
  CodeLimits limits_;
};

// The content address of an upload, as store() computes it (exposed for
// tests and for the agent to check a stored tree against a version).
Result<std::string> code_sha256(const v1::FunctionConfig& config);

// Gives a sandbox the function's code in a directory of its own (a prewarmed
// instance's /code, a function zygote's): hard links to the unpacked code
// (the store's files are immutable; same filesystem), copies across
// filesystems; directories are created 0755.
Status link_code_tree(const std::string& from, const std::string& to);

}  // namespace stoke::agent
