// A thin RAII layer over SQLite's C API: one connection, prepared statements,
// and an IMMEDIATE transaction that rolls back unless committed.
//
// Only what the registry needs. Every failure becomes an Error naming the step
// and carrying SQLite's message (and the OS errno when SQLite saw one), so a
// full disk reads as "commit: disk I/O error (sqlite 778): No space left ...".
// The classes are not thread-safe; the owner serialises access (Registry
// holds one connection behind a mutex).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "sandbox/base/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace stoke::agent {

// An Error for a failed SQLite call with result code rc on connection db
// (db may be null when there is no connection yet).
Error sqlite_error(sqlite3* db, int rc, std::string step);

class StatementCache;

// A prepared statement. One that came from SqliteDb::prepare goes back to its
// connection's cache when destroyed (reset, bindings cleared), so the next
// prepare of the same text skips SQLite's parser and planner: the registry's
// statements run on every activation.
class SqliteStatement {
 public:
  SqliteStatement() = default;
  explicit SqliteStatement(sqlite3_stmt* stmt, std::shared_ptr<StatementCache> home = nullptr)
      : stmt_(stmt), home_(std::move(home)) {}
  SqliteStatement(SqliteStatement&& o) noexcept;
  SqliteStatement& operator=(SqliteStatement&& o) noexcept;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;
  ~SqliteStatement();

  // Parameters are 1-based, as in SQLite. Binding cannot fail for valid
  // indexes; a bad index is remembered and reported by step() so call sites
  // stay one line each. Separate names (not overloads) because an int
  // argument would be ambiguous between int64 and double.
  SqliteStatement& bind_int64(int index, int64_t value);
  SqliteStatement& bind_double(int index, double value);
  SqliteStatement& bind_text(int index, std::string_view value);  // copied
  SqliteStatement& bind_null(int index);

  // true when a row is ready to read, false when the statement is done.
  Result<bool> step();
  // Steps until done, for statements that return no rows we care about.
  Status run();

  // Columns are 0-based, valid after step() returned true.
  int64_t column_int64(int col) const;
  double column_double(int col) const;
  std::string column_text(int col) const;  // "" for NULL
  bool column_is_null(int col) const;

 private:
  void release();

  sqlite3_stmt* stmt_ = nullptr;
  std::shared_ptr<StatementCache> home_;  // where it goes back to; null: finalized
  int bind_rc_ = 0;  // first failing sqlite3_bind_* result, 0 when all succeeded
};

class SqliteDb {
 public:
  SqliteDb() = default;
  SqliteDb(SqliteDb&& o) noexcept;
  SqliteDb& operator=(SqliteDb&& o) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  // Opens (creating if needed) a database file for reading and writing.
  // SQLITE_OPEN_NOMUTEX: the owner serialises access, SQLite need not.
  // The database, its -wal, -shm and -journal are root's secrets (function
  // env, results, logs): the file is created 0600 before SQLite sees it
  // (SQLite gives its side files the main file's mode), and files an older
  // version left wider are tightened to 0600 here, on every open.
  static Result<SqliteDb> open(const std::string& path);

  // Runs one or more ';'-separated statements that return no rows we need.
  Status exec(const std::string& sql);
  // A statement for one SQL text, from the cache when one is idle. The cache
  // holds at most kMaxCachedStatements idle statements; it is shared with the
  // statements (not tied to this object's address), so moving a SqliteDb or
  // destroying it before its statements is safe.
  Result<SqliteStatement> prepare(std::string_view sql);
  static constexpr size_t kMaxCachedStatements = 128;
  // Statements parsed by SQLite since open (cache misses): for tests.
  uint64_t statements_prepared() const;
  // Result of a one-row, one-column query such as "PRAGMA user_version".
  Result<int64_t> query_int64(std::string_view sql);
  Result<std::string> query_text(std::string_view sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t changes() const;
  // How long a statement waits for another connection's lock before SQLITE_BUSY.
  void set_busy_timeout(int ms);

  sqlite3* get() const { return db_; }

 private:
  explicit SqliteDb(sqlite3* db);
  sqlite3* db_ = nullptr;
  std::shared_ptr<StatementCache> cache_;
};

// BEGIN IMMEDIATE on construction (the write lock is taken up front, so two
// writers never deadlock upgrading a read lock); ROLLBACK in the destructor
// unless commit() succeeded. Every registry write goes through one of these
// so a crash leaves a write either wholly there or wholly absent.
class SqliteTransaction {
 public:
  static Result<SqliteTransaction> begin(SqliteDb& db);
  SqliteTransaction(SqliteTransaction&& o) noexcept;
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction();

  Status commit();

 private:
  explicit SqliteTransaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_ = nullptr;  // null once committed or moved from
};

}  // namespace stoke::agent
