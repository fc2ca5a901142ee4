// Checkpoint/restore through real sandboxes: tests/priv/restore_driver.py
// checkpoints itself in one sandbox (libstoke_checkpoint.so), the dump is
// finalized into an image, and stoke-restore brings it back in others, each a
// full stoke sandbox from the real Spawner.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "rootfs/lean_rootfs.h"
#include "sandbox/id_map.h"
#include "sandbox/image/image.h"
#include "tests/util/restore_util.h"
#include "tests/util/run_util.h"

namespace stoke {
namespace {

// The binds the restore sandbox has (its lean rootfs and /runtime):
// check_compatible looks at mapped files through these only.
std::vector<image::PathPrefix> sandbox_binds() {
  std::vector<image::PathPrefix> binds;
  for (const auto& e : host_lean_rootfs())
    if (e.kind == RootfsEntry::Kind::kBindDir || e.kind == RootfsEntry::Kind::kBindFile)
      binds.push_back({e.path, e.source});
  binds.push_back({"/runtime", test::runtimes_dir()});
  return binds;
}

using nlohmann::json;
using test::Instance;
using namespace std::chrono_literals;

class RestoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    SpawnerOptions o;
    o.cgroup.parent_name = "stoke-restore-test-" + std::to_string(getpid());
    auto s = Spawner::create(o);
    if (!s.ok()) {
      setup_error_ = s.error().message();
      return;
    }
    spawner_ = s.value().release();
    dir_ = new test::TempDir();
    auto img = test::make_driver_image(*spawner_, dir_->file("images"));
    if (!img.ok()) {
      setup_error_ = img.error().message();
      return;
    }
    image_ = new image::ImageInfo(img.value());
  }
  static void TearDownTestSuite() {
    delete image_;
    image_ = nullptr;
    delete spawner_;
    spawner_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates namespaces and cgroups";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_NE(image_, nullptr);
  }

  static SandboxSpec spec() {
    return test::restore_test_spec(host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid())));
  }

  // A restored instance that has said {"restored": true}.
  std::unique_ptr<Instance> restore(SandboxSpec s = spec(), const std::string& path = "") {
    auto inst = Instance::restore(*spawner_, std::move(s), path.empty() ? image_->path : path);
    EXPECT_TRUE(inst.ok()) << inst.error().message();
    if (!inst.ok()) return nullptr;
    auto hello = inst.value()->read_json();
    EXPECT_TRUE(hello.ok()) << hello.error().message();
    if (!hello.ok()) return nullptr;
    EXPECT_EQ(hello.value().value("restored", false), true) << hello.value().dump();
    return std::move(inst.value());
  }

  json request(Instance& inst, const json& cmd, std::chrono::milliseconds timeout = 10s) {
    auto r = inst.request(cmd, timeout);
    EXPECT_TRUE(r.ok()) << cmd.dump() << ": " << r.error().message();
    return r.ok() ? r.value() : json::object();
  }

  // Restores `path` and expects the restorer to refuse with `code`.
  void expect_refused(const std::string& path, int code, const std::string& words) {
    auto inst = Instance::restore(*spawner_, spec(), path);
    ASSERT_TRUE(inst.ok()) << inst.error().message();
    auto st = inst.value()->wait(10s);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->signal, 0) << "the restorer crashed instead of refusing";
    EXPECT_EQ(st->exit_code, code) << inst.value()->drain_stderr();
    std::string err = inst.value()->drain_stderr();
    EXPECT_EQ(err.rfind("stoke-restore: ", 0), 0u) << err;
    EXPECT_NE(err.find(words), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line expected: " << err;
  }

  // A copy of the image rewritten with an edited table and manifest.
  std::string rewritten(const std::function<void(image::LoadedImage&)>& edit) {
    auto img = image::load_image(image_->path);
    EXPECT_TRUE(img.ok()) << img.error().message();
    if (!img.ok()) return "";
    edit(img.value());
    stoke::unique_fd fd(::open(image_->path.c_str(), O_RDONLY | O_CLOEXEC));
    auto info = image::write_image(dir_->file("edited"), img.value().manifest, img.value().table, fd.get(),
                                   img.value().header.data_offset, img.value().header.data_length);
    EXPECT_TRUE(info.ok()) << info.error().message();
    return info.ok() ? info.value().path : "";
  }

  static inline Spawner* spawner_ = nullptr;
  static inline test::TempDir* dir_ = nullptr;
  static inline image::ImageInfo* image_ = nullptr;
  static inline std::string setup_error_;
};

