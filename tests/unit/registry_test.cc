#include "agent/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "agent/sqlite.h"
#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

const std::string kShaA(64, 'a');
const std::string kShaB(64, 'b');

FunctionRecord record(const std::string& sha = kShaA, uint64_t memory = 128ull << 20) {
  FunctionRecord r;
  r.runtime = v1::PYTHON;
  r.entry = "main";
  r.memory_bytes = memory;
  r.timeout_ms = 3000;
  r.concurrency = 2;
  r.env = {{"GREETING", "hello"}, {"EMPTY", ""}};
  r.code_sha256 = sha;
  r.code_size = 1234;
  return r;
}

std::unique_ptr<Registry> open_registry(const std::string& path) {
  auto r = Registry::open(path);
  if (!r.ok()) ADD_FAILURE() << r.error().message();
  return r.ok() ? std::move(r.value()) : nullptr;
}

v1::Activation running(const std::string& id, const std::string& function, int64_t start_ms) {
  v1::Activation a;
  a.set_activation_id(id);
  a.set_function(function);
  a.set_version(1);
  a.set_start_ms(start_ms);
  a.set_start_kind(v1::COLD);
  return a;
}

v1::Activation finished(v1::Activation a) {
  a.set_end_ms(a.start_ms() + 42);
  a.set_duration_ms(41.5);
  a.set_wait_ms(0.25);
  a.set_init_ms(30.0);
  a.set_status(v1::SUCCESS);
  a.set_result_json(R"({"ok":true})");
  a.add_logs("line one");
  a.add_logs("line two");
  a.set_logs_truncated(true);
  auto* u = a.mutable_usage();
  u->set_cpu_user_ms(12.5);
  u->set_cpu_system_ms(3.25);
  u->set_memory_peak_bytes(5u << 20);
  u->set_pids_peak(7);
  u->set_billed_ms(100);
  u->set_gb_seconds(0.0125);
  return a;
}

// The warm path records two registry writes and a read per activation: after
// the first round, SQLite parses nothing more (statements come from the cache).
TEST(Registry, ActivationsAfterTheFirstParseNoSql) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("registry.db"));
  ASSERT_NE(reg, nullptr);
  ASSERT_TRUE(reg->create_function("hot", record()).ok());
  auto round = [&](int i) {
    std::string id = "act-" + std::to_string(i);
    ASSERT_TRUE(reg->get_function("hot").ok());
    ASSERT_TRUE(reg->begin_activation(running(id, "hot", 1000 + i)).ok());
    ASSERT_TRUE(reg->finish_activation(finished(running(id, "hot", 1000 + i))).ok());
    ASSERT_TRUE(reg->get_activation(id).ok());
  };
  round(0);
  uint64_t after_first = reg->statements_parsed();
  for (int i = 1; i <= 20; ++i) round(i);
  EXPECT_EQ(reg->statements_parsed(), after_first);
  auto count = reg->count_activations();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 21u);
}

TEST(Registry, CreateThenGetReturnsVersionOneWithEveryField) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto created = reg->create_function("hello", record());
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_EQ(created->version(), 1u);
  EXPECT_GT(created->created_ms(), 0);

  auto got = reg->get_function("hello");
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_EQ(got->name(), "hello");
  EXPECT_EQ(got->version(), 1u);
  EXPECT_EQ(got->runtime(), v1::PYTHON);
  EXPECT_EQ(got->entry(), "main");
  EXPECT_EQ(got->memory_bytes(), 128ull << 20);
  EXPECT_EQ(got->timeout_ms(), 3000u);
  EXPECT_EQ(got->concurrency(), 2u);
  EXPECT_EQ(got->env().at("GREETING"), "hello");
  EXPECT_EQ(got->env().at("EMPTY"), "");
  EXPECT_EQ(got->code_sha256(), kShaA);
  EXPECT_EQ(got->code_size(), 1234u);
  EXPECT_EQ(got->created_ms(), created->created_ms());
}

TEST(Registry, CreatingATakenNameIsAlreadyExists) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("f", record()).ok());
  auto again = reg->create_function("f", record(kShaB));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(error_kind(again.error()), ErrorKind::kAlreadyExists) << again.error().message();
  EXPECT_EQ(error_code(error_kind(again.error())), v1::Error::ALREADY_EXISTS);
  EXPECT_EQ(again.error().message(), "create function 'f': already exists");
  EXPECT_EQ(reg->get_function("f")->code_sha256(), kShaA);  // untouched
}

