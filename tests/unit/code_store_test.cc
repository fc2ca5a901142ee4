#include "agent/code_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

namespace fs = std::filesystem;

// ---- archives built in the test with libarchive's writer ---------------------

struct Entry {
  std::string path;
  unsigned type = AE_IFREG;
  std::string data;
  unsigned perm = 0644;
  std::string symlink;   // AE_IFLNK target
  std::string hardlink;  // makes this entry a hardlink to that path
};

Entry file(std::string path, std::string data, unsigned perm = 0644) {
  return Entry{std::move(path), AE_IFREG, std::move(data), perm, {}, {}};
}
Entry dir(std::string path, unsigned perm = 0755) { return Entry{std::move(path), AE_IFDIR, {}, perm, {}, {}}; }
Entry link(std::string path, std::string target) {
  return Entry{std::move(path), AE_IFLNK, {}, 0777, std::move(target), {}};
}

la_ssize_t append_to_string(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// A zip or (pax) tar holding entries, exactly as given: no path cleaning, so
// the hostile cases reach the store as an attacker would send them.
std::string make_archive(v1::CodeFormat format, const std::vector<Entry>& entries, bool gzip = false) {
  std::string out;
  archive* a = archive_write_new();
  if (format == v1::ZIP) {
    archive_write_set_format_zip(a);
  } else {
    archive_write_set_format_pax_restricted(a);
    if (gzip) archive_write_add_filter_gzip(a);
  }
  EXPECT_EQ(archive_write_open(a, &out, nullptr, append_to_string, nullptr), ARCHIVE_OK) << archive_error_string(a);
  for (const auto& e : entries) {
    archive_entry* en = archive_entry_new();
    archive_entry_set_pathname(en, e.path.c_str());
    archive_entry_set_filetype(en, e.type);
    archive_entry_set_perm(en, e.perm);
    if (e.type == AE_IFREG && e.hardlink.empty()) archive_entry_set_size(en, static_cast<la_int64_t>(e.data.size()));
    if (e.type == AE_IFLNK) archive_entry_set_symlink(en, e.symlink.c_str());
    if (!e.hardlink.empty()) {
      archive_entry_set_hardlink(en, e.hardlink.c_str());
      archive_entry_set_size(en, 0);
    }
    if (e.type == AE_IFCHR || e.type == AE_IFBLK) archive_entry_set_rdev(en, makedev(1, 3));
    EXPECT_EQ(archive_write_header(a, en), ARCHIVE_OK) << e.path << ": " << archive_error_string(a);
    if (!e.data.empty() && e.hardlink.empty()) {
      EXPECT_EQ(archive_write_data(a, e.data.data(), e.data.size()), static_cast<la_ssize_t>(e.data.size()));
    }
    archive_entry_free(en);
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK) << archive_error_string(a);
  archive_write_free(a);
  return out;
}

v1::FunctionConfig archive_config(v1::CodeFormat format, const std::vector<Entry>& entries) {
  v1::FunctionConfig c;
  c.set_runtime(v1::PYTHON);
  c.set_code_format(format);
  c.set_code(make_archive(format, entries));
  return c;
}

v1::FunctionConfig single_file(const std::string& name, const std::string& bytes) {
  v1::FunctionConfig c;
  c.set_runtime(v1::EXEC);
  c.set_code_format(v1::SINGLE_FILE);
  c.set_code_file_name(name);
  c.set_code(bytes);
  return c;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

unsigned mode_of(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::vector<std::string> names_in(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

struct Store {
  test::TempDir state;
  CodeStore store;
  explicit Store(CodeLimits limits = {}) : store(open(state, limits)) {}
  static CodeStore open(const test::TempDir& d, CodeLimits limits) {
    auto s = CodeStore::open(d.path() + "/code", limits);
    if (!s.ok()) throw std::runtime_error(s.error().message());
    return std::move(s.value());
  }
};

// ---- single file ---------------------------------------------------------------

TEST(CodeStore, SingleFileIsStoredExecutableUnderItsName) {
  Store s;
  auto stored = s.store.store(single_file("action", "#!/bin/sh\necho hi\n"));
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  EXPECT_EQ(stored->sha256.size(), 64u);
  EXPECT_EQ(stored->sha256, code_sha256(single_file("action", "#!/bin/sh\necho hi\n")).value());
  EXPECT_EQ(stored->dir, s.store.root() + "/" + stored->sha256);
  EXPECT_EQ(stored->dir, s.store.path_for(stored->sha256));
  EXPECT_EQ(stored->size, 18u);
  EXPECT_TRUE(s.store.exists(stored->sha256));
  EXPECT_EQ(names_in(stored->dir), std::vector<std::string>{"action"});
  EXPECT_EQ(slurp(stored->dir + "/action"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(mode_of(stored->dir + "/action"), 0755u);
  EXPECT_EQ(mode_of(stored->dir), 0755u);
}

// The store itself enforces the configured upload limit (the agent passes
// max_code_bytes), whatever the caller checked.
TEST(CodeStore, UploadOverTheConfiguredLimitIsRefusedNamingTheSetting) {
  CodeLimits limits;
  limits.max_upload_bytes = 100;
  Store s(limits);
  auto stored = s.store.store(single_file("action", std::string(101, 'x')));
  ASSERT_FALSE(stored.ok());
  EXPECT_EQ(error_kind(stored.error()), ErrorKind::kInvalid);
  EXPECT_NE(stored.error().message().find("max_code_bytes"), std::string::npos) << stored.error().message();
  EXPECT_TRUE(names_in(s.store.root()).empty());
  EXPECT_TRUE(s.store.store(single_file("action", std::string(100, 'x'))).ok());
}

// The store's root is root's alone, also when an older version made it 0755.
TEST(CodeStore, RootIsOwnerOnlyAndTightenedWhenItExistedWider) {
  test::TempDir d;
  ASSERT_EQ(mkdir((d.path() + "/code").c_str(), 0755), 0);
  ASSERT_EQ(chmod((d.path() + "/code").c_str(), 0755), 0);
  auto s = CodeStore::open(d.path() + "/code");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(mode_of(d.path() + "/code"), 0700u);
}

TEST(CodeStore, SingleFileNameMustBeAPlainFileName) {
  Store s;
  for (const char* bad : {"", ".", "..", "a/b", "/abs", "../x"}) {
    auto r = s.store.store(single_file(bad, "x"));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(error_kind(r.error()), ErrorKind::kInvalid) << r.error().message();
    EXPECT_NE(r.error().message().find("code_file_name"), std::string::npos) << r.error().message();
  }
  EXPECT_TRUE(names_in(s.store.root()).empty());
}

TEST(CodeStore, SameBytesUnderAnotherNameOrFormatAreAnotherTree) {
  auto a = code_sha256(single_file("main.py", "x")).value();
  auto b = code_sha256(single_file("main.js", "x")).value();
  EXPECT_NE(a, b);
  v1::FunctionConfig unspecified;
  unspecified.set_code("x");
  auto bad = code_sha256(unspecified);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(error_kind(bad.error()), ErrorKind::kInvalid);
}

// ---- archives --------------------------------------------------------------------

class CodeStoreFormats : public ::testing::TestWithParam<v1::CodeFormat> {};

TEST_P(CodeStoreFormats, ArchiveTreeIsExtractedWithFilesDirsAndInnerSymlinks) {
  Store s;
  auto stored = s.store.store(archive_config(GetParam(), {
                                                             dir("app/"),
                                                             file("app/main.py", "def main(a): return a\n"),
                                                             file("app/bin/run", "#!/bin/sh\n", 0755),
                                                             link("app/current", "main.py"),
                                                             link("app/bin/up", "../main.py"),
                                                             file("./top.txt", "top"),
                                                         }));
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  const std::string& d = stored->dir;
  EXPECT_EQ(names_in(d), (std::vector<std::string>{"app", "top.txt"}));
  EXPECT_EQ(slurp(d + "/app/main.py"), "def main(a): return a\n");
  EXPECT_EQ(slurp(d + "/app/bin/run"), "#!/bin/sh\n");
  EXPECT_EQ(fs::read_symlink(d + "/app/current").string(), "main.py");
  EXPECT_EQ(fs::read_symlink(d + "/app/bin/up").string(), "../main.py");
  EXPECT_EQ(slurp(d + "/app/bin/up"), "def main(a): return a\n");
  EXPECT_EQ(stored->size, 22u + 10u + 3u);
  // Nothing but the tree is left in the store.
  EXPECT_EQ(names_in(s.store.root()), std::vector<std::string>{stored->sha256});
}

TEST_P(CodeStoreFormats, SameUploadTwiceIsOneTreeWithOneSha) {
  Store s;
  auto config = archive_config(GetParam(), {file("main.py", "print(1)\n")});
  auto first = s.store.store(config);
  ASSERT_TRUE(first.ok()) << first.error().message();
  auto second = s.store.store(config);
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(first->sha256, second->sha256);
  EXPECT_EQ(first->dir, second->dir);
  EXPECT_EQ(second->size, first->size);
  EXPECT_EQ(names_in(s.store.root()).size(), 1u);
}

TEST_P(CodeStoreFormats, ConcurrentStoresOfTheSameUploadAgree) {
  Store s;
  auto config = archive_config(GetParam(), {file("a.py", std::string(100000, 'a')), file("b/c.py", "c")});
  std::vector<Result<StoredCode>> results(4, Error{});
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i)
    threads.emplace_back([&, i] { results[i] = s.store.store(config); });
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->sha256, results[0]->sha256);
    EXPECT_EQ(r->size, 100001u);
  }
  EXPECT_EQ(names_in(s.store.root()).size(), 1u);  // losers removed their temp dirs
}

// One hostile archive: what it holds, and words the error must contain.
struct Rejection {
  const char* name;
  std::vector<Entry> entries;
  const char* expect;  // the entry named, or the reason
  bool zip_too = true;  // false: the zip format cannot express it
};

std::vector<Rejection> rejections() {
  return {
      {"DotDotPath", {file("ok.py", "x"), file("../x", "evil")}, "'../x'"},
      {"DotDotInside", {file("a/../../x", "evil")}, "'..'"},
      {"AbsolutePath", {file("/etc/cron.d/evil", "evil")}, "absolute"},
      {"SymlinkEscaping", {file("ok.py", "x"), link("sub/l", "../../etc/passwd")}, "'sub/l'"},
      {"SymlinkAbsolute", {file("ok.py", "x"), link("l", "/etc/passwd")}, "absolute"},
      {"SymlinkChainEscaping", {file("ok.py", "x"), link("s", "."), link("t", "s/s/..")}, "'t'"},
      {"FileThroughSymlink", {dir("sub/"), link("d", "sub"), file("d/x", "evil")}, "symlink or a file"},
      {"Hardlink", {file("ok.py", "x"), Entry{"h", AE_IFREG, {}, 0644, {}, "ok.py"}}, "hardlink", false},
      {"Fifo", {file("ok.py", "x"), Entry{"p", AE_IFIFO, {}, 0644, {}, {}}}, "FIFO", false},
      {"CharDevice", {file("ok.py", "x"), Entry{"null", AE_IFCHR, {}, 0666, {}, {}}}, "character device", false},
      {"BlockDevice", {file("ok.py", "x"), Entry{"sda", AE_IFBLK, {}, 0660, {}, {}}}, "block device", false},
      {"OversizedFile", {file("big.bin", std::string(5000, 'b'))}, "larger than 4096 bytes"},
      {"OversizedInTotal", {file("a.bin", std::string(3000, 'a')), file("b.bin", std::string(3000, 'b'))},
       "'b.bin'"},
      {"TooManyEntries", {file("1", "1"), file("2", "2"), file("3", "3"), file("4", "4"), file("5", "5"),
                          file("6", "6"), file("7", "7"), file("8", "8"), file("9", "9")},
       "more than 8 entries"},
      {"NoFiles", {dir("empty/")}, "has no files"},
  };
}

TEST_P(CodeStoreFormats, HostileArchivesAreRejectedNamingTheEntryAndLeaveNothing) {
  for (const auto& r : rejections()) {
    if (GetParam() == v1::ZIP && !r.zip_too) continue;
    SCOPED_TRACE(r.name);
    Store s(CodeLimits{4096, 8});
    auto stored = s.store.store(archive_config(GetParam(), r.entries));
    ASSERT_FALSE(stored.ok());
    EXPECT_EQ(error_kind(stored.error()), ErrorKind::kInvalid) << stored.error().message();
    EXPECT_NE(stored.error().message().find(r.expect), std::string::npos) << stored.error().message();
    EXPECT_TRUE(names_in(s.store.root()).empty()) << "left behind: " << names_in(s.store.root()).size();
  }
}

TEST_P(CodeStoreFormats, GarbageIsRejectedAsInvalid) {
  Store s;
  v1::FunctionConfig c;
  c.set_code_format(GetParam());
  c.set_code(std::string(2048, '\x5a'));
  auto stored = s.store.store(c);
  ASSERT_FALSE(stored.ok());
  EXPECT_EQ(error_kind(stored.error()), ErrorKind::kInvalid) << stored.error().message();
  EXPECT_TRUE(names_in(s.store.root()).empty());
}

INSTANTIATE_TEST_SUITE_P(ZipAndTar, CodeStoreFormats, ::testing::Values(v1::ZIP, v1::TAR),
                         [](const ::testing::TestParamInfo<v1::CodeFormat>& p) {
                           return std::string(p.param == v1::ZIP ? "Zip" : "Tar");
                         });

TEST(CodeStore, ModesAreNormalisedForTheSandboxUser) {
  Store s;
  auto stored = s.store.store(archive_config(v1::TAR, {
                                                          dir("private/", 0700),
                                                          dir("sticky/", 01777),
                                                          file("private/secret.txt", "s", 0600),
                                                          file("setuid", "u", 04755),
                                                          file("setgid-exec", "g", 02710),
                                                          file("group-only", "g", 0640),
                                                          file("other-exec", "o", 0601),
                                                          file("sticky/plain", "p", 01644),
                                                      }));
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  const std::string& d = stored->dir;
  EXPECT_EQ(mode_of(d), 0755u);
  EXPECT_EQ(mode_of(d + "/private"), 0755u);
  EXPECT_EQ(mode_of(d + "/sticky"), 0755u);
  EXPECT_EQ(mode_of(d + "/private/secret.txt"), 0644u);
  EXPECT_EQ(mode_of(d + "/setuid"), 0755u);
  EXPECT_EQ(mode_of(d + "/setgid-exec"), 0755u);
  EXPECT_EQ(mode_of(d + "/group-only"), 0644u);
  EXPECT_EQ(mode_of(d + "/other-exec"), 0755u);
  EXPECT_EQ(mode_of(d + "/sticky/plain"), 0644u);
}

TEST(CodeStore, GzippedTarIsAccepted) {
  Store s;
  v1::FunctionConfig c;
  c.set_code_format(v1::TAR);
  c.set_code(make_archive(v1::TAR, {file("index.js", "module.exports = {}\n")}, /*gzip=*/true));
  ASSERT_EQ(c.code().substr(0, 2), "\x1f\x8b");
  auto stored = s.store.store(c);
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  EXPECT_EQ(slurp(stored->dir + "/index.js"), "module.exports = {}\n");
}

TEST(CodeStore, LaterTarEntryForTheSamePathWins) {
  Store s;
  auto stored = s.store.store(archive_config(v1::TAR, {file("a.py", "old"), file("a.py", "newer", 0755)}));
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  EXPECT_EQ(slurp(stored->dir + "/a.py"), "newer");
  EXPECT_EQ(mode_of(stored->dir + "/a.py"), 0755u);
  EXPECT_EQ(stored->size, 5u);
}

TEST(CodeStore, CleanupRemovesTempDirsACrashLeftAndNothingElse) {
  Store s;
  auto kept = s.store.store(single_file("main.py", "x"));
  ASSERT_TRUE(kept.ok());
  // What a crash mid-extraction leaves: a half-written temp tree.
  std::string partial = s.store.root() + "/.tmp-" + std::string(64, 'c') + "-123-0";
  fs::create_directories(partial + "/deep/er");
  std::ofstream(partial + "/deep/er/half.py") << "def ma";
  fs::create_symlink("/etc", partial + "/deep/etc");  // removal must not follow it

  auto n = s.store.cleanup_partial();
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(names_in(s.store.root()), std::vector<std::string>{kept->sha256});
  EXPECT_EQ(slurp(kept->dir + "/main.py"), "x");
  EXPECT_TRUE(fs::exists("/etc/passwd"));
  EXPECT_EQ(s.store.cleanup_partial().value(), 0);
}

TEST(CodeStore, RemoveUnreferencedCollectsOnlyUnkeptTrees) {
  Store s;
  auto a = s.store.store(single_file("a.py", "a"));
  auto b = s.store.store(archive_config(v1::ZIP, {file("b/b.py", "b")}));
  ASSERT_TRUE(a.ok() && b.ok());
  auto n = s.store.remove_unreferenced({a->sha256});
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(*n, 1);
  EXPECT_TRUE(s.store.exists(a->sha256));
  EXPECT_FALSE(s.store.exists(b->sha256));
  EXPECT_EQ(names_in(s.store.root()), std::vector<std::string>{a->sha256});
  // Stored again after collection: a fresh, complete tree.
  auto again = s.store.store(archive_config(v1::ZIP, {file("b/b.py", "b")}));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(slurp(again->dir + "/b/b.py"), "b");
}

TEST(CodeStore, ExistsOnlyForWellFormedStoredShas) {
  Store s;
  EXPECT_FALSE(s.store.exists(""));
  EXPECT_FALSE(s.store.exists(".."));
  EXPECT_FALSE(s.store.exists(std::string(64, 'a')));
  EXPECT_FALSE(s.store.exists(std::string(64, 'A')));
}

}  // namespace
}  // namespace stoke::agent