TEST_F(RestoreTest, StateSurvivesRestore) {
  auto inst = restore();
  ASSERT_TRUE(inst);
  json st = request(*inst, {{"op", "state"}});
  EXPECT_EQ(st["counter"], 41);
  EXPECT_EQ(st["greeting"], "made before the checkpoint");
  long long expected = 0;
  for (long long i = 0; i < 20000; ++i) expected += i * i;
  EXPECT_EQ(st["table"], expected);
  EXPECT_EQ(st["match"], json::array({"42", "answer"}));
  EXPECT_EQ(st["decimal"], "0.125");
  EXPECT_EQ(st["email"], "hi");
  EXPECT_EQ(st["http"], "I'm a Teapot");
  EXPECT_EQ(st["modules"], json::array({"json", "re", "decimal", "email", "http.client"}));
  EXPECT_EQ(st["pid"], 1) << "the restored process is pid 1 of its sandbox, like the original";
  EXPECT_EQ(request(*inst, {{"op", "incr"}})["counter"], 42);
  EXPECT_EQ(request(*inst, {{"op", "incr"}})["counter"], 43);
  auto ex = inst->wait();
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->exit_code, 0) << inst->drain_stderr();
}

TEST_F(RestoreTest, TimeWorksWithoutSyscallsAfterRestore) {
  // The vdso was moved to where glibc expects it: with every time syscall
  // fatal, time.time() still works and is right.
  auto inst = restore();
  ASSERT_TRUE(inst);
  json r = request(*inst, {{"op", "time_without_syscalls"}});
  ASSERT_TRUE(r.contains("time")) << r.dump() << " " << inst->drain_stderr();
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(r["time"].get<double>(), now, 5.0);
  EXPECT_GT(r["monotonic"].get<double>(), 0);
}

TEST_F(RestoreTest, RestoredProcessGrowsThreadsSubprocessesImportsAndLibraries) {
  SandboxSpec s = spec();
  s.limits.memory_bytes = 1024ULL << 20;
  auto inst = restore(s);
  ASSERT_TRUE(inst);
  json alloc = request(*inst, {{"op", "alloc"}, {"mb", 300}}, 60s);
  EXPECT_EQ(alloc["blocks"], 300 * 512) << alloc.dump();
  EXPECT_EQ(alloc["big"], 300 << 19);
  json th = request(*inst, {{"op", "thread"}});
  EXPECT_EQ(th["value"], 4999950000LL) << th.dump();
  EXPECT_NE(th["tid"], 1);
  EXPECT_EQ(request(*inst, {{"op", "subprocess"}})["out"], "from a child");
  json imp = request(*inst, {{"op", "import_new"}});
  EXPECT_EQ(imp["before"], false);
  EXPECT_FALSE(imp["dialects"].empty()) << imp.dump();
  json dl = request(*inst, {{"op", "dlopen_new"}});
  EXPECT_EQ(dl["before"], false);
  EXPECT_EQ(dl.value("uuid", std::string()).size(), 32u) << dl.dump();
  EXPECT_EQ(request(*inst, {{"op", "state"}})["counter"], 41);
  auto ex = inst->wait();
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->exit_code, 0) << inst->drain_stderr();
}