TEST(Registry, BadNamesAndRecordsAreInvalid) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto bad_name = reg->create_function("../x", record());
  ASSERT_FALSE(bad_name.ok());
  EXPECT_EQ(error_kind(bad_name.error()), ErrorKind::kInvalid);
  FunctionRecord no_runtime = record();
  no_runtime.runtime = v1::RUNTIME_UNSPECIFIED;
  auto r1 = reg->create_function("f", no_runtime);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(error_kind(r1.error()), ErrorKind::kInvalid);
  auto r2 = reg->create_function("f", record("not-a-sha"));
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(error_kind(r2.error()), ErrorKind::kInvalid);
  EXPECT_EQ(reg->list_functions()->functions_size(), 0);
}

TEST(Registry, MissingFunctionsAreNotFound) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto get = reg->get_function("nope");
  ASSERT_FALSE(get.ok());
  EXPECT_EQ(error_kind(get.error()), ErrorKind::kNotFound);
  EXPECT_EQ(get.error().message(), "get function 'nope': not found");
  auto upd = reg->update_function("nope", record());
  ASSERT_FALSE(upd.ok());
  EXPECT_EQ(error_kind(upd.error()), ErrorKind::kNotFound);
  auto del = reg->delete_function("nope");
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(error_kind(del.error()), ErrorKind::kNotFound);
}

TEST(Registry, ErrorKindSurvivesContext) {
  Error e = kind_error(ErrorKind::kInvalid, "code archive entry '../a'", "has a '..' component");
  EXPECT_EQ(e.message(), "code archive entry '../a': invalid: has a '..' component");
  EXPECT_EQ(error_kind(e.context("create function 'f'")), ErrorKind::kInvalid);
  EXPECT_EQ(error_kind(sys_error("open /x", ENOENT)), ErrorKind::kIo);
  EXPECT_EQ(error_kind(plain_error("sqlite", "not foundish")), ErrorKind::kIo);
  EXPECT_EQ(error_code(ErrorKind::kIo), v1::Error::INTERNAL);
  EXPECT_EQ(error_code(ErrorKind::kNotFound), v1::Error::NOT_FOUND);
  EXPECT_EQ(error_code(ErrorKind::kInvalid), v1::Error::INVALID_ARGUMENT);
}

TEST(Registry, UpdateAddsVersionAndKeepsTheOldOnes) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("f", record(kShaA, 128ull << 20)).ok());
  auto v2 = reg->update_function("f", record(kShaB, 256ull << 20));
  ASSERT_TRUE(v2.ok()) << v2.error().message();
  EXPECT_EQ(v2->version(), 2u);
  auto v3 = reg->update_function("f", record(kShaA, 512ull << 20));
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->version(), 3u);

  auto current = reg->get_function("f");
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version(), 3u);
  EXPECT_EQ(current->memory_bytes(), 512ull << 20);
  auto old = reg->get_function_version("f", 2);
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_EQ(old->code_sha256(), kShaB);
  EXPECT_EQ(old->memory_bytes(), 256ull << 20);
  auto missing = reg->get_function_version("f", 4);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(error_kind(missing.error()), ErrorKind::kNotFound);

  // Only current versions' code is kept on disk (old versions' records stay):
  // v3 is kShaA again, so kShaB (v2's) is collectable.
  auto code = reg->referenced_code();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, (std::set<std::string>{kShaA}));
  ASSERT_TRUE(reg->update_function("f", record(kShaB, 512ull << 20)).ok());
  EXPECT_EQ(reg->referenced_code().value(), (std::set<std::string>{kShaB}));
}

TEST(Registry, ListReturnsCurrentVersionsByName) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("zeta", record()).ok());
  ASSERT_TRUE(reg->create_function("alpha", record()).ok());
  ASSERT_TRUE(reg->update_function("zeta", record(kShaB)).ok());
  auto list = reg->list_functions();
  ASSERT_TRUE(list.ok()) << list.error().message();
  ASSERT_EQ(list->functions_size(), 2);
  EXPECT_EQ(list->functions(0).name(), "alpha");
  EXPECT_EQ(list->functions(0).version(), 1u);
  EXPECT_EQ(list->functions(1).name(), "zeta");
  EXPECT_EQ(list->functions(1).version(), 2u);
  EXPECT_EQ(list->functions(1).code_sha256(), kShaB);
}

