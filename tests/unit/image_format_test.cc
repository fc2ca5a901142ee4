// The image format without a kernel round trip: a synthetic restore table is
// validated, written as an image, read back, corrupted and truncated; the
// manifest's compatibility checks name what differs.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "sandbox/base/unique_fd.h"
#include "sandbox/image/image.h"
#include "sandbox/image/table_check.h"
#include "tests/util/run_util.h"

namespace stoke::image {
namespace {

constexpr uint64_t kStack = 0x7ffff0000000ULL;
constexpr uint64_t kHeap = 0x555555554000ULL;

// A small, valid table: a file mapping of /bin/sh, a heap with data (holding
// the mailbox), the vdso block and a stack holding the signal frame.
struct TableBuilder {
  std::string bytes;
  TableHeader& th() { return *reinterpret_cast<TableHeader*>(bytes.data()); }
  VmaRecord* vmas() { return reinterpret_cast<VmaRecord*>(bytes.data() + th().vma_offset); }

  TableBuilder() {
    struct stat st {};
    stat("/bin/sh", &st);
    const char path[] = "/bin/sh";
    std::vector<VmaRecord> v(5);
    v[0] = {.start = 0x400000, .end = 0x401000, .file_offset = 0, .data_offset = kNoData, .copy_from = 0,
            .dev = st.st_dev, .ino = st.st_ino, .size = static_cast<uint64_t>(st.st_size),
            .mtime_sec = st.st_mtim.tv_sec, .mtime_nsec = st.st_mtim.tv_nsec, .path = 1, .prot = 5,
            .kind = kVmaFile, .flags = 0};
    v[1] = {.start = kHeap, .end = kHeap + 2 * kPageSize, .data_offset = 0, .prot = 3, .kind = kVmaAnonData};
    v[2] = {.start = 0x7fff00000000ULL, .end = 0x7fff00004000ULL, .data_offset = kNoData, .prot = 1, .kind = kVmaVvar};
    v[3] = {.start = 0x7fff00004000ULL, .end = 0x7fff00006000ULL, .data_offset = kNoData, .prot = 5, .kind = kVmaVdso};
    v[4] = {.start = kStack, .end = kStack + 4 * kPageSize, .data_offset = 2 * kPageSize,
            .copy_from = 2 * kPageSize, .prot = 3, .kind = kVmaStack};
    const uint32_t strings_len = 1 + sizeof path;
    uint64_t len = sizeof(TableHeader) + v.size() * sizeof(VmaRecord) + strings_len;
    len = (len + 7) & ~uint64_t{7};
    bytes.assign(len, '\0');
    th().magic = kTableMagic;
    th().version = kFormatVersion;
    th().table_length = static_cast<uint32_t>(len);
    th().vma_count = static_cast<uint32_t>(v.size());
    th().vma_offset = sizeof(TableHeader);
    th().strings_offset = static_cast<uint32_t>(sizeof(TableHeader) + v.size() * sizeof(VmaRecord));
    th().strings_length = strings_len;
    th().sigframe = kStack + 3 * kPageSize;
    th().mailbox = kHeap + 64;
    th().vdso_size = 2 * kPageSize;
    th().vvar_size = 4 * kPageSize;
    std::strcpy(th().kernel_release, "6.18.0-test");
    std::strcpy(th().comm, "python3");
    std::memcpy(vmas(), v.data(), v.size() * sizeof(VmaRecord));
    std::memcpy(bytes.data() + th().strings_offset + 1, path, sizeof path);
  }
  TableProblem check(uint64_t data_length = 6 * kPageSize) { return check_table(bytes.data(), bytes.size(), data_length); }
};

TEST(RestoreTable, WellFormedTableIsAccepted) {
  TableBuilder t;
  TableProblem p = t.check();
  EXPECT_EQ(p.exit_code, 0) << p.message;
}

TEST(RestoreTable, OverlappingVmasAreRejected) {
  TableBuilder t;
  t.vmas()[1].start = 0x400000;  // before the previous VMA's end
  TableProblem p = t.check();
  EXPECT_EQ(p.exit_code, kRestoreExitImageCorrupt);
  EXPECT_STREQ(p.message, "VMAs are not sorted or overlap");
  EXPECT_EQ(p.vma, 1u);
}

TEST(RestoreTable, DataOutsideTheDataAreaIsRejected) {
  TableBuilder t;
  EXPECT_EQ(t.check(5 * kPageSize).exit_code, kRestoreExitImageCorrupt);  // stack data runs past the end
  t.vmas()[1].data_offset = 123;  // not page aligned
  EXPECT_STREQ(t.check().message, "VMA data lies outside the image's data area");
}

TEST(RestoreTable, MemoryInTheRestorersRangeIsAnAddressConflict) {
  TableBuilder t;
  t.vmas()[1].start = kRestorerBase;
  t.vmas()[1].end = kRestorerBase + 2 * kPageSize;
  // Keep the order valid: the heap now lies above the file VMA and below the vvar.
  TableProblem p = t.check();
  EXPECT_EQ(p.exit_code, kRestoreExitAddressConflict) << p.message;
}

TEST(RestoreTable, SignalFrameMustBeOnTheStack) {
  TableBuilder t;
  t.th().sigframe = kHeap + 8;
  EXPECT_STREQ(t.check().message, "the saved signal frame is not on the saved stack");
}

TEST(RestoreTable, SharedMappingsMustBeReadOnlyFiles) {
  TableBuilder t;
  t.vmas()[0].flags = kVmaShared;
  EXPECT_EQ(t.check().exit_code, 0);
  t.vmas()[0].prot = 3;
  EXPECT_STREQ(t.check().message, "only read-only file mappings may be shared");
}

TEST(RestoreTable, BadMagicAndLengthAreRejected) {
  TableBuilder t;
  t.th().magic = 0;
  EXPECT_STREQ(t.check().message, "restore table has a bad magic number");
  TableBuilder u;
  EXPECT_STREQ(check_table(u.bytes.data(), u.bytes.size() - 8, 6 * kPageSize).message,
               "restore table length disagrees with the file header");
}

class ImageFileTest : public ::testing::Test {
 protected:
  // Six pages of data: heap (page 1 zero), stack (pages 2-3 zero, 4-5 data).
  std::string data_path() {
    std::string p = dir_.file("data");
    std::string data(6 * kPageSize, '\0');
    std::memset(data.data(), 'h', 100);
    std::memset(data.data() + 4 * kPageSize, 's', kPageSize);
    std::memset(data.data() + 5 * kPageSize, 't', 10);
    std::ofstream(p, std::ios::binary) << data;
    return p;
  }
  Result<ImageInfo> write(const TableBuilder& t, Manifest m = fresh_manifest()) {
    unique_fd fd(::open(data_path().c_str(), O_RDONLY | O_CLOEXEC));
    return write_image(dir_.file("images"), m, t.bytes, fd.get(), 0, 6 * kPageSize);
  }
  static Manifest fresh_manifest() {
    Manifest m;
    m.set_format_version(kFormatVersion);
    m.mutable_labels()->set_function_id("fn");
    return m;
  }
  test::TempDir dir_;
};

TEST_F(ImageFileTest, WrittenImageReadsBackAndIsContentAddressedAndReadOnly) {
  TableBuilder t;
  auto info = write(t);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->path, dir_.file("images") + "/" + info->sha256 + ".img");
  auto sha = sha256_file(info->path);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(sha.value(), info->sha256);
  struct stat st {};
  ASSERT_EQ(stat(info->path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  auto img = load_image(info->path);
  ASSERT_TRUE(img.ok()) << img.error().message();
  EXPECT_EQ(img->manifest.labels().function_id(), "fn");
  EXPECT_EQ(img->table, t.bytes);
  EXPECT_EQ(img->header.data_offset % kPageSize, 0u);
  EXPECT_EQ(img->header.data_length, 6 * kPageSize);
  // The same content again: the existing file is kept as it is.
  auto again = write(t);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->path, info->path);
  EXPECT_TRUE(again->reused);
  // Zero pages are not stored.
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_size));
  std::string json = manifest_json(img->manifest);
  EXPECT_NE(json.find("\"function_id\": \"fn\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"table_hash\""), std::string::npos) << json;
}

