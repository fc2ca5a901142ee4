// The agent's durable state: functions, their versions, and activations, in
// one SQLite database under the state dir.
//
// Crash safety. The database runs in WAL mode with synchronous=FULL, and every
// write is one IMMEDIATE transaction, so once a call that writes has returned
// OK its change survives kill -9 of the agent (and power loss, as far as the
// disk honours fsync), and a write interrupted by a crash is wholly absent.
// On start the agent calls fail_interrupted_activations() because the
// sandboxes of activations that were running died with it.
//
// Deletion removes rows. delete_function() drops the function and all of its
// versions in one transaction; creating the same name later starts again at
// version 1. Activations are deleted only by prune_activations() and
// prune_activations_over_bytes() (the agent's retention policy), never by
// delete_function(): each activation row carries
// everything it reports (function name, version, times, result, logs), so a
// deleted function's activations stay readable and listable by name. Code
// blobs of deleted functions and of versions that are no longer current
// become unreferenced (see referenced_code()) and are collected by
// CodeStore::remove_unreferenced at the agent's next start.
//
// Enums are stored as their proto numbers, which proto3 keeps stable.
//
// Thread-safety: one SQLite connection per Registry, every public method takes
// the Registry's mutex for its whole duration. Calls from worker threads are
// therefore safe and serialised (each write waits for its own fsync).
//
// Errors: see ErrorKind below; the agent maps kinds to v1::Error codes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/running_journal.h"
#include "agent/sqlite.h"
#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"

namespace stoke::agent {

// ---- error kinds ----------------------------------------------------------
//
// Callers must tell "no such function" from "disk failed" to answer with the
// right v1::Error code. The kind travels as Error::cause (typed, kept by
// Error::context()); the same words lead Error::detail, so the one-sentence
// message reads naturally:
//   kNotFound       "get function 'x': not found"
//   kAlreadyExists  "create function 'x': already exists"
//   kInvalid        "code archive entry '../a': invalid: has a '..' component"
// Any error without such a cause (SQLite, system calls) is kIo, whatever its
// words say. The code store uses the same kinds.
enum class ErrorKind {
  kIo,             // storage or system failure: v1::Error::INTERNAL
  kNotFound,       // v1::Error::NOT_FOUND
  kAlreadyExists,  // v1::Error::ALREADY_EXISTS
  kInvalid,        // the caller's input is wrong: v1::Error::INVALID_ARGUMENT
  kNotEmpty,       // it still holds something (a namespace its functions): FAILED_PRECONDITION
};

// An Error of the given kind; why (optional) follows the tag.
Error kind_error(ErrorKind kind, std::string step, std::string why = {});
ErrorKind error_kind(const Error& error);
// kIo -> INTERNAL, kNotFound -> NOT_FOUND, and so on.
v1::Error::Code error_code(ErrorKind kind);

// ---- registry ---------------------------------------------------------------

// What create_function and update_function store as a version. The agent
// resolves defaults (memory, timeout, concurrency, entry) before calling:
// the registry records exactly what it is given.
struct FunctionRecord {
  v1::Runtime runtime = v1::RUNTIME_UNSPECIFIED;
  std::string entry;
  uint64_t memory_bytes = 0;
  uint64_t timeout_ms = 0;
  uint32_t concurrency = 0;
  std::map<std::string, std::string> env;
  std::string code_sha256;  // 64 lowercase hex digits, from CodeStore::store
  uint64_t code_size = 0;
  std::string parameters_json = "{}";   // a JSON object (checked by the agent)
  std::string annotations_json = "[]";  // a JSON array (checked by the agent)
};

class Registry {
 public:
  // PRAGMA user_version of a database this code writes; see migrate() in
  // registry.cc for the steps from older versions.
  static constexpr int kSchemaVersion = 4;
  static constexpr uint32_t kDefaultListLimit = 20;
  static constexpr uint32_t kMaxListLimit = 1000;

  // Opens or creates the database at path (its directory must exist) and
  // brings its schema up to kSchemaVersion. A database written by a newer
  // agent (user_version > kSchemaVersion) is refused, never downgraded.
  static Result<std::unique_ptr<Registry>> open(const std::string& path);

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Version 1 of a new function. kInvalid for a bad name or record,
  // kAlreadyExists when the name is taken.
  Result<v1::Function> create_function(const std::string& name, const FunctionRecord& record);
  // Version n+1 becomes current; earlier versions stay. kNotFound if no such function.
  Result<v1::Function> update_function(const std::string& name, const FunctionRecord& record);
  // The current version.
  Result<v1::Function> get_function(const std::string& name);
  // Any kept version (e.g. the one an activation ran). kNotFound if absent.
  Result<v1::Function> get_function_version(const std::string& name, uint32_t version);
  // Current versions, ordered by name: every function, or those of one
  // namespace (qualified names, agent/names.h).
  Result<v1::FunctionList> list_functions();
  Result<v1::FunctionList> list_functions_in(const std::string& ns);
  // Removes the function and its versions; its activations remain.
  Status delete_function(const std::string& name);
  // code_sha256 of every function's current version: what the code store must
  // not collect (older versions keep their records, not their code).
  Result<std::set<std::string>> referenced_code();