TEST(Registry, DeleteRemovesFunctionAndVersionsButKeepsActivations) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("f", record(kShaA)).ok());
  ASSERT_TRUE(reg->update_function("f", record(kShaB)).ok());
  ASSERT_TRUE(reg->create_function("g", record(kShaA)).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("act-1", "f", 1000))).ok());

  auto del = reg->delete_function("f");
  ASSERT_TRUE(del.ok()) << del.error().message();
  EXPECT_EQ(error_kind(reg->get_function("f").error()), ErrorKind::kNotFound);
  EXPECT_FALSE(reg->get_function_version("f", 1).ok());
  EXPECT_EQ(reg->list_functions()->functions_size(), 1);
  EXPECT_EQ(reg->referenced_code().value(), std::set<std::string>{kShaA});  // kShaB is now collectable

  auto act = reg->get_activation("act-1");
  ASSERT_TRUE(act.ok());
  EXPECT_EQ(act->function(), "f");
  EXPECT_EQ(reg->list_activations("f", 0, "")->activations_size(), 1);

  // The name is free again and starts over at version 1.
  auto again = reg->create_function("f", record());
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->version(), 1u);
}

TEST(Registry, ActivationBeginFinishGetRoundTripsEveryField) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto begun = running("a1", "f", 1700000000123);
  ASSERT_TRUE(reg->begin_activation(begun).ok());

  auto mid = reg->get_activation("a1");
  ASSERT_TRUE(mid.ok()) << mid.error().message();
  EXPECT_EQ(mid->end_ms(), 0);
  EXPECT_EQ(mid->status(), v1::ACTIVATION_STATUS_UNSPECIFIED);
  EXPECT_EQ(mid->start_kind(), v1::COLD);

  auto done = finished(begun);
  auto st = reg->finish_activation(done);
  ASSERT_TRUE(st.ok()) << st.error().message();
  auto got = reg->get_activation("a1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->activation_id(), "a1");
  EXPECT_EQ(got->function(), "f");
  EXPECT_EQ(got->version(), 1u);
  EXPECT_EQ(got->start_ms(), 1700000000123);
  EXPECT_EQ(got->end_ms(), 1700000000165);
  EXPECT_DOUBLE_EQ(got->duration_ms(), 41.5);
  EXPECT_DOUBLE_EQ(got->wait_ms(), 0.25);
  EXPECT_DOUBLE_EQ(got->init_ms(), 30.0);
  EXPECT_EQ(got->start_kind(), v1::COLD);
  EXPECT_EQ(got->status(), v1::SUCCESS);
  EXPECT_EQ(got->result_json(), R"({"ok":true})");
  ASSERT_EQ(got->logs_size(), 2);
  EXPECT_EQ(got->logs(1), "line two");
  EXPECT_TRUE(got->logs_truncated());
  EXPECT_DOUBLE_EQ(got->usage().cpu_user_ms(), 12.5);
  EXPECT_DOUBLE_EQ(got->usage().cpu_system_ms(), 3.25);
  EXPECT_EQ(got->usage().memory_peak_bytes(), 5u << 20);
  EXPECT_EQ(got->usage().pids_peak(), 7u);
  EXPECT_EQ(got->usage().billed_ms(), 100u);
  EXPECT_DOUBLE_EQ(got->usage().gb_seconds(), 0.0125);
  EXPECT_EQ(reg->count_activations().value(), 1u);
}

TEST(Registry, ActivationIdsAreUniqueAndFinishNeedsAStatus) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->begin_activation(running("a1", "f", 10)).ok());
  auto dup = reg->begin_activation(running("a1", "f", 11));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(error_kind(dup.error()), ErrorKind::kAlreadyExists);
  auto no_status = reg->finish_activation(running("a1", "f", 10));
  ASSERT_FALSE(no_status.ok());
  EXPECT_EQ(error_kind(no_status.error()), ErrorKind::kInvalid);
  auto missing = reg->get_activation("zzz");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(error_kind(missing.error()), ErrorKind::kNotFound);
}

TEST(Registry, FinishWithoutEndTimeGetsOneSoItNeverLooksRunning) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto a = running("a1", "f", 10);
  a.set_status(v1::TIMEOUT);
  ASSERT_TRUE(reg->finish_activation(a).ok());
  EXPECT_GT(reg->get_activation("a1")->end_ms(), 0);
}