TEST_F(ImageFileTest, TruncatedImageNamesTheSizes) {
  auto info = write(TableBuilder());
  ASSERT_TRUE(info.ok());
  std::string copy = dir_.file("copy.img");
  std::filesystem::copy_file(info->path, copy);
  chmod(copy.c_str(), 0644);
  struct stat st {};
  stat(copy.c_str(), &st);
  ASSERT_EQ(truncate(copy.c_str(), st.st_size - 100), 0);
  auto r = read_image(copy);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("truncated"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("file has " + std::to_string(st.st_size - 100) + " bytes"), std::string::npos)
      << r.error().message();
  ASSERT_EQ(truncate(copy.c_str(), 50), 0);
  EXPECT_NE(read_image(copy).error().message().find("shorter than its header"), std::string::npos);
}

TEST_F(ImageFileTest, CorruptManifestTableOrHeaderIsRejected) {
  auto info = write(TableBuilder());
  ASSERT_TRUE(info.ok());
  auto img = load_image(info->path);
  ASSERT_TRUE(img.ok());
  auto corrupt_at = [&](uint64_t offset) {
    std::string copy = dir_.file("corrupt-at-" + std::to_string(offset));
    std::filesystem::copy_file(info->path, copy);
    chmod(copy.c_str(), 0644);
    std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = static_cast<char>(f.get());
    f.seekp(static_cast<std::streamoff>(offset));
    f.put(static_cast<char>(c ^ 0x5a));
    f.close();
    auto r = read_image(copy);
    return r.ok() ? std::string("accepted") : r.error().message();
  };
  EXPECT_NE(corrupt_at(img->header.manifest_offset + 2).find("corrupt (hash mismatch)"), std::string::npos);
  EXPECT_NE(corrupt_at(img->header.table_offset + 40).find("corrupt (hash mismatch)"), std::string::npos);
  EXPECT_NE(corrupt_at(0).find("bad magic"), std::string::npos);
  EXPECT_NE(corrupt_at(40).find("header is corrupt"), std::string::npos);
}

