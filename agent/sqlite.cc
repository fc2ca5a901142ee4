#include "agent/sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

Error sqlite_error(sqlite3* db, int rc, std::string step) {
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  detail += " (sqlite " + std::to_string(rc) + ")";
  // Only for I/O-class failures is the OS errno meaningful; otherwise it is a
  // leftover from some unrelated call and would mislead.
  int err = 0;
  int primary = rc & 0xff;
  if (db != nullptr && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL))
    err = sqlite3_system_errno(db);
  return Error{std::move(step), err, std::move(detail)};
}

// ---- statement cache --------------------------------------------------------

// Idle statements by their SQL text. Not thread-safe, like the connection.
class StatementCache {
 public:
  ~StatementCache() {
    for (auto& [sql, stmts] : idle_)
      for (sqlite3_stmt* s : stmts) sqlite3_finalize(s);
  }

  sqlite3_stmt* take(std::string_view sql) {
    auto it = idle_.find(sql);
    if (it == idle_.end() || it->second.empty()) return nullptr;
    sqlite3_stmt* s = it->second.back();
    it->second.pop_back();
    --count_;
    return s;
  }

  // Takes ownership: keeps the statement for reuse or finalizes it.
  void give_back(sqlite3_stmt* s) {
    // Reset ends the statement's read transaction (a statement left
    // mid-step would hold WAL checkpoints back); its error, if any, was
    // reported by step() already.
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    const char* sql = sqlite3_sql(s);
    if (sql == nullptr || count_ >= SqliteDb::kMaxCachedStatements) {
      sqlite3_finalize(s);
      return;
    }
    idle_[sql].push_back(s);
    ++count_;
  }

  uint64_t prepared = 0;

 private:
  // Looked up by string_view without building a string (C++20 transparent lookup).
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
  };
  std::unordered_map<std::string, std::vector<sqlite3_stmt*>, TextHash, std::equal_to<>> idle_;
  size_t count_ = 0;
};

// ---- statement --------------------------------------------------------------

SqliteStatement::SqliteStatement(SqliteStatement&& o) noexcept
    : stmt_(std::exchange(o.stmt_, nullptr)), home_(std::move(o.home_)), bind_rc_(o.bind_rc_) {}

SqliteStatement& SqliteStatement::operator=(SqliteStatement&& o) noexcept {
  if (this != &o) {
    release();
    stmt_ = std::exchange(o.stmt_, nullptr);
    home_ = std::move(o.home_);
    bind_rc_ = o.bind_rc_;
  }
  return *this;
}

SqliteStatement::~SqliteStatement() { release(); }

void SqliteStatement::release() {
  if (stmt_ == nullptr) return;
  if (home_ != nullptr) home_->give_back(stmt_);
  else sqlite3_finalize(stmt_);
  stmt_ = nullptr;
  home_.reset();
}

SqliteStatement& SqliteStatement::bind_int64(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
  return *this;
}

SqliteStatement& SqliteStatement::bind_double(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
  return *this;
}

SqliteStatement& SqliteStatement::bind_text(int index, std::string_view value) {
  int rc = sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
  return *this;
}

SqliteStatement& SqliteStatement::bind_null(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
  return *this;
}

Result<bool> SqliteStatement::step() {
  if (bind_rc_ != 0) return sqlite_error(nullptr, bind_rc_, "bind parameter");
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3* db = sqlite3_db_handle(stmt_);
  // The statement text makes the failing step findable without a debugger.
  std::string sql = sqlite3_sql(stmt_) != nullptr ? sqlite3_sql(stmt_) : "?";
  if (sql.size() > 60) sql = sql.substr(0, 57) + "...";
  return sqlite_error(db, sqlite3_extended_errcode(db), "sqlite '" + sql + "'");
}

Status SqliteStatement::run() {
  for (;;) {
    auto r = step();
    if (!r.ok()) return r.error();
    if (!*r) return {};
  }
}

int64_t SqliteStatement::column_int64(int col) const { return sqlite3_column_int64(stmt_, col); }
double SqliteStatement::column_double(int col) const { return sqlite3_column_double(stmt_, col); }

std::string SqliteStatement::column_text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  if (p == nullptr) return {};
  // column_bytes after column_text gives the length of the text form.
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

bool SqliteStatement::column_is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