TEST(Registry, ABatchOfActivationWritesIsStoredTogetherInOrder) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  using W = Registry::ActivationWrite;
  auto out = reg->write_activations({W{W::kBegin, running("a", "f", 10)}, W{W::kBegin, running("b", "f", 11)},
                                     W{W::kFinish, finished(running("a", "f", 10))}});
  ASSERT_EQ(out.size(), 3u);
  for (const auto& s : out) EXPECT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(reg->get_activation("a")->status(), v1::SUCCESS) << "the finish came after its begin";
  EXPECT_EQ(reg->get_activation("b")->end_ms(), 0) << "still running";
  EXPECT_EQ(reg->count_activations().value(), 2u);
}

TEST(Registry, AWriteRefusedInABatchFailsAloneAndTheOthersAreStored) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->begin_activation(running("taken", "f", 10)).ok());
  using W = Registry::ActivationWrite;
  auto out = reg->write_activations({W{W::kBegin, running("taken", "f", 12)}, W{W::kBegin, running("new", "f", 13)},
                                     W{W::kFinish, running("new", "f", 13)},  // no status
                                     W{W::kBegin, running("new", "f", 14)}});  // its id, used above in this batch
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(error_kind(out[0].error()), ErrorKind::kAlreadyExists);
  EXPECT_TRUE(out[1].ok());
  EXPECT_EQ(error_kind(out[2].error()), ErrorKind::kInvalid);
  EXPECT_EQ(error_kind(out[3].error()), ErrorKind::kAlreadyExists);
  EXPECT_EQ(reg->get_activation("taken")->start_ms(), 10) << "the first record is untouched";
  EXPECT_EQ(reg->get_activation("new")->start_ms(), 13);
}

TEST(Registry, LogsWithInvalidUtf8AreStoredNotLost) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  auto a = finished(running("a1", "f", 10));
  a.add_logs(std::string("bad \xff byte"));
  ASSERT_TRUE(reg->finish_activation(a).ok());
  auto got = reg->get_activation("a1");
  ASSERT_TRUE(got.ok()) << got.error().message();
  ASSERT_EQ(got->logs_size(), 3);
  EXPECT_EQ(got->logs(2).substr(0, 4), "bad ");
}

TEST(Registry, ListActivationsPagesNewestFirstWithStableTokens) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  // 25 activations of f and 5 of g; pairs share a start_ms so the id breaks ties.
  for (int i = 0; i < 25; ++i) {
    char id[16];
    snprintf(id, sizeof id, "f-%02d", i);
    ASSERT_TRUE(reg->finish_activation(finished(running(id, "f", 1000 + i / 2))).ok());
  }
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(reg->begin_activation(running("g-" + std::to_string(i), "g", 5000 + i)).ok());

  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = reg->list_activations("f", 10, token);
    ASSERT_TRUE(page.ok()) << page.error().message();
    ++pages;
    for (const auto& a : page->activations()) {
      EXPECT_EQ(a.function(), "f");
      EXPECT_TRUE(a.result_json().empty());  // list omits bodies
      EXPECT_EQ(a.logs_size(), 0);
      seen.push_back(a.activation_id());
    }
    token = page->next_page_token();
    // New activations arriving between pages do not shift the pages.
    if (pages == 1) {
      ASSERT_TRUE(reg->finish_activation(finished(running("f-new", "f", 99999))).ok());
    }
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) {
    char id[16];
    snprintf(id, sizeof id, "f-%02d", 24 - i);
    EXPECT_EQ(seen[static_cast<size_t>(i)], id) << "position " << i;
  }

  auto all = reg->list_activations("", 0, "");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->activations_size(), static_cast<int>(Registry::kDefaultListLimit));
  EXPECT_EQ(all->activations(0).activation_id(), "f-new");
  EXPECT_EQ(all->activations(1).activation_id(), "g-4");
  EXPECT_FALSE(all->next_page_token().empty());

  auto exact = reg->list_activations("g", 5, "");
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->activations_size(), 5);
  EXPECT_TRUE(exact->next_page_token().empty());  // no empty trailing page

  auto bad = reg->list_activations("f", 10, "not-a-token");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(error_kind(bad.error()), ErrorKind::kInvalid);
  EXPECT_EQ(reg->count_activations().value(), 31u);
}

TEST(Registry, InterruptedActivationsBecomeInternalErrors) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->begin_activation(running("r1", "f", 10)).ok());
  ASSERT_TRUE(reg->begin_activation(running("r2", "f", 11)).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("done", "f", 12))).ok());

  auto n = reg->fail_interrupted_activations("agent restarted");
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(*n, 2);
  for (const char* id : {"r1", "r2"}) {
    auto a = reg->get_activation(id);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->status(), v1::INTERNAL_ERROR);
    EXPECT_EQ(a->result_json(), R"({"error":"agent restarted"})");
    EXPECT_GT(a->end_ms(), 0);
  }
  EXPECT_EQ(reg->get_activation("done")->status(), v1::SUCCESS);
  EXPECT_EQ(reg->fail_interrupted_activations("again").value(), 0);
}

