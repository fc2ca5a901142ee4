#include "agent/registry.h"

#include <chrono>
#include <iterator>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/names.h"

namespace stoke::agent {

// ---- error kinds ------------------------------------------------------------

namespace {

constexpr std::string_view kTagNotFound = "not found";
constexpr std::string_view kTagAlreadyExists = "already exists";
constexpr std::string_view kTagInvalid = "invalid";
constexpr std::string_view kTagNotEmpty = "not empty";

}  // namespace

Error kind_error(ErrorKind kind, std::string step, std::string why) {
  std::string_view tag;
  ErrorCause cause = ErrorCause::kUnspecified;
  switch (kind) {
    case ErrorKind::kNotFound:
      tag = kTagNotFound;
      cause = ErrorCause::kNotFound;
      break;
    case ErrorKind::kAlreadyExists:
      tag = kTagAlreadyExists;
      cause = ErrorCause::kAlreadyExists;
      break;
    case ErrorKind::kInvalid:
      tag = kTagInvalid;
      cause = ErrorCause::kInvalid;
      break;
    case ErrorKind::kNotEmpty:
      tag = kTagNotEmpty;
      cause = ErrorCause::kNotEmpty;
      break;
    case ErrorKind::kIo: return plain_error(std::move(step), std::move(why));
  }
  // The words say it to people; the cause says it to code (error_kind).
  std::string detail(tag);
  if (!why.empty()) detail += ": " + why;
  Error e = plain_error(std::move(step), std::move(detail));
  e.cause = cause;
  return e;
}

ErrorKind error_kind(const Error& error) {
  switch (error.cause) {
    case ErrorCause::kNotFound: return ErrorKind::kNotFound;
    case ErrorCause::kAlreadyExists: return ErrorKind::kAlreadyExists;
    case ErrorCause::kInvalid: return ErrorKind::kInvalid;
    case ErrorCause::kNotEmpty: return ErrorKind::kNotEmpty;
    default: return ErrorKind::kIo;
  }
}

v1::Error::Code error_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound: return v1::Error::NOT_FOUND;
    case ErrorKind::kAlreadyExists: return v1::Error::ALREADY_EXISTS;
    case ErrorKind::kInvalid: return v1::Error::INVALID_ARGUMENT;
    case ErrorKind::kNotEmpty: return v1::Error::FAILED_PRECONDITION;
    case ErrorKind::kIo: break;
  }
  return v1::Error::INTERNAL;
}

// ---- schema -----------------------------------------------------------------

namespace {

// kMigrations[i] takes a database from user_version i to i+1. Append a step
// for every schema change; never edit a shipped one, since databases in the
// field have already run it. STRICT tables make SQLite refuse a value of the
// wrong type instead of storing it silently.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the first schema.
    R"sql(
CREATE TABLE functions (
  name            TEXT PRIMARY KEY NOT NULL,
  current_version INTEGER NOT NULL,
  created_ms      INTEGER NOT NULL,
  updated_ms      INTEGER NOT NULL
) STRICT;
CREATE TABLE versions (
  function     TEXT NOT NULL,
  version      INTEGER NOT NULL,
  runtime      INTEGER NOT NULL,
  entry        TEXT NOT NULL,
  memory_bytes INTEGER NOT NULL,
  timeout_ms   INTEGER NOT NULL,
  concurrency  INTEGER NOT NULL,
  env_json     TEXT NOT NULL,
  code_sha256  TEXT NOT NULL,
  code_size    INTEGER NOT NULL,
  created_ms   INTEGER NOT NULL,
  PRIMARY KEY (function, version)
) STRICT, WITHOUT ROWID;
CREATE TABLE activations (
  id                TEXT PRIMARY KEY NOT NULL,
  function          TEXT NOT NULL,
  version           INTEGER NOT NULL,
  state             TEXT NOT NULL CHECK (state IN ('running', 'finished')),
  start_ms          INTEGER NOT NULL,
  end_ms            INTEGER NOT NULL,
  duration_ms       REAL NOT NULL,
  wait_ms           REAL NOT NULL,
  init_ms           REAL NOT NULL,
  start_kind        INTEGER NOT NULL,
  status            INTEGER NOT NULL,
  result_json       TEXT NOT NULL,
  logs              TEXT NOT NULL,
  logs_truncated    INTEGER NOT NULL,
  cpu_user_ms       REAL NOT NULL,
  cpu_system_ms     REAL NOT NULL,
  memory_peak_bytes INTEGER NOT NULL,
  billed_ms         INTEGER NOT NULL,
  gb_seconds        REAL NOT NULL
) STRICT;
CREATE INDEX activations_by_function ON activations (function, start_ms, id);
CREATE INDEX activations_by_start ON activations (start_ms, id);
CREATE INDEX activations_running ON activations (state) WHERE state = 'running';
)sql",
    // 1 -> 2: each activation's stored size (result + logs), for the
    // per-function byte cap of retention (finding #14).
    R"sql(
ALTER TABLE activations ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE activations SET stored_bytes = length(CAST(result_json AS BLOB)) + length(CAST(logs AS BLOB));
)sql",
    // 2 -> 3: the sandbox's peak task count (cgroup pids.peak); 0 for older records.
    R"sql(
ALTER TABLE activations ADD COLUMN pids_peak INTEGER NOT NULL DEFAULT 0;
)sql",
    // 3 -> 4: namespaces other than the default one, each with its key (the
    // secret's SHA-256 only). Functions of a namespace are named
    // "<namespace>/<name>" (agent/names.h). Versions gain default parameters
    // and annotations (OpenWhisk's bound parameters, web-export, ...).
    R"sql(