TEST_F(RestoreTest, DeadlineKillsARestoredInstance) {
  auto inst = restore();
  ASSERT_TRUE(inst);
  ASSERT_TRUE(inst->send({{"op", "sleep"}, {"s", 100}}).ok());
  auto t0 = std::chrono::steady_clock::now();
  auto st = inst->sandbox().wait(t0 + 300ms);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_TRUE(st->timed_out);
  EXPECT_EQ(st->signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST_F(RestoreTest, MemoryLimitOomIsReported) {
  SandboxSpec s = spec();
  s.limits.memory_bytes = 96ULL << 20;
  auto inst = restore(s);
  ASSERT_TRUE(inst);
  ASSERT_TRUE(inst->send({{"op", "alloc"}, {"mb", 400}}).ok());
  auto st = inst->wait(30s);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_TRUE(st->oom) << "exit " << st->exit_code << " signal " << st->signal;
  EXPECT_EQ(st->signal, SIGKILL);
}

TEST_F(RestoreTest, ConcurrentRestoredInstancesDrawDifferentRandomNumbers) {
  auto a = restore();
  auto b = restore();
  ASSERT_TRUE(a && b);
  json ra = request(*a, {{"op", "random"}});
  json rb = request(*b, {{"op", "random"}});
  ASSERT_TRUE(ra.contains("random") && rb.contains("random"));
  EXPECT_NE(ra["random"], rb["random"]) << "after_restore() must reseed every copy";
}

TEST_F(RestoreTest, EightConcurrentRestoresFromOneImage) {
  std::vector<std::unique_ptr<Instance>> all;
  for (int i = 0; i < 8; ++i) {
    all.push_back(restore());
    ASSERT_TRUE(all.back()) << "restore " << i;
  }
  // All alive at once; each has its own copy of the state.
  for (int i = 0; i < 8; ++i)
    for (int k = 0; k <= i; ++k) request(*all[static_cast<size_t>(i)], {{"op", "incr"}});
  std::set<long long> randoms;
  for (int i = 0; i < 8; ++i) {
    json st = request(*all[static_cast<size_t>(i)], {{"op", "state"}});
    EXPECT_EQ(st["counter"], 41 + i + 1);
    randoms.insert(request(*all[static_cast<size_t>(i)], {{"op", "random"}})["random"].get<long long>());
  }
  EXPECT_EQ(randoms.size(), 8u);
  for (auto& inst : all) {
    auto st = inst->wait();
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->exit_code, 0);
  }
}

TEST_F(RestoreTest, RestoredInstancePassesTheIsolationChecks) {
  auto inst = restore();
  ASSERT_TRUE(inst);
  json r = request(*inst, {{"op", "probe"}}, 20s);
  ASSERT_EQ(r["rc"], 0) << r.dump();
  const json& rep = r["report"];
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(std::stoull(rep.value(set, std::string("ff")), nullptr, 16), 0u) << set;
  EXPECT_EQ(rep["NoNewPrivs"], 1);
  EXPECT_EQ(rep["Seccomp"], 2);
  EXPECT_EQ(rep["ppid"], 1) << "the probe is a child of the restored pid 1";
  EXPECT_EQ(rep["interfaces"], json::array({"lo"}));
  EXPECT_EQ(rep["root_write"], "EROFS");
  EXPECT_EQ(rep["etc_shadow"], false);
  EXPECT_EQ(rep["proc_sys"], false);
  EXPECT_EQ(rep["hostname"], "sandbox");
  EXPECT_EQ(rep["uid"], 0);
  EXPECT_EQ(rep["denied"].value("mount", std::string()), "EPERM");
  EXPECT_EQ(rep["denied"].value("unshare", std::string()), "EPERM");
  EXPECT_EQ(rep["denied"].value("ptrace", std::string()), "EPERM");
  for (const char* ns : {"pid", "net", "mnt", "user", "ipc", "uts", "cgroup"}) {
    struct stat st {};
    ASSERT_EQ(stat((std::string("/proc/self/ns/") + ns).c_str(), &st), 0);
    EXPECT_NE(rep[std::string(ns) + "ns_inode"].get<uint64_t>(), st.st_ino) << ns;
  }
  auto pids = rep["visible_pids"].get<std::vector<long>>();
  for (long pid : pids) EXPECT_LE(pid, 3) << rep["visible_pids"].dump();
}

TEST_F(RestoreTest, ImageIsReadOnlyAndUnchangedByRestores) {
  struct stat st {};
  ASSERT_EQ(stat(image_->path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(std::filesystem::path(image_->path).filename().string(), image_->sha256 + ".img");
  auto before = image::sha256_file(image_->path);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before.value(), image_->sha256);
  for (int i = 0; i < 2; ++i) {
    auto inst = restore();
    ASSERT_TRUE(inst);
    request(*inst, {{"op", "alloc"}, {"mb", 8}});
    ASSERT_TRUE(inst->wait().ok());
  }
  auto after = image::sha256_file(image_->path);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after.value(), image_->sha256);
  ASSERT_EQ(stat(image_->path.c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, st.st_size) << "zero pages should be holes";
}

TEST_F(RestoreTest, ManifestDescribesTheImage) {
  auto m = image::read_image(image_->path);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_TRUE(image::check_compatible(m.value(), sandbox_binds()).ok());
  EXPECT_EQ(m->labels().function_id(), "restore-driver");
  EXPECT_EQ(m->process().pid(), 1);
  bool python = false, libc = false, writer = false;
  for (const auto& f : m->files()) {
    if (f.role() == image::v1::MappedFile::EXECUTABLE && f.path().find("python3") != std::string::npos) python = true;
    if (f.path().find("libc.so") != std::string::npos) libc = true;
    if (f.path() == image::kCheckpointLibPathInSandbox) writer = true;
  }
  EXPECT_TRUE(python && libc && writer) << image::manifest_json(m.value());
  auto cli = test::run_command({test::stoke_bin(), "image", "inspect", image_->path});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("\"function_id\": \"restore-driver\""), std::string::npos) << cli.out;
}

TEST_F(RestoreTest, ImageFromAnotherKernelIsRefused) {
  std::string path = rewritten([](image::LoadedImage& img) {
    auto* th = reinterpret_cast<image::TableHeader*>(img.table.data());
    std::snprintf(th->kernel_release, sizeof th->kernel_release, "5.10.0-other");
    img.manifest.mutable_kernel()->set_release("5.10.0-other");
  });
  ASSERT_FALSE(path.empty());
  auto m = image::read_image(path);
  ASSERT_TRUE(m.ok()) << m.error().message();
  Status c = image::check_compatible(m.value(), sandbox_binds());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("kernel differs: image 5.10.0-other"), std::string::npos) << c.error().message();
  expect_refused(path, image::kRestoreExitKernelMismatch, "kernel 5.10.0-other");
}