TEST(Registry, JournaledActivationsWithoutARowAreRecordedFailedAndRowsDecideTheRest) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->begin_activation(running("row-running", "f", 10)).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("row-done", "f", 12))).ok());
  std::vector<JournalEntry> journaled = {
      {"journal-only", "g", 3, 1234},  // began, its row never written
      {"row-running", "f", 1, 10},     // its row says running
      {"row-done", "f", 1, 12},        // a leftover entry of a finished activation
  };
  auto n = reg->fail_interrupted_activations("agent restarted", journaled);
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(*n, 2);
  auto only = reg->get_activation("journal-only");
  ASSERT_TRUE(only.ok()) << only.error().message();
  EXPECT_EQ(only->status(), v1::INTERNAL_ERROR);
  EXPECT_EQ(only->function(), "g");
  EXPECT_EQ(only->version(), 3u);
  EXPECT_EQ(only->start_ms(), 1234);
  EXPECT_GT(only->end_ms(), 0);
  EXPECT_EQ(only->result_json(), R"({"error":"agent restarted"})");
  EXPECT_EQ(reg->get_activation("row-running")->status(), v1::INTERNAL_ERROR);
  EXPECT_EQ(reg->get_activation("row-done")->status(), v1::SUCCESS);
  EXPECT_EQ(reg->count_activations().value(), 3u);
}

TEST(Registry, ReopenKeepsFunctionsVersionsAndActivations) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  {
    auto reg = open_registry(path);
    ASSERT_TRUE(reg);
    ASSERT_TRUE(reg->create_function("f", record(kShaA)).ok());
    ASSERT_TRUE(reg->update_function("f", record(kShaB)).ok());
    ASSERT_TRUE(reg->finish_activation(finished(running("a1", "f", 10))).ok());
    ASSERT_TRUE(reg->begin_activation(running("a2", "f", 11)).ok());
  }
  auto reg = open_registry(path);
  ASSERT_TRUE(reg);
  EXPECT_TRUE(reg->check_integrity().ok());
  auto f = reg->get_function("f");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->code_sha256(), kShaB);
  EXPECT_TRUE(reg->get_function_version("f", 1).ok());
  EXPECT_EQ(reg->get_activation("a1")->logs_size(), 2);
  EXPECT_EQ(reg->get_activation("a2")->end_ms(), 0);  // still running until the agent fails it
  EXPECT_EQ(reg->count_activations().value(), 2u);
}

// A registry of schema 2 (before pids_peak) opens, gains the column, keeps
// its records (their peak unknown: 0) and stores the figure from then on.
TEST(Registry, ASchemaTwoRegistryMigratesAndKeepsItsActivations) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  {
    auto reg = open_registry(path);
    ASSERT_TRUE(reg);
    ASSERT_TRUE(reg->create_function("f", record()).ok());
    ASSERT_TRUE(reg->begin_activation(running("old", "f", 1000)).ok());
    ASSERT_TRUE(reg->finish_activation(finished(running("old", "f", 1000))).ok());
  }
  {
    auto db = SqliteDb::open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(
        db->exec("DROP TABLE namespaces; ALTER TABLE versions DROP COLUMN parameters_json; "
                 "ALTER TABLE versions DROP COLUMN annotations_json; ALTER TABLE activations DROP COLUMN pids_peak; "
                 "PRAGMA user_version = 2")
            .ok());
  }
  auto reg = open_registry(path);
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->schema_version().value(), Registry::kSchemaVersion);
  auto old = reg->get_activation("old");
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_EQ(old->usage().pids_peak(), 0u);
  EXPECT_EQ(old->usage().memory_peak_bytes(), 5u << 20);
  ASSERT_TRUE(reg->begin_activation(running("new", "f", 2000)).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("new", "f", 2000))).ok());
  EXPECT_EQ(reg->get_activation("new")->usage().pids_peak(), 7u);
}