TEST_F(ImageFileTest, InvalidTableIsNotWritten) {
  TableBuilder t;
  t.th().sigframe = 0;
  auto info = write(t);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.error().message().find("signal frame"), std::string::npos) << info.error().message();
  // Nothing left behind, not even the temporary file.
  if (std::filesystem::exists(dir_.file("images"))) {
    EXPECT_TRUE(std::filesystem::is_empty(dir_.file("images")));
  }
}

// A manifest that matches this host, with one mapped file.
Manifest host_manifest(const std::string& path) {
  auto h = host_identity();
  EXPECT_TRUE(h.ok());
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.mutable_kernel()->set_release(h->kernel_release);
  m.mutable_kernel()->set_version(h->kernel_version);
  m.mutable_kernel()->set_vdso_hash(hex64(h->vdso_hash));
  m.mutable_kernel()->set_vdso_size(h->vdso_size);
  m.mutable_kernel()->set_vvar_size(h->vvar_size);
  m.mutable_kernel()->set_vvar_vclock_size(h->vvar_vclock_size);
  const auto* words = reinterpret_cast<const uint32_t*>(&h->cpu);
  for (int i = 0; i < 16; ++i) m.mutable_cpu()->add_words(words[i]);
  struct stat st {};
  stat(path.c_str(), &st);
  auto* f = m.add_files();
  f->set_path(path);
  f->set_dev(st.st_dev);
  f->set_ino(st.st_ino);
  f->set_size(static_cast<uint64_t>(st.st_size));
  f->set_mtime_sec(st.st_mtim.tv_sec);
  f->set_mtime_nsec(st.st_mtim.tv_nsec);
  return m;
}

TEST(Compatibility, MatchingManifestIsCompatible) {
  // As the kernel names a mapping: the resolved path, under a bind.
  std::string sh = std::filesystem::canonical("/bin/sh").string();
  Status s = check_compatible(host_manifest(sh), {{"/usr", "/usr"}});
  EXPECT_TRUE(s.ok()) << s.error().message();
}

// finding 17: manifest paths come from the dump a sandbox wrote. A real host
// file named with its true identity outside every bind used to pass (an
// oracle for which host files exist and what they are); now it is refused.
TEST(Compatibility, HostFileOutsideEveryBindIsRefusedEvenWithItsTrueIdentity) {
  test::TempDir dir;
  Manifest m = host_manifest("/etc/passwd");
  Status s = check_compatible(m, {{"/runtime", dir.path()}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("mapped file /etc/passwd did not come from the sandbox's binds"),
            std::string::npos)
      << s.error().message();
  EXPECT_FALSE(check_compatible(m).ok()) << "no binds: nothing may be looked at";
}

TEST(Compatibility, DotDotOutOfABindIsRefused) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("bind"));
  std::ofstream(dir.file("secret")) << "host";
  Manifest m = host_manifest(dir.file("secret"));
  m.mutable_files(0)->set_path("/runtime/../secret");
  Status s = check_compatible(m, {{"/runtime", dir.file("bind")}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("did not come from the sandbox's binds"), std::string::npos)
      << s.error().message();
}

