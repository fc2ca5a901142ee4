#include "agent/sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

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

// ---- statement --------------------------------------------------------------

SqliteStatement::SqliteStatement(SqliteStatement&& o) noexcept
    : stmt_(std::exchange(o.stmt_, nullptr)), bind_rc_(o.bind_rc_) {}

SqliteStatement& SqliteStatement::operator=(SqliteStatement&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(stmt_);
    stmt_ = std::exchange(o.stmt_, nullptr);
    bind_rc_ = o.bind_rc_;
  }
  return *this;
}

SqliteStatement::~SqliteStatement() { sqlite3_finalize(stmt_); }

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

SqliteDb::SqliteDb(SqliteDb&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& o) noexcept {
  if (this != &o) {
    sqlite3_close_v2(db_);
    db_ = std::exchange(o.db_, nullptr);
  }
  return *this;
}

// close_v2 defers the close if a statement is still alive instead of failing.
SqliteDb::~SqliteDb() { sqlite3_close_v2(db_); }

Result<SqliteDb> SqliteDb::open(const std::string& path) {
  // Not through the process umask (the agent has threads; systemd's UMask
  // is 0022): an explicit mode on a file we create or fix ourselves.
  {
    unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
    if (!fd) return sys_error("create database " + path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path);
    if (!S_ISREG(st.st_mode)) return plain_error("open database " + path, "not a regular file");
    if ((st.st_mode & 07777) != 0600 && ::fchmod(fd.get(), 0600) != 0) return sys_error("chmod " + path);
  }
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
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return sqlite_error(db_, rc, "prepare '" + std::string(sql.substr(0, 60)) + "'");
  }
  return SqliteStatement(stmt);
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
  STOKE_TRY(db.exec("BEGIN IMMEDIATE"));
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
  STOKE_TRY(db_->exec("COMMIT"));
  db_ = nullptr;
  return {};
}

}  // namespace stoke::agent