// A registry of schema 3 (before namespaces) opens with its functions in the
// default namespace, and namespaces can be made from then on.
TEST(Registry, ASchemaThreeRegistryMigratesWithItsFunctionsInTheDefaultNamespace) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  {
    auto reg = open_registry(path);
    ASSERT_TRUE(reg);
    ASSERT_TRUE(reg->create_function("f", record()).ok());
  }
  {
    auto db = SqliteDb::open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->exec("DROP TABLE namespaces; ALTER TABLE versions DROP COLUMN parameters_json; "
                         "ALTER TABLE versions DROP COLUMN annotations_json; PRAGMA user_version = 3")
                    .ok());
  }
  auto reg = open_registry(path);
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->schema_version().value(), Registry::kSchemaVersion);
  auto guest = reg->list_functions_in("guest");
  ASSERT_TRUE(guest.ok());
  ASSERT_EQ(guest.value().functions_size(), 1);
  EXPECT_EQ(guest.value().functions(0).name(), "f");
  EXPECT_EQ(guest.value().functions(0).parameters_json(), "{}") << "older versions have none";
  EXPECT_EQ(guest.value().functions(0).annotations_json(), "[]");
  ASSERT_TRUE(reg->create_namespace({"team", std::string(36, 'a'), std::string(64, 'b'), 1}).ok());
  EXPECT_EQ(reg->list_namespaces()->size(), 1u);
}

// Namespaces' functions are "<ns>/<name>" rows: each namespace lists only its
// own, activations too, and a namespace goes only once it has no function.
TEST(Registry, NamespacesListOnlyTheirOwnFunctionsAndActivationsAndGoOnlyWhenEmpty) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_namespace({"a", "uuid-a", std::string(64, '1'), 1}).ok());
  ASSERT_TRUE(reg->create_namespace({"ab", "uuid-ab", std::string(64, '2'), 1}).ok());
  EXPECT_EQ(error_kind(reg->create_namespace({"a", "uuid-c", std::string(64, '3'), 1}).error()),
            ErrorKind::kAlreadyExists);
  EXPECT_EQ(error_kind(reg->create_namespace({"c", "uuid-a", std::string(64, '3'), 1}).error()),
            ErrorKind::kAlreadyExists)
      << "a key uuid names one namespace";
  for (const char* name : {"f", "a/f", "a/g", "ab/f"}) ASSERT_TRUE(reg->create_function(name, record()).ok()) << name;
  EXPECT_FALSE(reg->create_function("guest/f", record()).ok()) << "the default namespace's names are unqualified";
  auto names = [&](const std::string& ns) {
    std::vector<std::string> out;
    auto list = reg->list_functions_in(ns);
    if (!list.ok()) return out;
    for (const auto& f : list.value().functions()) out.push_back(f.name());
    return out;
  };
  EXPECT_EQ(names("guest"), (std::vector<std::string>{"f"}));
  EXPECT_EQ(names("a"), (std::vector<std::string>{"a/f", "a/g"})) << "not ab's";
  EXPECT_EQ(names("ab"), (std::vector<std::string>{"ab/f"}));
  ASSERT_TRUE(reg->finish_activation(finished(running("x1", "a/f", 1000))).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("x2", "ab/f", 1001))).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("x3", "f", 1002))).ok());
  auto ids = [&](const std::string& ns) {
    std::vector<std::string> out;
    auto list = reg->list_activations("", 0, "", ns);
    if (!list.ok()) return out;
    for (const auto& a : list.value().activations()) out.push_back(a.activation_id());
    return out;
  };
  EXPECT_EQ(ids("a"), (std::vector<std::string>{"x1"}));
  EXPECT_EQ(ids("ab"), (std::vector<std::string>{"x2"}));
  EXPECT_EQ(ids("guest"), (std::vector<std::string>{"x3"}));
  auto every = reg->list_activations("", 0, "");
  ASSERT_TRUE(every.ok());
  EXPECT_EQ(every.value().activations_size(), 3) << "unscoped: every one";

  Status busy = reg->delete_namespace("a");
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(error_kind(busy.error()), ErrorKind::kNotEmpty);
  EXPECT_NE(busy.error().message().find("2 functions"), std::string::npos) << busy.error().message();
  ASSERT_TRUE(reg->delete_function("a/f").ok());
  ASSERT_TRUE(reg->delete_function("a/g").ok());
  EXPECT_TRUE(reg->delete_namespace("a").ok());
  EXPECT_EQ(error_kind(reg->delete_namespace("a").error()), ErrorKind::kNotFound);
  ASSERT_TRUE(reg->set_namespace_key("ab", "uuid-new", std::string(64, '9')).ok());
  auto rows = reg->list_namespaces();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->at(0).key_uuid, "uuid-new");
  EXPECT_EQ(error_kind(reg->set_namespace_key("zz", "u", "h").error()), ErrorKind::kNotFound);
}

