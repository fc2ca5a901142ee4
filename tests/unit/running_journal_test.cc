// The running journal: what the agent writes before an activation starts, and
// reads back after a crash. Entries survive reopening, ended slots are
// reused, and anything but a whole valid slot is skipped.
#include "agent/running_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

JournalEntry entry(int i) {
  char id[33];
  std::snprintf(id, sizeof id, "%032x", i);
  return JournalEntry{id, "fn-" + std::to_string(i), static_cast<uint32_t>(i + 1), 1700000000000 + i};
}

std::vector<std::string> ids(const std::vector<JournalEntry>& es) {
  std::vector<std::string> out;
  for (const auto& e : es) out.push_back(e.activation_id);
  return out;
}

off_t size_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

TEST(RunningJournal, EntriesSurviveReopeningWithEveryField) {
  test::TempDir dir;
  const std::string path = dir.file("running.journal");
  {
    auto j = RunningJournal::open(path);
    ASSERT_TRUE(j.ok()) << j.error().message();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*j)->begin(entry(i)).ok());
  }  // the agent "dies": nothing else is written
  auto j = RunningJournal::open(path);
  ASSERT_TRUE(j.ok());
  auto es = (*j)->entries();
  ASSERT_TRUE(es.ok()) << es.error().message();
  ASSERT_EQ(es->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*es)[i].activation_id, entry(i).activation_id);
    EXPECT_EQ((*es)[i].function, entry(i).function);
    EXPECT_EQ((*es)[i].version, entry(i).version);
    EXPECT_EQ((*es)[i].start_ms, entry(i).start_ms);
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "ids and names are the owner's alone";
  ASSERT_TRUE((*j)->clear().ok());
  auto left = (*j)->entries();
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
  EXPECT_EQ(size_of(path), 0);
}

TEST(RunningJournal, EndedSlotsAreReusedSoTheFileStaysAsLargeAsTheMostInFlight) {
  test::TempDir dir;
  const std::string path = dir.file("running.journal");
  auto j = RunningJournal::open(path);
  ASSERT_TRUE(j.ok());
  for (int i = 0; i < 1000; ++i) {
    auto a = (*j)->begin(entry(2 * i));
    auto b = (*j)->begin(entry(2 * i + 1));
    ASSERT_TRUE(a.ok() && b.ok());
    (*j)->end(*a);
    (*j)->end(*b);
  }
  EXPECT_EQ((*j)->slots_in_use(), 0u);
  EXPECT_EQ(size_of(path), static_cast<off_t>(2 * RunningJournal::kSlotBytes));
  // Overwritten slots hold the latest entries; old ones are gone.
  auto es = (*j)->entries();
  ASSERT_TRUE(es.ok());
  EXPECT_EQ(es->size(), 2u);
}

TEST(RunningJournal, TornForeignAndPartialSlotsAreSkipped) {
  test::TempDir dir;
  const std::string path = dir.file("running.journal");
  {
    auto j = RunningJournal::open(path);
    ASSERT_TRUE(j.ok());
    for (int i = 0; i < 4; ++i) ASSERT_TRUE((*j)->begin(entry(i)).ok());
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // Slot 1: one byte of its name changed (a torn write); slot 2: zeros; then
  // half a slot at the end.
  ASSERT_EQ(::pwrite(fd, "X", 1, RunningJournal::kSlotBytes + 64), 1);
  std::string zeros(RunningJournal::kSlotBytes, '\0');
  ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), 2 * RunningJournal::kSlotBytes),
            static_cast<ssize_t>(zeros.size()));
  ASSERT_EQ(::pwrite(fd, "stkj", 4, 4 * RunningJournal::kSlotBytes), 4);
  ::close(fd);
  auto j = RunningJournal::open(path);
  ASSERT_TRUE(j.ok());
  auto es = (*j)->entries();
  ASSERT_TRUE(es.ok());
  EXPECT_EQ(ids(*es), (std::vector<std::string>{entry(0).activation_id, entry(3).activation_id}));
}

TEST(RunningJournal, RefusesEntriesASlotCannotHold) {
  test::TempDir dir;
  auto j = RunningJournal::open(dir.file("running.journal"));
  ASSERT_TRUE(j.ok());
  JournalEntry e = entry(1);
  e.function = std::string(RunningJournal::kMaxFunctionBytes + 1, 'f');
  EXPECT_FALSE((*j)->begin(e).ok());
  e = entry(1);
  e.activation_id = "short";
  EXPECT_FALSE((*j)->begin(e).ok());
  e = entry(1);
  e.function.clear();
  EXPECT_FALSE((*j)->begin(e).ok());
  EXPECT_EQ((*j)->slots_in_use(), 0u);
}

}  // namespace
}  // namespace stoke::agent