CREATE TABLE namespaces (
  name       TEXT PRIMARY KEY NOT NULL,
  key_uuid   TEXT NOT NULL UNIQUE,
  key_sha256 TEXT NOT NULL,
  created_ms INTEGER NOT NULL
) STRICT;
ALTER TABLE versions ADD COLUMN parameters_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE versions ADD COLUMN annotations_json TEXT NOT NULL DEFAULT '[]';
)sql",
};
constexpr int kMigrationCount = static_cast<int>(std::size(kMigrations));
static_assert(kMigrationCount == Registry::kSchemaVersion, "one migration step per schema version");

// Brings the schema to kSchemaVersion in one transaction: a crash mid-way
// leaves the old version, and the next start runs the steps again.
Status migrate(SqliteDb& db) {
  auto tx = SqliteTransaction::begin(db);
  if (!tx.ok()) return tx.error().context("migrate registry");
  auto current = db.query_int64("PRAGMA user_version");
  if (!current.ok()) return current.error().context("migrate registry");
  if (*current > kMigrationCount)
    return kind_error(ErrorKind::kInvalid, "open registry",
                      "schema version " + std::to_string(*current) + " is newer than this agent's (" +
                          std::to_string(kMigrationCount) + "); refusing to downgrade");
  if (*current == kMigrationCount) return {};  // nothing to do; the transaction rolls back
  for (int64_t v = *current; v < kMigrationCount; ++v) {
    auto st = db.exec(kMigrations[v]);
    if (!st.ok()) return st.error().context("migrate registry " + std::to_string(v) + " -> " + std::to_string(v + 1));
  }
  // user_version lives in the database header and is written transactionally.
  STOKE_TRY(db.exec("PRAGMA user_version = " + std::to_string(kMigrationCount)));
  return tx->commit();
}

// ---- helpers ----------------------------------------------------------------

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Invalid UTF-8 (possible in logs) is replaced rather than thrown on: storing
// a slightly altered line beats losing the activation record.
std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

Status check_name(const std::string& step, const std::string& name) {
  auto st = check_qualified_name(name);
  if (!st.ok()) return kind_error(ErrorKind::kInvalid, step, st.error().message());
  return {};
}