TEST(Registry, SchemaVersionAndWalModeArePersistedInTheFile) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  {
    auto reg = open_registry(path);
    ASSERT_TRUE(reg);
    EXPECT_EQ(reg->schema_version().value(), Registry::kSchemaVersion);
  }
  auto db = SqliteDb::open(path);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(db->query_int64("PRAGMA user_version").value(), Registry::kSchemaVersion);
  EXPECT_EQ(db->query_text("PRAGMA journal_mode").value(), "wal");  // persistent in the file
}

// The registry holds function env secrets, results and logs: 0600 whatever the
// umask, for the database and the -wal/-shm files SQLite creates beside it.
TEST(Registry, DatabaseAndItsWalAndShmAreCreatedOwnerOnlyUnderAWideUmask) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  mode_t old = umask(0022);
  auto reg = open_registry(path);
  umask(old);
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("f", record()).ok());
  for (const std::string& f : {path, path + "-wal", path + "-shm"}) {
    struct stat st {};
    ASSERT_EQ(stat(f.c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << f;
  }
}

// Files an older version created 0644 are tightened when opened again.
TEST(Registry, WideDatabaseFilesLeftByAnOlderVersionAreTightenedOnOpen) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  { ASSERT_TRUE(open_registry(path)); }
  for (const std::string& f : {path, path + "-wal", path + "-shm", path + "-journal"}) {
    int fd = open(f.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << f;
    ASSERT_EQ(fchmod(fd, 0644), 0);
    close(fd);
  }
  // -journal is a hot journal only when it has content; an empty one is ignored.
  auto reg = open_registry(path);
  ASSERT_TRUE(reg);
  for (const std::string& f : {path, path + "-wal", path + "-shm", path + "-journal"}) {
    struct stat st {};
    if (stat(f.c_str(), &st) != 0) continue;  // SQLite may remove an empty journal
    EXPECT_EQ(st.st_mode & 07777, 0600u) << f;
  }
}

// A symlink planted at the database's name is not followed.
TEST(Registry, SymlinkAtTheDatabasePathIsRefused) {
  test::TempDir dir;
  std::string target = dir.file("elsewhere");
  std::string path = dir.file("state.db");
  ASSERT_EQ(symlink(target.c_str(), path.c_str()), 0);
  auto reg = Registry::open(path);
  EXPECT_FALSE(reg.ok());
  EXPECT_FALSE(std::filesystem::exists(target));
}

std::string numbered(std::string prefix, int i) {
  prefix.append(std::to_string(i));
  return prefix;
}

// Retention: by age and by count per function; running ones always stay.
TEST(Registry, PruneDeletesFinishedActivationsPastAgeOrCountAndKeepsRunningOnes) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(reg->finish_activation(finished(running(numbered("a", i), "f", 1000 + i))).ok());
  ASSERT_TRUE(reg->finish_activation(finished(running("b0", "g", 1000))).ok());
  ASSERT_TRUE(reg->begin_activation(running("a-running", "f", 500)).ok());

  // By age: everything that started before 1002, except the running one.
  auto by_age = reg->prune_activations(1002, 0);
  ASSERT_TRUE(by_age.ok()) << by_age.error().message();
  EXPECT_EQ(by_age.value(), 3u);  // a0, a1, b0
  EXPECT_FALSE(reg->get_activation("a0").ok());
  EXPECT_FALSE(reg->get_activation("b0").ok());
  EXPECT_TRUE(reg->get_activation("a-running").ok());

  // By count: the newest 2 of f (a5, a4) stay, and the running one.
  auto by_count = reg->prune_activations(0, 2);
  ASSERT_TRUE(by_count.ok()) << by_count.error().message();
  EXPECT_EQ(by_count.value(), 2u);  // a2, a3
  EXPECT_TRUE(reg->get_activation("a5").ok());
  EXPECT_TRUE(reg->get_activation("a4").ok());
  EXPECT_FALSE(reg->get_activation("a3").ok());
  EXPECT_TRUE(reg->get_activation("a-running").ok());
  EXPECT_EQ(reg->count_activations().value(), 3u);
}

// A finished activation whose logs hold `log_bytes` bytes.
v1::Activation with_logs(v1::Activation a, size_t log_bytes) {
  a.add_logs(std::string(log_bytes, 'x'));
  return a;
}