  // Records a started activation (state running). Needs activation_id,
  // function and start_ms; kAlreadyExists if the id was used before.
  Status begin_activation(const v1::Activation& activation);
  // Records the final state: every field of the message, state finished.
  // status must be set; end_ms 0 is replaced by now. Works whether or not
  // begin_activation was called for this id (it overwrites the running row).
  Status finish_activation(const v1::Activation& activation);
  // Group commit: activation writes (each a begin or a finish as above) in
  // one transaction, so a busy node pays one commit for many activations.
  // Returns one status per write, in order: a write the registry refuses (an
  // id used before, a missing field) fails alone; a storage failure fails
  // every write of the batch and stores none.
  struct ActivationWrite {
    enum Kind { kBegin, kFinish } kind = kBegin;
    v1::Activation record;
  };
  std::vector<Status> write_activations(const std::vector<ActivationWrite>& batch);
  // The full record, result and logs included. kNotFound if absent.
  Result<v1::Activation> get_activation(const std::string& id);
  // Newest first (start_ms, then id, descending), for one function or all
  // (function ""). limit 0 means kDefaultListLimit; larger than kMaxListLimit
  // is clamped. Pass "" or the previous next_page_token; the token is a
  // position, not an offset, so pages stay stable while new activations
  // arrive. Logs and result are omitted, as the API's list promises.
  // kInvalid for a token this registry did not make.
  // With `in_namespace`, only that namespace's activations (when `function`
  // is "").
  Result<v1::ActivationList> list_activations(const std::string& function, uint32_t limit,
                                              const std::string& page_token,
                                              const std::optional<std::string>& in_namespace = std::nullopt);
  Result<uint64_t> count_activations();

  // Namespaces other than the default one (which always exists and has a
  // row only once it is given a key). kAlreadyExists for a taken name or
  // uuid; kNotFound for an unknown name; delete is kNotEmpty while the
  // namespace has functions (its activations stay, like a function's).
  struct NamespaceRow {
    std::string name;
    std::string key_uuid;
    std::string key_sha256;
    int64_t created_ms = 0;
  };
  Status create_namespace(const NamespaceRow& row);
  Result<std::vector<NamespaceRow>> list_namespaces();
  Status set_namespace_key(const std::string& name, const std::string& key_uuid, const std::string& key_sha256);
  Status delete_namespace(const std::string& name);

  // Retention (docs/security/storage.md, finding 14): deletes finished
  // activations that started before `started_before_ms` (0: none by age), and
  // beyond the newest `keep_per_function` of each function (0: no count
  // limit), at most `batch` rows per call so that the registry's mutex is
  // never held for long; call again while it returns `batch`. Running
  // activations are never deleted. Returns how many rows went.
  Result<uint64_t> prune_activations(int64_t started_before_ms, uint32_t keep_per_function, uint32_t batch = 5000);
  // Deletes up to `batch` of the oldest finished activations of each function
  // whose stored records (results and logs) exceed `keep_bytes_per_function`,
  // never its newest; returns how many went.
  Result<uint64_t> prune_activations_over_bytes(uint64_t keep_bytes_per_function, uint32_t batch = 5000);

  // At start, after a crash: every activation still running becomes
  // finished with status INTERNAL_ERROR, result {"error": reason} and end_ms
  // now (duration and usage stay as recorded: unknown). Returns how many.
  // `journaled`: activations the running journal (agent/running_journal.h)
  // says began, whose rows may never have been written; each one without a
  // row is recorded as such a failed activation too, one with a row is
  // treated by its row. One transaction.
  Result<int> fail_interrupted_activations(const std::string& reason,
                                           const std::vector<JournalEntry>& journaled = {});

  // PRAGMA user_version of the open database.
  Result<int> schema_version();
  // PRAGMA integrity_check; an error quoting SQLite's findings unless "ok".
  Status check_integrity();
  // Statements SQLite has parsed since open (the rest came from the cache).
  uint64_t statements_parsed();

 private:
  explicit Registry(SqliteDb db) : db_(std::move(db)) {}
  Result<v1::Function> read_function(const std::string& name, int64_t version);  // mutex held

  std::mutex mu_;
  SqliteDb db_;
  // Current versions as read, for the invoke path (one lookup per
  // activation). This registry is the database's only writer (the agent
  // holds the state dir's lock): entries are dropped when their function is
  // created, updated or deleted, so a hit is always what a read would give.
  static constexpr size_t kCurrentCacheEntries = 4096;
  std::unordered_map<std::string, v1::Function> current_;
};

}  // namespace stoke::agent