TEST_F(RestoreTest, ChangedLibraryIsRefused) {
  std::string lib;
  std::string path = rewritten([&](image::LoadedImage& img) {
    auto& th = *reinterpret_cast<image::TableHeader*>(img.table.data());
    auto* vmas = reinterpret_cast<image::VmaRecord*>(img.table.data() + th.vma_offset);
    const char* strings = img.table.data() + th.strings_offset;
    for (uint32_t i = 0; i < th.vma_count; ++i) {
      std::string p = strings + vmas[i].path;
      if (vmas[i].kind == image::kVmaFile && p.find("libc.so") != std::string::npos) {
        lib = p;
        vmas[i].mtime_sec -= 1;  // as if the library had been replaced since
      }
    }
    for (auto& f : *img.manifest.mutable_files())
      if (f.path() == lib) f.set_mtime_sec(f.mtime_sec() - 1);
  });
  ASSERT_FALSE(lib.empty());
  auto m = image::read_image(path);
  ASSERT_TRUE(m.ok()) << m.error().message();
  Status c = image::check_compatible(m.value(), sandbox_binds());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("mapped file " + lib + " changed since the image was made: mtime"),
            std::string::npos)
      << c.error().message();
  expect_refused(path, image::kRestoreExitFileMismatch, lib + " differs from the file in the image: mtime");
}

TEST_F(RestoreTest, TruncatedImageIsRefused) {
  std::string path = dir_->file("truncated.img");
  std::filesystem::copy_file(image_->path, path);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  chmod(path.c_str(), 0644);
  ASSERT_EQ(truncate(path.c_str(), st.st_size / 2), 0);
  auto m = image::read_image(path);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("truncated"), std::string::npos) << m.error().message();
  expect_refused(path, image::kRestoreExitImageCorrupt, "truncated");
}

TEST_F(RestoreTest, CorruptManifestIsRefused) {
  std::string path = dir_->file("corrupt.img");
  std::filesystem::copy_file(image_->path, path);
  auto img = image::load_image(image_->path);
  ASSERT_TRUE(img.ok());
  chmod(path.c_str(), 0644);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(img->header.manifest_offset + img->header.manifest_length / 2));
    f.put('\x7f');
  }
  auto m = image::read_image(path);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("corrupt"), std::string::npos) << m.error().message();
  expect_refused(path, image::kRestoreExitImageCorrupt, "corrupt");
}

TEST_F(RestoreTest, MissingImageFdIsRefused) {
  SandboxSpec s = spec();
  s.argv = {image::kRestorerPathInSandbox};
  auto inst = Instance::spawn(*spawner_, s);
  ASSERT_TRUE(inst.ok()) << inst.error().message();
  auto st = inst.value()->wait(10s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_code, image::kRestoreExitImageUnreadable);
  EXPECT_NE(inst.value()->drain_stderr().find("no image on fd 4"), std::string::npos);
}

}  // namespace
}  // namespace stoke