// Retention by bytes: each function keeps its newest records up to the cap;
// its newest always stays; another function under the cap is untouched.
TEST(Registry, PruneByBytesKeepsEachFunctionsNewestRecordsUnderItsCap) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(reg->finish_activation(with_logs(finished(running(numbered("a", i), "f", 1000 + i)), 10'000)).ok());
  ASSERT_TRUE(reg->finish_activation(with_logs(finished(running("big", "h", 1000)), 100'000)).ok());
  ASSERT_TRUE(reg->finish_activation(with_logs(finished(running("g0", "g", 1000)), 10'000)).ok());
  ASSERT_TRUE(reg->begin_activation(running("f-running", "f", 10)).ok());

  auto removed = reg->prune_activations_over_bytes(35'000);
  ASSERT_TRUE(removed.ok()) << removed.error().message();
  // f: a9, a8 and a7 fit in 35,000 bytes (each a little over 10,000); a0..a6 go.
  EXPECT_EQ(removed.value(), 7u);
  for (int i = 7; i < 10; ++i) EXPECT_TRUE(reg->get_activation(numbered("a", i)).ok()) << i;
  for (int i = 0; i < 7; ++i) EXPECT_FALSE(reg->get_activation(numbered("a", i)).ok()) << i;
  EXPECT_TRUE(reg->get_activation("f-running").ok());
  EXPECT_TRUE(reg->get_activation("big").ok()) << "a function's newest record stays, whatever its size";
  EXPECT_TRUE(reg->get_activation("g0").ok());
  EXPECT_EQ(reg->prune_activations_over_bytes(35'000).value(), 0u);
  EXPECT_EQ(reg->prune_activations_over_bytes(0).value(), 0u) << "0 turns the byte cap off";
}

TEST(Registry, PruneWorksInBatchesOfAtMostTheGivenSize) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(reg->finish_activation(finished(running(numbered("a", i), "f", 1000 + i))).ok());
  EXPECT_EQ(reg->prune_activations(5000, 0, 4).value(), 4u);
  EXPECT_EQ(reg->prune_activations(5000, 0, 4).value(), 4u);
  EXPECT_EQ(reg->prune_activations(5000, 0, 4).value(), 2u);
  EXPECT_EQ(reg->count_activations().value(), 0u);
}

TEST(Registry, RefusesADatabaseFromANewerAgent) {
  test::TempDir dir;
  std::string path = dir.file("state.db");
  {
    auto db = SqliteDb::open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->exec("PRAGMA user_version = 99").ok());
  }
  auto reg = Registry::open(path);
  ASSERT_FALSE(reg.ok());
  EXPECT_NE(reg.error().message().find("99"), std::string::npos) << reg.error().message();
  auto db = SqliteDb::open(path);
  EXPECT_EQ(db->query_int64("PRAGMA user_version").value(), 99);  // never downgraded
}

TEST(Registry, OpenFailsWithAClearErrorWhenTheDirectoryIsMissing) {
  auto reg = Registry::open("/nonexistent-dir-for-stoke-tests/state.db");
  ASSERT_FALSE(reg.ok());
  EXPECT_NE(reg.error().message().find("/nonexistent-dir-for-stoke-tests/state.db"), std::string::npos)
      << reg.error().message();
  EXPECT_EQ(error_kind(reg.error()), ErrorKind::kIo);
}

TEST(Registry, ConcurrentCallersFromWorkerThreadsAllLand) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::string name = "t";
        name += std::to_string(t);
        name += '-';
        name += std::to_string(i);
        if (!reg->create_function(name, record()).ok()) ++failures;
        if (!reg->finish_activation(finished(running(name, name, 1000 + i))).ok()) ++failures;
        if (!reg->list_activations("", 5, "").ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(reg->list_functions()->functions_size(), 40);
  EXPECT_EQ(reg->count_activations().value(), 40u);
}

// The agent starts sandboxes and helpers; the database must not leak into them.
TEST(Registry, DatabaseFilesAreCloseOnExec) {
  test::TempDir dir;
  auto reg = open_registry(dir.file("state.db"));
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->create_function("f", record()).ok());
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (ec || target.string().rfind(dir.path(), 0) != 0) continue;
    int fd = std::stoi(e.path().filename().string());
    ++seen;
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC) << target.string();
  }
  EXPECT_GE(seen, 2);  // the database and its WAL at least
}

}  // namespace
}  // namespace stoke::agent