// ---- connection -------------------------------------------------------------

SqliteDb::SqliteDb(sqlite3* db) : db_(db), cache_(std::make_shared<StatementCache>()) {}

SqliteDb::SqliteDb(SqliteDb&& o) noexcept
    : db_(std::exchange(o.db_, nullptr)), cache_(std::move(o.cache_)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& o) noexcept {
  if (this != &o) {
    cache_.reset();
    sqlite3_close_v2(db_);
    db_ = std::exchange(o.db_, nullptr);
    cache_ = std::move(o.cache_);
  }
  return *this;
}

// The idle statements go first (the cache's destructor, unless a live
// statement still shares it); close_v2 defers the close while any statement
// is alive instead of failing.
SqliteDb::~SqliteDb() {
  cache_.reset();
  sqlite3_close_v2(db_);
}

uint64_t SqliteDb::statements_prepared() const { return cache_ ? cache_->prepared : 0; }

Result<SqliteDb> SqliteDb::open(const std::string& path) {
  // Not through the process umask (the agent has threads; systemd's UMask
  // is 0022): an explicit mode on a file we create or fix ourselves.
  if (auto created = open_private_file(path, 0600); !created.ok()) return created.error().context("open database");
  for (const char* side : {"-wal", "-shm", "-journal"}) STOKE_TRY(restrict_file_mode(path + side, 0600));
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteDb db(raw);  // owns the handle even when the open failed (SQLite allocates one)
  if (rc != SQLITE_OK) return sqlite_error(raw, rc, "open database " + path);
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

Status SqliteDb::exec(const std::string& sql) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
  sqlite3_free(msg);  // the same text is available from sqlite3_errmsg
  if (rc != SQLITE_OK) {
    std::string shown = sql.size() > 60 ? sql.substr(0, 57) + "..." : sql;
    return sqlite_error(db_, rc, "sqlite '" + shown + "'");
  }
  return {};
}

Result<SqliteStatement> SqliteDb::prepare(std::string_view sql) {
  if (cache_ == nullptr) cache_ = std::make_shared<StatementCache>();
  if (sqlite3_stmt* cached = cache_->take(sql)) return SqliteStatement(cached, cache_);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return sqlite_error(db_, rc, "prepare '" + std::string(sql.substr(0, 60)) + "'");
  }
  ++cache_->prepared;
  return SqliteStatement(stmt, cache_);
}

Result<int64_t> SqliteDb::query_int64(std::string_view sql) {
  auto st = prepare(sql);
  if (!st.ok()) return st.error();
  auto row = st->step();
  if (!row.ok()) return row.error();
  if (!*row) return plain_error("sqlite '" + std::string(sql) + "'", "returned no row");
  return st->column_int64(0);
}

Result<std::string> SqliteDb::query_text(std::string_view sql) {
  auto st = prepare(sql);
  if (!st.ok()) return st.error();
  auto row = st->step();
  if (!row.ok()) return row.error();
  if (!*row) return plain_error("sqlite '" + std::string(sql) + "'", "returned no row");
  return st->column_text(0);
}

int64_t SqliteDb::changes() const { return sqlite3_changes64(db_); }

void SqliteDb::set_busy_timeout(int ms) { sqlite3_busy_timeout(db_, ms); }

// ---- transaction ------------------------------------------------------------

Result<SqliteTransaction> SqliteTransaction::begin(SqliteDb& db) {
  auto begin = db.prepare("BEGIN IMMEDIATE");
  if (!begin.ok()) return begin.error();
  STOKE_TRY(begin->run());
  return SqliteTransaction(&db);
}

SqliteTransaction::SqliteTransaction(SqliteTransaction&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}

SqliteTransaction::~SqliteTransaction() {
  // SQLite may already have rolled back by itself (some I/O errors do);
  // only an open transaction can be rolled back.
  if (db_ != nullptr && sqlite3_get_autocommit(db_->get()) == 0) (void)db_->exec("ROLLBACK");
}

Status SqliteTransaction::commit() {
  if (db_ == nullptr) return plain_error("commit", "no transaction is open");
  auto commit = db_->prepare("COMMIT");
  if (!commit.ok()) return commit.error();
  STOKE_TRY(commit->run());
  db_ = nullptr;
  return {};
}

}  // namespace stoke::agent