TEST(Compatibility, SymlinkInsideABindIsNotFollowedOutOfIt) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("bind"));
  std::ofstream(dir.file("secret")) << "host";
  ASSERT_EQ(symlink("../secret", dir.file("bind/link").c_str()), 0);
  ASSERT_EQ(symlink(dir.file("secret").c_str(), dir.file("bind/abs").c_str()), 0);
  Manifest m = host_manifest(dir.file("secret"));
  for (const char* p : {"/runtime/link", "/runtime/abs"}) {
    m.mutable_files(0)->set_path(p);
    Status s = check_compatible(m, {{"/runtime", dir.file("bind")}});
    EXPECT_FALSE(s.ok()) << p << " was followed to the host file";
  }
}

TEST(Compatibility, FifoUnderABindIsLookedAtWithoutOpeningIt) {
  test::TempDir dir;
  ASSERT_EQ(mkfifo(dir.file("pipe").c_str(), 0600), 0);
  Manifest m = host_manifest(dir.file("pipe"));
  m.mutable_files(0)->set_path("/runtime/pipe");
  Status s = check_compatible(m, {{"/runtime", dir.path()}});  // returns: no open() that waits for a writer
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("not a regular file"), std::string::npos) << s.error().message();
}

TEST(Compatibility, KernelMismatchIsNamed) {
  Manifest m = host_manifest("/bin/sh");
  m.mutable_kernel()->set_release("4.19.0-old");
  Status s = check_compatible(m);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("kernel differs: image 4.19.0-old"), std::string::npos) << s.error().message();
}

TEST(Compatibility, VdsoAndCpuMismatchesAreNamed) {
  Manifest m = host_manifest("/bin/sh");
  m.mutable_kernel()->set_vdso_hash("0000000000000000");
  EXPECT_NE(check_compatible(m).error().message().find("vdso differs"), std::string::npos);
  m = host_manifest("/bin/sh");
  m.mutable_cpu()->set_words(15, m.cpu().words(15) ^ 1);  // xcr0 high word
  EXPECT_NE(check_compatible(m).error().message().find("CPU differs"), std::string::npos);
}

TEST(Compatibility, ChangedFileIsNamedThroughTheBindPrefix) {
  test::TempDir dir;
  std::string lib = dir.file("libfake.so");
  std::ofstream(lib) << "v1";
  Manifest m = host_manifest(lib);
  m.mutable_files(0)->set_path("/runtime/libfake.so");  // as the sandbox saw it
  std::vector<PathPrefix> binds{{"/runtime", dir.path()}};
  Status ok = check_compatible(m, binds);
  EXPECT_TRUE(ok.ok()) << ok.error().message();
  std::ofstream(lib) << "version 2";  // size (and mtime) change
  Status s = check_compatible(m, binds);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("mapped file /runtime/libfake.so changed since the image was made: size"),
            std::string::npos)
      << s.error().message();
  // The host side (path, device, inode, sizes) stays out of the message, which the agent logs.
  EXPECT_EQ(s.error().message().find(dir.path()), std::string::npos) << s.error().message();
  EXPECT_EQ(s.error().message().find(" 9"), std::string::npos) << s.error().message();
}

TEST(Hash64, DiffersOnAnyByteAndChainsTwoBuffers) {
  std::string a(1000, 'a');
  uint64_t h = hash64(a.data(), a.size());
  for (size_t i : {size_t{0}, size_t{7}, size_t{8}, size_t{999}}) {
    std::string b = a;
    b[i] ^= 1;
    EXPECT_NE(hash64(b.data(), b.size()), h) << i;
  }
  EXPECT_NE(hash64(a.data(), 999), h);
  EXPECT_EQ(hash64_2(a.data(), 10, a.data(), 20), hash64(a.data(), 20, hash64(a.data(), 10)));
}

}  // namespace
}  // namespace stoke::image
