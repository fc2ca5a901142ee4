// The SQLite layer's statement cache: statements are parsed once per text and
// reused, nested uses of one text get separate statements, and a reused
// statement starts clean (no bindings, no open read transaction).
#include "agent/sqlite.h"

#include <gtest/gtest.h>

#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

SqliteDb open_db(const std::string& path) {
  auto db = SqliteDb::open(path);
  EXPECT_TRUE(db.ok()) << db.error().message();
  return db.ok() ? std::move(db.value()) : SqliteDb();
}

TEST(SqliteStatementCache, TheSameTextIsParsedOnceAndReused) {
  test::TempDir dir;
  SqliteDb db = open_db(dir.path() + "/t.db");
  ASSERT_TRUE(db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").ok());
  uint64_t before = db.statements_prepared();
  for (int i = 0; i < 50; ++i) {
    auto ins = db.prepare("INSERT INTO t (k, v) VALUES (?1, ?2)");
    ASSERT_TRUE(ins.ok());
    std::string value = std::to_string(i);
    ASSERT_TRUE(ins->bind_int64(1, i).bind_text(2, value).run().ok());
  }
  EXPECT_EQ(db.statements_prepared(), before + 1);
  auto count = db.query_int64("SELECT COUNT(*) FROM t");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 50);
}

TEST(SqliteStatementCache, NestedUsesOfOneTextGetTheirOwnStatements) {
  test::TempDir dir;
  SqliteDb db = open_db(dir.path() + "/t.db");
  ASSERT_TRUE(db.exec("CREATE TABLE t (k INTEGER); INSERT INTO t VALUES (1), (2)").ok());
  const char* sql = "SELECT k FROM t WHERE k >= ?1 ORDER BY k";
  auto outer = db.prepare(sql);
  ASSERT_TRUE(outer.ok());
  outer->bind_int64(1, 1);
  auto row = outer->step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(outer->column_int64(0), 1);
  {
    auto inner = db.prepare(sql);  // the outer one is still mid-step
    ASSERT_TRUE(inner.ok());
    inner->bind_int64(1, 2);
    auto r = inner->step();
    ASSERT_TRUE(r.ok() && *r);
    EXPECT_EQ(inner->column_int64(0), 2);
  }
  row = outer->step();  // undisturbed by the inner one
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(outer->column_int64(0), 2);
}

TEST(SqliteStatementCache, AReusedStatementHasNoBindingsAndHoldsNoReadLock) {
  test::TempDir dir;
  SqliteDb db = open_db(dir.path() + "/t.db");
  ASSERT_TRUE(db.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER, v TEXT)").ok());
  {
    auto ins = db.prepare("INSERT INTO t VALUES (?1, ?2)");
    ASSERT_TRUE(ins.ok());
    ASSERT_TRUE(ins->bind_int64(1, 7).bind_text(2, "seven").run().ok());
  }
  {
    // Left after its first row: going back to the cache must end its read.
    auto sel = db.prepare("SELECT k FROM t");
    ASSERT_TRUE(sel.ok());
    ASSERT_TRUE(sel->step().ok());
  }
  // A second connection can write and checkpoint fully only if no read
  // transaction of ours is still open.
  SqliteDb other = open_db(dir.path() + "/t.db");
  ASSERT_TRUE(other.exec("INSERT INTO t VALUES (8, 'eight')").ok());
  auto checkpoint = other.prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  ASSERT_TRUE(checkpoint.ok());
  auto row = checkpoint->step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(checkpoint->column_int64(0), 0) << "checkpoint blocked by a reader";
  // The cached INSERT comes back without the old bindings: NULLs.
  auto ins = db.prepare("INSERT INTO t VALUES (?1, ?2)");
  ASSERT_TRUE(ins.ok());
  ASSERT_TRUE(ins->run().ok());
  auto nulls = db.query_int64("SELECT COUNT(*) FROM t WHERE k IS NULL AND v IS NULL");
  ASSERT_TRUE(nulls.ok());
  EXPECT_EQ(*nulls, 1);
}

TEST(SqliteStatementCache, StatementsOutlivingTheirConnectionObjectStaySafe) {
  test::TempDir dir;
  SqliteStatement kept;
  {
    SqliteDb db = open_db(dir.path() + "/t.db");
    ASSERT_TRUE(db.exec("CREATE TABLE t (k INTEGER)").ok());
    SqliteDb moved = std::move(db);  // the cache moves with the connection
    auto st = moved.prepare("SELECT COUNT(*) FROM t");
    ASSERT_TRUE(st.ok());
    kept = std::move(*st);
  }
  // The connection closed (deferred by SQLite while a statement lives); the
  // statement still works and finalizes cleanly when it goes (ASan checks).
  auto row = kept.step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(kept.column_int64(0), 0);
}

}  // namespace
}  // namespace stoke::agent
