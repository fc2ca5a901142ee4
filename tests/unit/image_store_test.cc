// The checkpoint image index: an entry serves only the content it was built
// for (its key), survives a restart, and is dropped at start when the
// registry no longer has that version (docs/security/storage.md, finding 12).
#include "agent/image_store.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "agent/checkpoint_build.h"
#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

const std::string kImageA(64, 'a');
const std::string kImageB(64, 'b');

InstanceSpec spec_of(const std::string& function, const std::string& code_sha, std::vector<std::string> env) {
  InstanceSpec s;
  s.function = function;
  s.version = 1;
  s.runtime = v1::PYTHON;
  s.code_dir = "/state/code/" + code_sha;
  s.code_path = "/code/f.py";
  s.entry = "main";
  s.env = std::move(env);
  return s;
}

struct Images {
  test::TempDir dir;
  std::unique_ptr<ImageStore> store;
  Images() { reopen(); }
  void reopen() {
    store = std::make_unique<ImageStore>(dir.path() + "/images", "runtime-1");
    Status s = store->open();
    if (!s.ok()) ADD_FAILURE() << s.error().message();
  }
  void add_image(const std::string& sha) { std::ofstream(dir.path() + "/images/" + sha + ".img") << "img"; }
};

TEST(ImageKey, DiffersForEveryPartOfWhatTheImageHolds) {
  InstanceSpec base = spec_of("f", std::string(64, '1'), {"OWNER=alice"});
  const std::string k = image_key(base, "rt");
  EXPECT_EQ(k.size(), 64u);
  EXPECT_EQ(image_key(base, "rt"), k) << "stable";
  auto changed = [&](auto edit) {
    InstanceSpec s = base;
    edit(s);
    return image_key(s, "rt");
  };
  EXPECT_NE(changed([](InstanceSpec& s) { s.function = "g"; }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.code_dir = "/state/code/" + std::string(64, '2'); }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.entry = "other"; }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.code_path = "/code/g.py"; }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.env = {"OWNER=bob"}; }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.env = {}; }), k);
  EXPECT_NE(changed([](InstanceSpec& s) { s.runtime = v1::NODE; }), k);
  EXPECT_NE(image_key(base, "rt2"), k);
  // Framing: moving a byte between fields is another key.
  EXPECT_NE(changed([](InstanceSpec& s) { s.env = {"OWNER=alic", "e"}; }), k);
  // The version number is not part of it (it restarts at 1 on re-create).
  EXPECT_EQ(changed([](InstanceSpec& s) { s.version = 7; }), k);
}

TEST(ImageStore, LookupWithAnotherKeyFindsNothing) {
  Images im;
  im.add_image(kImageA);
  const std::string alice = image_key(spec_of("f", std::string(64, '1'), {"OWNER=alice"}), "runtime-1");
  const std::string bob = image_key(spec_of("f", std::string(64, '1'), {"OWNER=bob"}), "runtime-1");
  ASSERT_TRUE(im.store->record("f", 1, alice, kImageA).ok());
  EXPECT_TRUE(im.store->image_for("f", 1, alice).has_value());
  EXPECT_FALSE(im.store->image_for("f", 1, bob).has_value());
  EXPECT_FALSE(im.store->image_for("f", 1, "").has_value());
  // And after a restart.
  im.reopen();
  EXPECT_TRUE(im.store->image_for("f", 1, alice).has_value());
  EXPECT_FALSE(im.store->image_for("f", 1, bob).has_value());
}

// "team/f" (a function of namespace team) has an index file like any other
// and is found again after a restart, apart from plain "f".
TEST(ImageStore, ANamespacedFunctionsImageIsRecordedAndFoundAfterARestart) {
  Images im;
  im.add_image(kImageA);
  im.add_image(kImageB);
  const std::string k = image_key(spec_of("team/f", std::string(64, '1'), {}), "runtime-1");
  ASSERT_TRUE(im.store->record("team/f", 1, k, kImageA).ok());
  ASSERT_TRUE(im.store->record("f", 1, k, kImageB).ok());
  im.reopen();
  EXPECT_EQ(im.store->image_for("team/f", 1, k), im.dir.path() + "/images/" + kImageA + ".img");
  EXPECT_EQ(im.store->image_for("f", 1, k), im.dir.path() + "/images/" + kImageB + ".img");
  im.store->drop_function("team/f");
  EXPECT_FALSE(im.store->image_for("team/f", 1, k).has_value());
  EXPECT_TRUE(im.store->image_for("f", 1, k).has_value());
  EXPECT_TRUE(std::filesystem::is_empty(im.dir.path() + "/images/index") == false);
}

TEST(ImageStore, RetainDropsEntriesOfDeletedOrChangedFunctionsAndTheirFiles) {
  Images im;
  im.add_image(kImageA);
  im.add_image(kImageB);
  const std::string ka = image_key(spec_of("gone", std::string(64, '1'), {}), "runtime-1");
  const std::string kb = image_key(spec_of("kept", std::string(64, '2'), {}), "runtime-1");
  ASSERT_TRUE(im.store->record("gone", 1, ka, kImageA).ok());
  ASSERT_TRUE(im.store->record("kept", 1, kb, kImageB).ok());
  EXPECT_EQ(im.store->retain({{"kept", {1, kb}}}), 1u);
  EXPECT_FALSE(std::filesystem::exists(im.dir.path() + "/images/" + kImageA + ".img"));
  EXPECT_FALSE(std::filesystem::exists(im.dir.path() + "/images/index/gone@1"));
  EXPECT_TRUE(im.store->image_for("kept", 1, kb).has_value());
  // A changed key (same name and version, other content) is dropped too.
  EXPECT_EQ(im.store->retain({{"kept", {1, ka}}}), 1u);
  EXPECT_EQ(im.store->size(), 0u);
}

// An index entry written by the previous version (sha only, no key) matches
// no lookup, whatever it names.
TEST(ImageStore, EntryWithoutAKeyFromAnOlderVersionMatchesNothing) {
  Images im;
  im.add_image(kImageA);
  std::ofstream(im.dir.path() + "/images/index/f@1") << kImageA << "\n";
  im.reopen();
  const std::string k = image_key(spec_of("f", std::string(64, '1'), {}), "runtime-1");
  EXPECT_FALSE(im.store->image_for("f", 1, k).has_value());
  EXPECT_EQ(im.store->retain({{"f", {1, k}}}), 1u);
}

TEST(ImageStore, DirectoriesAreOwnerOnlyAndTightenedWhenWider) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/images/index");
  chmod((dir.path() + "/images").c_str(), 0755);
  chmod((dir.path() + "/images/index").c_str(), 0755);
  ImageStore store(dir.path() + "/images", "rt");
  ASSERT_TRUE(store.open().ok());
  struct stat st {};
  ASSERT_EQ(stat((dir.path() + "/images").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat((dir.path() + "/images/index").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

}  // namespace
}  // namespace stoke::agent