Status check_record(const std::string& step, const FunctionRecord& r) {
  if (r.runtime == v1::RUNTIME_UNSPECIFIED || !v1::Runtime_IsValid(r.runtime))
    return kind_error(ErrorKind::kInvalid, step, "runtime must be python, node or exec");
  if (!is_sha256_hex(r.code_sha256))
    return kind_error(ErrorKind::kInvalid, step, "code_sha256 must be 64 lowercase hex digits");
  return {};
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The columns of a version row, in the order row_to_function reads them.
constexpr const char* kVersionColumns =
    "v.function, v.version, v.runtime, v.entry, v.memory_bytes, v.timeout_ms, v.concurrency, "
    "v.env_json, v.code_sha256, v.code_size, v.created_ms, v.parameters_json, v.annotations_json";

Result<v1::Function> row_to_function(const SqliteStatement& st) {
  v1::Function f;
  f.set_name(st.column_text(0));
  f.set_version(static_cast<uint32_t>(st.column_int64(1)));
  f.set_runtime(static_cast<v1::Runtime>(st.column_int64(2)));
  f.set_entry(st.column_text(3));
  f.set_memory_bytes(static_cast<uint64_t>(st.column_int64(4)));
  f.set_timeout_ms(static_cast<uint64_t>(st.column_int64(5)));
  f.set_concurrency(static_cast<uint32_t>(st.column_int64(6)));
  auto env = nlohmann::json::parse(st.column_text(7), nullptr, /*allow_exceptions=*/false);
  if (!env.is_object())
    return plain_error("read function " + quoted(f.name()), "stored env is not a JSON object");
  for (const auto& [k, v] : env.items()) {
    if (!v.is_string()) return plain_error("read function " + quoted(f.name()), "stored env value is not a string");
    (*f.mutable_env())[k] = v.get<std::string>();
  }
  f.set_code_sha256(st.column_text(8));
  f.set_code_size(static_cast<uint64_t>(st.column_int64(9)));
  f.set_created_ms(st.column_int64(10));
  f.set_parameters_json(st.column_text(11));
  f.set_annotations_json(st.column_text(12));
  return f;
}

v1::Function record_to_function(const std::string& name, uint32_t version, int64_t created_ms,
                                const FunctionRecord& r) {
  v1::Function f;
  f.set_name(name);
  f.set_version(version);
  f.set_runtime(r.runtime);
  f.set_entry(r.entry);
  f.set_memory_bytes(r.memory_bytes);
  f.set_timeout_ms(r.timeout_ms);
  f.set_concurrency(r.concurrency);
  for (const auto& [k, v] : r.env) (*f.mutable_env())[k] = v;
  f.set_code_sha256(r.code_sha256);
  f.set_code_size(r.code_size);
  f.set_created_ms(created_ms);
  f.set_parameters_json(r.parameters_json);
  f.set_annotations_json(r.annotations_json);
  return f;
}

Status insert_version(SqliteDb& db, const std::string& name, uint32_t version, int64_t created_ms,
                      const FunctionRecord& r) {
  auto st = db.prepare(
      "INSERT INTO versions (function, version, runtime, entry, memory_bytes, timeout_ms, concurrency, "
      "env_json, code_sha256, code_size, created_ms, parameters_json, annotations_json) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
  if (!st.ok()) return st.error();
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [k, v] : r.env) env[k] = v;
  st->bind_text(1, name)
      .bind_int64(2, version)
      .bind_int64(3, r.runtime)
      .bind_text(4, r.entry)
      .bind_int64(5, static_cast<int64_t>(r.memory_bytes))
      .bind_int64(6, static_cast<int64_t>(r.timeout_ms))
      .bind_int64(7, r.concurrency)
      .bind_text(8, dump_json(env))
      .bind_text(9, r.code_sha256)
      .bind_int64(10, static_cast<int64_t>(r.code_size))
      .bind_int64(11, created_ms)
      .bind_text(12, r.parameters_json)
      .bind_text(13, r.annotations_json);
  return st->run();
}

// Activation columns in the order row_to_activation reads them. The list
// query stops before result_json and logs, which it omits.
constexpr const char* kActivationColumns =
    "id, function, version, start_ms, end_ms, duration_ms, wait_ms, init_ms, start_kind, status, "
    "logs_truncated, cpu_user_ms, cpu_system_ms, memory_peak_bytes, billed_ms, gb_seconds, pids_peak";
constexpr const char* kActivationBodyColumns = "result_json, logs";
constexpr int kActivationBodyFirst = 17;

Result<v1::Activation> row_to_activation(const SqliteStatement& st, bool with_body) {
  v1::Activation a;
  a.set_activation_id(st.column_text(0));
  a.set_function(st.column_text(1));
  a.set_version(static_cast<uint32_t>(st.column_int64(2)));
  a.set_start_ms(st.column_int64(3));
  a.set_end_ms(st.column_int64(4));
  a.set_duration_ms(st.column_double(5));
  a.set_wait_ms(st.column_double(6));
  a.set_init_ms(st.column_double(7));
  a.set_start_kind(static_cast<v1::StartKind>(st.column_int64(8)));
  a.set_status(static_cast<v1::ActivationStatus>(st.column_int64(9)));
  a.set_logs_truncated(st.column_int64(10) != 0);
  auto* u = a.mutable_usage();
  u->set_cpu_user_ms(st.column_double(11));
  u->set_cpu_system_ms(st.column_double(12));
  u->set_memory_peak_bytes(static_cast<uint64_t>(st.column_int64(13)));
  u->set_billed_ms(static_cast<uint64_t>(st.column_int64(14)));
  u->set_gb_seconds(st.column_double(15));
  u->set_pids_peak(static_cast<uint64_t>(st.column_int64(16)));
  if (with_body) {
    a.set_result_json(st.column_text(kActivationBodyFirst));
    auto logs = nlohmann::json::parse(st.column_text(kActivationBodyFirst + 1), nullptr, false);
    if (!logs.is_array())
      return plain_error("read activation " + quoted(a.activation_id()), "stored logs are not a JSON array");
    for (const auto& line : logs) {
      if (!line.is_string())
        return plain_error("read activation " + quoted(a.activation_id()), "stored log line is not a string");
      a.add_logs(line.get<std::string>());
    }
  }
  return a;
}

// INSERT (begin) and INSERT OR REPLACE (finish) share the column binding.
// kInsert: a new row. kUpsert: the row, new or replacing the running one in
// place. Only the columns that change between begin and finish are set, so
// the indexes on id, function and start_ms are left alone (INSERT OR REPLACE
// would delete and re-add the row in every index).
// kInsertIfAbsent: a row that exists already is left as it is.
enum class RowWrite { kInsert, kUpsert, kInsertIfAbsent };

Status write_activation(SqliteDb& db, RowWrite how, const v1::Activation& a, const char* state) {
  static const std::string kInsert =
      "INSERT INTO activations (id, function, version, state, start_ms, end_ms, duration_ms, wait_ms, "
      "init_ms, start_kind, status, result_json, logs, logs_truncated, cpu_user_ms, cpu_system_ms, "
      "memory_peak_bytes, billed_ms, gb_seconds, stored_bytes, pids_peak) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
      "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";
  static const std::string kUpsert =
      kInsert +
      " ON CONFLICT(id) DO UPDATE SET version = excluded.version, state = excluded.state, end_ms = excluded.end_ms, "
      "duration_ms = excluded.duration_ms, wait_ms = excluded.wait_ms, init_ms = excluded.init_ms, "
      "start_kind = excluded.start_kind, status = excluded.status, result_json = excluded.result_json, "
      "logs = excluded.logs, logs_truncated = excluded.logs_truncated, cpu_user_ms = excluded.cpu_user_ms, "
      "cpu_system_ms = excluded.cpu_system_ms, memory_peak_bytes = excluded.memory_peak_bytes, "
      "billed_ms = excluded.billed_ms, gb_seconds = excluded.gb_seconds, stored_bytes = excluded.stored_bytes, "
      "pids_peak = excluded.pids_peak";
  static const std::string kInsertIfAbsent = kInsert + " ON CONFLICT(id) DO NOTHING";
  auto st = db.prepare(how == RowWrite::kInsert ? kInsert : how == RowWrite::kUpsert ? kUpsert : kInsertIfAbsent);
  if (!st.ok()) return st.error();
  nlohmann::json logs = nlohmann::json::array();
  for (const auto& line : a.logs()) logs.push_back(line);
  const std::string logs_text = dump_json(logs);
  const auto& u = a.usage();
  st->bind_text(1, a.activation_id())
      .bind_text(2, a.function())
      .bind_int64(3, a.version())
      .bind_text(4, state)
      .bind_int64(5, a.start_ms())
      .bind_int64(6, a.end_ms())
      .bind_double(7, a.duration_ms())
      .bind_double(8, a.wait_ms())
      .bind_double(9, a.init_ms())
      .bind_int64(10, a.start_kind())
      .bind_int64(11, a.status())
      .bind_text(12, a.result_json())
      .bind_text(13, logs_text)
      .bind_int64(14, a.logs_truncated() ? 1 : 0)
      .bind_double(15, u.cpu_user_ms())
      .bind_double(16, u.cpu_system_ms())
      .bind_int64(17, static_cast<int64_t>(u.memory_peak_bytes()))
      .bind_int64(18, static_cast<int64_t>(u.billed_ms()))
      .bind_double(19, u.gb_seconds())
      .bind_int64(20, static_cast<int64_t>(a.result_json().size() + logs_text.size()))
      .bind_int64(21, static_cast<int64_t>(u.pids_peak()));
  return st->run();
}

// Page tokens are the position of the last row returned, "<start_ms>:<id>",
// hex-encoded so clients treat them as opaque.
std::string encode_token(int64_t start_ms, const std::string& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw = std::to_string(start_ms) + ":" + id;
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

bool decode_token(const std::string& token, int64_t* start_ms, std::string* id) {
  if (token.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string raw;
  for (size_t i = 0; i < token.size(); i += 2) {
    int hi = nibble(token[i]), lo = nibble(token[i + 1]);
    if (hi < 0 || lo < 0) return false;
    raw += static_cast<char>(hi << 4 | lo);
  }
  size_t colon = raw.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == raw.size()) return false;
  int64_t v = 0;
  size_t i = 0;
  bool negative = raw[0] == '-';
  if (negative) i = 1;
  if (i == colon) return false;
  for (; i < colon; ++i) {
    if (raw[i] < '0' || raw[i] > '9' || v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (raw[i] - '0');
  }
  *start_ms = negative ? -v : v;
  *id = raw.substr(colon + 1);
  return true;
}

}  // namespace

// ---- registry -----------------------------------------------------------------

namespace {

// For the span of one write (outside any transaction): WAL commits are
// fsynced, as with synchronous=FULL.
class DurableWrites {
 public:
  explicit DurableWrites(SqliteDb& db) : db_(db) { (void)db_.exec("PRAGMA synchronous = FULL"); }
  ~DurableWrites() { (void)db_.exec("PRAGMA synchronous = NORMAL"); }
  DurableWrites(const DurableWrites&) = delete;
  DurableWrites& operator=(const DurableWrites&) = delete;

 private:
  SqliteDb& db_;
};

}  // namespace

Result<std::unique_ptr<Registry>> Registry::open(const std::string& path) {
  auto db = SqliteDb::open(path);
  if (!db.ok()) return db.error();
  // Another process (an operator's sqlite3 shell, a backup) may briefly hold
  // the lock; wait for it rather than fail the API call.
  db->set_busy_timeout(5000);
  auto mode = db->query_text("PRAGMA journal_mode = WAL");
  if (!mode.ok()) return mode.error().context("open registry " + path);
  if (*mode != "wal")
    return plain_error("open registry " + path, "cannot switch to WAL mode (journal_mode is " + *mode + ")");
  // NORMAL in WAL mode: a committed write survives the agent's crash (kill -9:
  // the WAL is in the page cache) without an fsync per activation, which would
  // cost ~0.2 ms twice per invocation. Function writes, rare and precious, are
  // fsynced too (DurableWrites below), so they also survive power loss.
  auto sync = db->exec("PRAGMA synchronous = NORMAL");
  if (!sync.ok()) return sync.error().context("open registry " + path);
  auto mig = migrate(*db);
  if (!mig.ok()) return mig.error().context("open registry " + path);
  return std::unique_ptr<Registry>(new Registry(std::move(db.value())));
}

Result<v1::Function> Registry::read_function(const std::string& name, int64_t version) {
  auto st = db_.prepare(std::string("SELECT ") + kVersionColumns +
                        " FROM versions v WHERE v.function = ?1 AND v.version = ?2");
  if (!st.ok()) return st.error();
  st->bind_text(1, name).bind_int64(2, version);
  auto row = st->step();
  if (!row.ok()) return row.error();
  if (!*row)
    return kind_error(ErrorKind::kNotFound, "function " + quoted(name) + " version " + std::to_string(version));
  return row_to_function(*st);
}

Result<v1::Function> Registry::create_function(const std::string& name, const FunctionRecord& record) {
  std::string step = "create function " + quoted(name);
  STOKE_TRY(check_name(step, name));
  STOKE_TRY(check_record(step, record));
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  auto exists = db_.prepare("SELECT 1 FROM functions WHERE name = ?1");
  if (!exists.ok()) return exists.error().context(step);
  exists->bind_text(1, name);
  auto row = exists->step();
  if (!row.ok()) return row.error().context(step);
  if (*row) return kind_error(ErrorKind::kAlreadyExists, step);
  int64_t now = now_ms();
  auto ins = db_.prepare(
      "INSERT INTO functions (name, current_version, created_ms, updated_ms) VALUES (?1, 1, ?2, ?2)");
  if (!ins.ok()) return ins.error().context(step);
  ins->bind_text(1, name).bind_int64(2, now);
  auto st = ins->run();
  if (!st.ok()) return st.error().context(step);
  st = insert_version(db_, name, 1, now, record);
  if (!st.ok()) return st.error().context(step);
  st = tx->commit();
  current_.erase(name);
  if (!st.ok()) return st.error().context(step);
  return record_to_function(name, 1, now, record);
}

Result<v1::Function> Registry::update_function(const std::string& name, const FunctionRecord& record) {
  std::string step = "update function " + quoted(name);
  STOKE_TRY(check_name(step, name));
  STOKE_TRY(check_record(step, record));
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  auto cur = db_.prepare("SELECT current_version FROM functions WHERE name = ?1");
  if (!cur.ok()) return cur.error().context(step);
  cur->bind_text(1, name);
  auto row = cur->step();
  if (!row.ok()) return row.error().context(step);
  if (!*row) return kind_error(ErrorKind::kNotFound, step);
  int64_t previous = cur->column_int64(0);
  if (previous >= UINT32_MAX) return kind_error(ErrorKind::kInvalid, step, "no version numbers left");
  auto version = static_cast<uint32_t>(previous + 1);
  int64_t now = now_ms();
  auto st = insert_version(db_, name, version, now, record);
  if (!st.ok()) return st.error().context(step);
  auto upd = db_.prepare("UPDATE functions SET current_version = ?2, updated_ms = ?3 WHERE name = ?1");
  if (!upd.ok()) return upd.error().context(step);
  upd->bind_text(1, name).bind_int64(2, version).bind_int64(3, now);
  st = upd->run();
  if (!st.ok()) return st.error().context(step);
  st = tx->commit();
  current_.erase(name);
  if (!st.ok()) return st.error().context(step);
  return record_to_function(name, version, now, record);
}

Result<v1::Function> Registry::get_function(const std::string& name) {
  std::string step = "get function " + quoted(name);
  STOKE_TRY(check_name(step, name));
  std::lock_guard lock(mu_);
  if (auto hit = current_.find(name); hit != current_.end()) return hit->second;
  auto st = db_.prepare(std::string("SELECT ") + kVersionColumns +
                        " FROM functions f JOIN versions v ON v.function = f.name AND v.version = f.current_version"
                        " WHERE f.name = ?1");
  if (!st.ok()) return st.error().context(step);
  st->bind_text(1, name);
  auto row = st->step();
  if (!row.ok()) return row.error().context(step);
  if (!*row) return kind_error(ErrorKind::kNotFound, step);
  auto fn = row_to_function(*st);
  if (fn.ok()) {
    if (current_.size() >= kCurrentCacheEntries) current_.clear();  // bounded; refilled on demand
    current_.emplace(name, fn.value());
  }
  return fn;
}

Result<v1::Function> Registry::get_function_version(const std::string& name, uint32_t version) {
  STOKE_TRY(check_name("get function " + quoted(name), name));
  std::lock_guard lock(mu_);
  return read_function(name, version);
}

namespace {

// A WHERE condition on `column` (a qualified function name) for the
// functions of `ns`, with ?1 bound by bind_namespace: the default namespace's
// names have no '/', another's start with "ns/" (a range, so an index on the
// column serves it: '0' follows '/').
std::string in_namespace_sql(const std::string& column, const std::string& ns, int param) {
  if (ns == kDefaultNamespace) return "instr(" + column + ", '/') = 0";
  const std::string p = "?" + std::to_string(param);
  return "(" + column + " > " + p + " || '/' AND " + column + " < " + p + " || '0')";
}

}  // namespace

Result<v1::FunctionList> Registry::list_functions() { return list_functions_in(""); }

Result<v1::FunctionList> Registry::list_functions_in(const std::string& ns) {
  std::lock_guard lock(mu_);
  std::string where = ns.empty() ? "" : " WHERE " + in_namespace_sql("f.name", ns, 1);
  auto st = db_.prepare(std::string("SELECT ") + kVersionColumns +
                        " FROM functions f JOIN versions v ON v.function = f.name AND v.version = f.current_version" +
                        where + " ORDER BY f.name");
  if (!st.ok()) return st.error().context("list functions");
  if (!ns.empty() && ns != kDefaultNamespace) st->bind_text(1, ns);
  v1::FunctionList out;
  for (;;) {
    auto row = st->step();
    if (!row.ok()) return row.error().context("list functions");
    if (!*row) break;
    auto f = row_to_function(*st);
    if (!f.ok()) return f.error();
    *out.add_functions() = std::move(f.value());
  }
  return out;
}

Status Registry::delete_function(const std::string& name) {
  std::string step = "delete function " + quoted(name);
  STOKE_TRY(check_name(step, name));
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  auto del = db_.prepare("DELETE FROM functions WHERE name = ?1");
  if (!del.ok()) return del.error().context(step);
  del->bind_text(1, name);
  auto st = del->run();
  if (!st.ok()) return st.error().context(step);
  if (db_.changes() == 0) return kind_error(ErrorKind::kNotFound, step);
  auto vers = db_.prepare("DELETE FROM versions WHERE function = ?1");
  if (!vers.ok()) return vers.error().context(step);
  vers->bind_text(1, name);
  st = vers->run();
  if (!st.ok()) return st.error().context(step);
  st = tx->commit();
  current_.erase(name);
  if (!st.ok()) return st.error().context(step);
  return {};
}

// ---- namespaces ---------------------------------------------------------------

Status Registry::create_namespace(const NamespaceRow& row) {
  const std::string step = "create namespace " + quoted(row.name);
  if (auto s = check_namespace_name(row.name); !s.ok()) return kind_error(ErrorKind::kInvalid, step, s.error().message());
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto exists = db_.prepare("SELECT 1 FROM namespaces WHERE name = ?1 OR key_uuid = ?2");
  if (!exists.ok()) return exists.error().context(step);
  exists->bind_text(1, row.name).bind_text(2, row.key_uuid);
  auto found = exists->step();
  if (!found.ok()) return found.error().context(step);
  if (*found) return kind_error(ErrorKind::kAlreadyExists, step);
  auto ins = db_.prepare("INSERT INTO namespaces (name, key_uuid, key_sha256, created_ms) VALUES (?1, ?2, ?3, ?4)");
  if (!ins.ok()) return ins.error().context(step);
  ins->bind_text(1, row.name).bind_text(2, row.key_uuid).bind_text(3, row.key_sha256).bind_int64(4, row.created_ms);
  if (auto st = ins->run(); !st.ok()) return st.error().context(step);
  return {};
}

Result<std::vector<Registry::NamespaceRow>> Registry::list_namespaces() {
  std::lock_guard lock(mu_);
  auto st = db_.prepare("SELECT name, key_uuid, key_sha256, created_ms FROM namespaces ORDER BY name");
  if (!st.ok()) return st.error().context("list namespaces");
  std::vector<NamespaceRow> out;
  for (;;) {
    auto row = st->step();
    if (!row.ok()) return row.error().context("list namespaces");
    if (!*row) break;
    out.push_back({st->column_text(0), st->column_text(1), st->column_text(2), st->column_int64(3)});
  }
  return out;
}

Status Registry::set_namespace_key(const std::string& name, const std::string& key_uuid,
                                   const std::string& key_sha256) {
  const std::string step = "set the key of namespace " + quoted(name);
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto up = db_.prepare("UPDATE namespaces SET key_uuid = ?2, key_sha256 = ?3 WHERE name = ?1");
  if (!up.ok()) return up.error().context(step);
  up->bind_text(1, name).bind_text(2, key_uuid).bind_text(3, key_sha256);
  if (auto st = up->run(); !st.ok()) return st.error().context(step);
  if (db_.changes() == 0) return kind_error(ErrorKind::kNotFound, step);
  return {};
}

Status Registry::delete_namespace(const std::string& name) {
  const std::string step = "delete namespace " + quoted(name);
  if (auto s = check_namespace_name(name); !s.ok()) return kind_error(ErrorKind::kInvalid, step, s.error().message());
  std::lock_guard lock(mu_);
  DurableWrites durable(db_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  auto count = db_.prepare("SELECT count(*) FROM functions WHERE " + in_namespace_sql("name", name, 1));
  if (!count.ok()) return count.error().context(step);
  if (name != kDefaultNamespace) count->bind_text(1, name);
  auto row = count->step();
  if (!row.ok()) return row.error().context(step);
  if (int64_t n = count->column_int64(0); n > 0)
    return kind_error(ErrorKind::kNotEmpty, step,
                      "it still has " + std::to_string(n) + " function" + (n == 1 ? "" : "s") + "; delete them first");
  auto del = db_.prepare("DELETE FROM namespaces WHERE name = ?1");
  if (!del.ok()) return del.error().context(step);
  del->bind_text(1, name);
  if (auto st = del->run(); !st.ok()) return st.error().context(step);
  if (db_.changes() == 0) return kind_error(ErrorKind::kNotFound, step);
  if (auto st = tx->commit(); !st.ok()) return st.error().context(step);
  return {};
}

Result<std::set<std::string>> Registry::referenced_code() {
  std::lock_guard lock(mu_);
  // Current versions only: nothing runs an older version's code once the
  // agent restarts, so an update's previous trees are collected then.
  auto st = db_.prepare(
      "SELECT DISTINCT v.code_sha256 FROM versions v JOIN functions f "
      "ON f.name = v.function AND f.current_version = v.version");
  if (!st.ok()) return st.error().context("list referenced code");
  std::set<std::string> out;
  for (;;) {
    auto row = st->step();
    if (!row.ok()) return row.error().context("list referenced code");
    if (!*row) break;
    out.insert(st->column_text(0));
  }
  return out;
}

Status Registry::begin_activation(const v1::Activation& a) {
  return write_activations({ActivationWrite{ActivationWrite::kBegin, a}}).front();
}

Status Registry::finish_activation(const v1::Activation& a) {
  return write_activations({ActivationWrite{ActivationWrite::kFinish, a}}).front();
}

namespace {

// What a write must hold before it reaches SQLite; "" if it is fine.
std::string activation_write_refusal(const Registry::ActivationWrite& w) {
  const v1::Activation& a = w.record;
  if (a.activation_id().empty()) return "activation_id is empty";
  if (a.function().empty()) return "function is empty";
  if (w.kind == Registry::ActivationWrite::kBegin && a.start_ms() == 0) return "start_ms is 0";
  if (w.kind == Registry::ActivationWrite::kFinish && a.status() == v1::ACTIVATION_STATUS_UNSPECIFIED)
    return "status is not set";
  return {};
}

}  // namespace

std::vector<Status> Registry::write_activations(const std::vector<ActivationWrite>& batch) {
  std::vector<Status> out(batch.size());
  auto step_of = [&](size_t i) {
    return std::string(batch[i].kind == ActivationWrite::kBegin ? "begin" : "finish") + " activation " +
           quoted(batch[i].record.activation_id());
  };
  // A storage failure: nothing of the batch is stored (the transaction rolls back).
  auto fail_all = [&](const Error& e) {
    for (size_t i = 0; i < batch.size(); ++i)
      if (out[i].ok()) out[i] = e.context(step_of(i));
    return out;
  };
  std::lock_guard lock(mu_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return fail_all(tx.error());
  size_t stored = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ActivationWrite& w = batch[i];
    if (std::string why = activation_write_refusal(w); !why.empty()) {
      out[i] = kind_error(ErrorKind::kInvalid, step_of(i), why);
      continue;
    }
    if (w.kind == ActivationWrite::kBegin) {
      auto exists = db_.prepare("SELECT 1 FROM activations WHERE id = ?1");
      if (!exists.ok()) return fail_all(exists.error());
      exists->bind_text(1, w.record.activation_id());
      auto row = exists->step();
      if (!row.ok()) return fail_all(row.error());
      if (*row) {
        out[i] = kind_error(ErrorKind::kAlreadyExists, step_of(i));
        continue;
      }
      if (Status st = write_activation(db_, RowWrite::kInsert, w.record, "running"); !st.ok()) return fail_all(st.error());
    } else {
      // end_ms 0 means "running" in the API; a finished record must not say that.
      const v1::Activation* a = &w.record;
      v1::Activation ended;
      if (a->end_ms() == 0) {
        ended = *a;
        ended.set_end_ms(now_ms());
        a = &ended;
      }
      if (Status st = write_activation(db_, RowWrite::kUpsert, *a, "finished"); !st.ok()) return fail_all(st.error());
    }
    ++stored;
  }
  if (stored == 0) return out;  // nothing to commit; the transaction rolls back
  if (Status st = tx->commit(); !st.ok()) return fail_all(st.error());
  return out;
}

Result<v1::Activation> Registry::get_activation(const std::string& id) {
  std::string step = "get activation " + quoted(id);
  std::lock_guard lock(mu_);
  auto st = db_.prepare(std::string("SELECT ") + kActivationColumns + ", " + kActivationBodyColumns +
                        " FROM activations WHERE id = ?1");
  if (!st.ok()) return st.error().context(step);
  st->bind_text(1, id);
  auto row = st->step();
  if (!row.ok()) return row.error().context(step);
  if (!*row) return kind_error(ErrorKind::kNotFound, step);
  return row_to_activation(*st, /*with_body=*/true);
}

Result<v1::ActivationList> Registry::list_activations(const std::string& function, uint32_t limit,
                                                      const std::string& page_token,
                                                      const std::optional<std::string>& in_namespace) {
  const std::string step = "list activations";
  if (limit == 0) limit = kDefaultListLimit;
  if (limit > kMaxListLimit) limit = kMaxListLimit;
  int64_t after_start = 0;
  std::string after_id;
  bool paged = !page_token.empty();
  if (paged && !decode_token(page_token, &after_start, &after_id))
    return kind_error(ErrorKind::kInvalid, step, "page_token is not one this agent issued");

  // Keyset pagination on (start_ms, id): both indexes end in those columns,
  // so a page costs the same however deep it is.
  std::string sql = std::string("SELECT ") + kActivationColumns + " FROM activations WHERE 1";
  int next_param = 1;
  int p_function = 0, p_start = 0, p_id = 0;
  int p_namespace = 0;
  if (!function.empty()) {
    p_function = next_param++;
    sql += " AND function = ?" + std::to_string(p_function);
  } else if (in_namespace) {
    p_namespace = next_param++;
    sql += " AND " + in_namespace_sql("function", *in_namespace, p_namespace);
  }
  if (paged) {
    p_start = next_param++;
    p_id = next_param++;
    std::string s = "?" + std::to_string(p_start), i = "?" + std::to_string(p_id);
    sql += " AND (start_ms < " + s + " OR (start_ms = " + s + " AND id < " + i + "))";
  }
  int p_limit = next_param++;
  sql += " ORDER BY start_ms DESC, id DESC LIMIT ?" + std::to_string(p_limit);

  std::lock_guard lock(mu_);
  auto st = db_.prepare(sql);
  if (!st.ok()) return st.error().context(step);
  if (p_function != 0) st->bind_text(p_function, function);
  if (p_namespace != 0 && *in_namespace != kDefaultNamespace) st->bind_text(p_namespace, *in_namespace);
  if (paged) st->bind_int64(p_start, after_start).bind_text(p_id, after_id);
  // One row more than asked says whether another page exists.
  st->bind_int64(p_limit, static_cast<int64_t>(limit) + 1);
  v1::ActivationList out;
  for (;;) {
    auto row = st->step();
    if (!row.ok()) return row.error().context(step);
    if (!*row) break;
    if (static_cast<uint32_t>(out.activations_size()) == limit) {
      const auto& last = out.activations(out.activations_size() - 1);
      out.set_next_page_token(encode_token(last.start_ms(), last.activation_id()));
      break;
    }
    auto a = row_to_activation(*st, /*with_body=*/false);
    if (!a.ok()) return a.error();
    *out.add_activations() = std::move(a.value());
  }
  return out;
}

Result<uint64_t> Registry::count_activations() {
  std::lock_guard lock(mu_);
  auto n = db_.query_int64("SELECT COUNT(*) FROM activations");
  if (!n.ok()) return n.error().context("count activations");
  return static_cast<uint64_t>(*n);
}

Result<uint64_t> Registry::prune_activations(int64_t started_before_ms, uint32_t keep_per_function, uint32_t batch) {
  const std::string step = "prune activations";
  if (batch == 0) return uint64_t{0};
  std::lock_guard lock(mu_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  uint64_t removed = 0;
  if (started_before_ms > 0) {
    // activations_by_start finds them without a scan.
    auto st = db_.prepare(
        "DELETE FROM activations WHERE id IN (SELECT id FROM activations WHERE start_ms < ?1 AND state = 'finished' "
        "ORDER BY start_ms LIMIT ?2)");
    if (!st.ok()) return st.error().context(step);
    st->bind_int64(1, started_before_ms).bind_int64(2, batch);
    auto done = st->step();
    if (!done.ok()) return done.error().context(step);
    removed += static_cast<uint64_t>(db_.changes());
  }
  if (keep_per_function > 0 && removed < batch) {
    // Functions over the cap (an index-only count per function), then each
    // one's oldest rows past the newest keep_per_function.
    auto over = db_.prepare("SELECT function FROM activations GROUP BY function HAVING COUNT(*) > ?1");
    if (!over.ok()) return over.error().context(step);
    over->bind_int64(1, keep_per_function);
    std::vector<std::string> functions;
    for (;;) {
      auto row = over->step();
      if (!row.ok()) return row.error().context(step);
      if (!*row) break;
      functions.push_back(over->column_text(0));
    }
    for (const auto& fn : functions) {
      if (removed >= batch) break;
      auto st = db_.prepare(
          "DELETE FROM activations WHERE id IN (SELECT id FROM activations WHERE function = ?1 "
          "ORDER BY start_ms DESC, id DESC LIMIT ?2 OFFSET ?3) AND state = 'finished'");
      if (!st.ok()) return st.error().context(step);
      st->bind_text(1, fn).bind_int64(2, static_cast<int64_t>(batch - removed)).bind_int64(3, keep_per_function);
      auto done = st->step();
      if (!done.ok()) return done.error().context(step);
      removed += static_cast<uint64_t>(db_.changes());
    }
  }
  if (Status c = tx->commit(); !c.ok()) return c.error().context(step);
  return removed;
}

Result<uint64_t> Registry::prune_activations_over_bytes(uint64_t keep_bytes_per_function, uint32_t batch) {
  const std::string step = "prune activations over the per-function byte cap";
  if (batch == 0 || keep_bytes_per_function == 0) return uint64_t{0};
  std::lock_guard lock(mu_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  auto over = db_.prepare("SELECT function FROM activations GROUP BY function HAVING SUM(stored_bytes) > ?1");
  if (!over.ok()) return over.error().context(step);
  over->bind_int64(1, static_cast<int64_t>(keep_bytes_per_function));
  std::vector<std::string> functions;
  for (;;) {
    auto row = over->step();
    if (!row.ok()) return row.error().context(step);
    if (!*row) break;
    functions.push_back(over->column_text(0));
  }
  uint64_t removed = 0;
  for (const auto& fn : functions) {
    if (removed >= batch) break;
    // Newest first, each row with the bytes of itself and every newer row:
    // the oldest finished ones past the cap go. The newest record always
    // stays, whatever its size (a client may be about to read it).
    auto st = db_.prepare(
        "DELETE FROM activations WHERE id IN (SELECT id FROM (SELECT id, state, stored_bytes, "
        "SUM(stored_bytes) OVER (ORDER BY start_ms DESC, id DESC ROWS UNBOUNDED PRECEDING) AS upto "
        "FROM activations WHERE function = ?1) WHERE upto > ?2 AND upto > stored_bytes AND state = 'finished' "
        "LIMIT ?3)");
    if (!st.ok()) return st.error().context(step);
    st->bind_text(1, fn)
        .bind_int64(2, static_cast<int64_t>(keep_bytes_per_function))
        .bind_int64(3, static_cast<int64_t>(batch - removed));
    auto done = st->step();
    if (!done.ok()) return done.error().context(step);
    removed += static_cast<uint64_t>(db_.changes());
  }
  if (Status c = tx->commit(); !c.ok()) return c.error().context(step);
  return removed;
}

Result<int> Registry::fail_interrupted_activations(const std::string& reason,
                                                   const std::vector<JournalEntry>& journaled) {
  const std::string step = "fail interrupted activations";
  std::lock_guard lock(mu_);
  auto tx = SqliteTransaction::begin(db_);
  if (!tx.ok()) return tx.error().context(step);
  // Journaled activations without a row get their running row first; the
  // update below then fails them with the rows left running.
  for (const JournalEntry& e : journaled) {
    v1::Activation a;
    a.set_activation_id(e.activation_id);
    a.set_function(e.function);
    a.set_version(e.version);
    a.set_start_ms(e.start_ms);
    a.set_start_kind(v1::COLD);
    if (Status w = write_activation(db_, RowWrite::kInsertIfAbsent, a, "running"); !w.ok())
      return w.error().context(step + ": journaled activation " + quoted(e.activation_id));
  }
  auto st = db_.prepare(
      "UPDATE activations SET state = 'finished', status = ?1, result_json = ?2, end_ms = ?3 "
      "WHERE state = 'running'");
  if (!st.ok()) return st.error().context(step);
  st->bind_int64(1, v1::INTERNAL_ERROR).bind_text(2, dump_json({{"error", reason}})).bind_int64(3, now_ms());
  auto r = st->run();
  if (!r.ok()) return r.error().context(step);
  auto changed = static_cast<int>(db_.changes());
  r = tx->commit();
  if (!r.ok()) return r.error().context(step);
  return changed;
}

Result<int> Registry::schema_version() {
  std::lock_guard lock(mu_);
  auto v = db_.query_int64("PRAGMA user_version");
  if (!v.ok()) return v.error();
  return static_cast<int>(*v);
}

Status Registry::check_integrity() {
  std::lock_guard lock(mu_);
  auto st = db_.prepare("PRAGMA integrity_check");
  if (!st.ok()) return st.error();
  std::vector<std::string> findings;
  for (;;) {
    auto row = st->step();
    if (!row.ok()) return row.error().context("integrity check");
    if (!*row) break;
    findings.push_back(st->column_text(0));
  }
  if (findings.size() == 1 && findings[0] == "ok") return {};
  std::string detail;
  for (size_t i = 0; i < findings.size() && i < 5; ++i) detail += (i ? "; " : "") + findings[i];
  return plain_error("registry integrity check", detail.empty() ? "no answer" : detail);
}

uint64_t Registry::statements_parsed() {
  std::lock_guard lock(mu_);
  return db_.statements_prepared();
}

}  // namespace stoke::agent
