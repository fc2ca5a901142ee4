// Checkpoint/restore through a real agent: a Python function's image is built
// after its first call (or on create --checkpoint), its cold starts restore
// it — after an agent restart too — and a damaged or foreign image falls
// back to a cold start, is dropped, and never harms the agent.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sandbox/image/image.h"
#include "tests/util/agent_fixture.h"
#include "tests/util/isolation_checks.h"

namespace stoke {
namespace {

using json = nlohmann::json;

constexpr const char* kStateful = R"(
import decimal, email.parser, http.client, json, os, random, re
LOADED = {"pattern": re.compile(r"\d+").pattern, "pi": str(decimal.Decimal(355) / decimal.Decimal(113))[:6]}
counter = 0
def main(args):
    global counter
    counter += 1
    if args.get("sleep"):
        import time; time.sleep(30)
    if args.get("oom"):
        hog = bytearray(512 << 20)
        hog[::4096] = b"x" * len(hog[::4096])
    return {"counter": counter, "loaded": LOADED, "r": random.getrandbits(64), "pid": os.getpid(),
            "tmp": sorted(os.listdir("/tmp"))}
)";

class Restore : public test::AgentTest {
 protected:
  // Neither prewarmed instances nor zygotes: a call without an idle instance
  // restores the image when there is one, else starts cold.
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }

  void create(const std::string& name, const std::string& source, bool checkpoint = false, uint64_t memory = 0,
              uint64_t timeout_ms = 0, uint32_t concurrency = 0) {
    std::string path = dir_.file(name + "-" + std::to_string(++files_) + "-f.py");
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, v1::PYTHON, path, "f.py", memory, timeout_ms, concurrency);
    r.mutable_create_function()->set_checkpoint(checkpoint);
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  v1::Activation invoke(const std::string& name, const json& params = json::object(),
                        v1::StartKind start = v1::START_KIND_UNSPECIFIED) {
    return invoke_with(name, params.dump(), start);
  }
  std::string images_dir() const { return dir_.path() + "/state/images"; }
  // The image of name@version, once the agent recorded it (15 s at most).
  std::string wait_image(const std::string& name, uint32_t version = 1) {
    std::string index = images_dir() + "/index/" + name + "@" + std::to_string(version);
    for (int i = 0; i < 300; ++i) {
      std::ifstream in(index);
      std::string sha;
      if (in >> sha && sha.size() == 64) return images_dir() + "/" + sha + ".img";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "no image for " << name << "\n" << agent_->log_text();
    return "";
  }
  json restored(const std::string& name, const json& params = json::object()) {
    auto a = invoke(name, params, v1::RESTORE);
    EXPECT_EQ(a.start_kind(), v1::RESTORE) << a.result_json();
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json() << agent_->log_text();
    return a.status() == v1::SUCCESS ? json::parse(a.result_json()) : json::object();
  }
  // Replaces the image file (same path, as another host or a bad disk would
  // leave it): the agent finds out when it next restores.
  void replace_image(const std::string& path, const std::string& with) {
    ASSERT_EQ(::rename(with.c_str(), path.c_str()), 0) << strerror(errno);
  }
  int files_ = 0;
};

TEST_F(Restore, FirstCallLeavesAnImageThatLaterColdStartsRestore) {
  create("stateful", kStateful);
  auto first = invoke("stateful");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  EXPECT_EQ(first.start_kind(), v1::COLD);
  std::string image = wait_image("stateful");
  ASSERT_FALSE(image.empty());
  struct stat st;
  ASSERT_EQ(::stat(image.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u) << "images are read-only once written";
  json a = restored("stateful");
  json b = restored("stateful");
  // Module-level state from the checkpoint; nothing from other copies.
  for (const json& r : {a, b}) {
    EXPECT_EQ(r["counter"], 1) << r.dump();
    EXPECT_EQ(r["loaded"], json({{"pattern", "\\d+"}, {"pi", "3.1415"}})) << r.dump();
    EXPECT_EQ(r["pid"], 1);
    EXPECT_EQ(r["tmp"], json::array());
  }
  EXPECT_NE(a["r"], b["r"]) << "every restored copy reseeds random";
}

TEST_F(Restore, AgentRestartRestoresInsteadOfStartingCold) {
  create("survivor", kStateful, /*checkpoint=*/true);
  std::string image = wait_image("survivor");
  ASSERT_FALSE(image.empty());
  agent_->stop();
  agent_->restart();
  auto a = invoke("survivor");
  EXPECT_EQ(a.start_kind(), v1::RESTORE) << agent_->log_text();
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
}

TEST_F(Restore, RestoredInstancePassesTheIsolationBaseline) {
  setenv("STOKE_TEST_SECRET", "host-only", 1);  // must not reach any sandbox
  create_probe_bundle("iso", test::kPythonProbeFunction, {"--checkpoint"});
  unsetenv("STOKE_TEST_SECRET");
  ASSERT_FALSE(wait_image("iso").empty());
  test::expect_isolation_baseline(restored("iso"));
}

TEST_F(Restore, TimeoutAndOomInARestoredInstanceAreReported) {
  create("harm", kStateful, true, /*memory=*/64ULL << 20, /*timeout_ms=*/1000);
  ASSERT_FALSE(wait_image("harm").empty());
  auto slow = invoke("harm", {{"sleep", true}}, v1::RESTORE);
  EXPECT_EQ(slow.start_kind(), v1::RESTORE);
  EXPECT_EQ(slow.status(), v1::TIMEOUT) << slow.result_json();
  auto fat = invoke("harm", {{"oom", true}}, v1::RESTORE);
  EXPECT_EQ(fat.start_kind(), v1::RESTORE);
  EXPECT_EQ(fat.status(), v1::OOM) << fat.result_json();
  EXPECT_EQ(restored("harm")["counter"], 1);
}

TEST_F(Restore, ConcurrentRestoresFromOneImageAreIndependentCopies) {
  create("many", kStateful, true, 0, 0, /*concurrency=*/8);
  ASSERT_FALSE(wait_image("many").empty());
  std::vector<json> results(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { results[i] = restored("many"); });
  for (auto& t : threads) t.join();
  std::set<uint64_t> randoms;
  for (const json& r : results) {
    ASSERT_TRUE(r.contains("r")) << r.dump();
    EXPECT_EQ(r["counter"], 1);
    randoms.insert(r["r"].get<uint64_t>());
  }
  EXPECT_EQ(randoms.size(), 8u);
}

TEST_F(Restore, TruncatedImageFallsBackToColdAndIsDropped) {
  create("cut", kStateful, true);
  std::string image = wait_image("cut");
  ASSERT_FALSE(image.empty());
  std::string copy = dir_.file("cut.img");
  std::filesystem::copy_file(image, copy);
  ::chmod(copy.c_str(), 0644);
  ASSERT_EQ(::truncate(copy.c_str(), std::filesystem::file_size(copy) / 2), 0);
  replace_image(image, copy);
  auto a = invoke("cut", json::object(), v1::RESTORE);
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::COLD) << "a damaged image must not be used";
  EXPECT_NE(agent_->log_text().find("restore failed, starting cold; image dropped"), std::string::npos);
  // The agent is unharmed, and makes a good image again after that success.
  std::string again = wait_image("cut");
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(restored("cut")["counter"], 1);
}

TEST_F(Restore, CorruptManifestFallsBackToCold) {
  create("garbled", kStateful, true);
  std::string image = wait_image("garbled");
  ASSERT_FALSE(image.empty());
  auto img = image::load_image(image);
  ASSERT_TRUE(img.ok()) << img.error().message();
  std::string copy = dir_.file("garbled.img");
  std::filesystem::copy_file(image, copy);
  ::chmod(copy.c_str(), 0644);
  {
    std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(img->header.manifest_offset + img->header.manifest_length / 2));
    f.put('\x7f');
  }
  replace_image(image, copy);
  auto a = invoke("garbled");
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::COLD);
}

TEST_F(Restore, ImageOfAnotherKernelOrChangedLibraryFallsBackToCold) {
  create("foreign", kStateful, true);
  std::string image = wait_image("foreign");
  ASSERT_FALSE(image.empty());
  for (int variant = 0; variant < 2; ++variant) {
    auto img = image::load_image(image);
    ASSERT_TRUE(img.ok()) << img.error().message();
    if (variant == 0) {
      img->manifest.mutable_kernel()->set_release("5.10.0-other");
    } else {
      ASSERT_GT(img->manifest.files_size(), 0);
      img->manifest.mutable_files(0)->set_size(img->manifest.files(0).size() + 1);
    }
    unique_fd fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
    auto edited = image::write_image(dir_.file("edited-" + std::to_string(variant)), img->manifest, img->table,
                                     fd.get(), img->header.data_offset, img->header.data_length);
    ASSERT_TRUE(edited.ok()) << edited.error().message();
    replace_image(image, edited->path);
    auto a = invoke("foreign", json::object(), v1::RESTORE);
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    EXPECT_EQ(a.start_kind(), v1::COLD) << "variant " << variant;
    image = wait_image("foreign");  // made again after that cold start
    ASSERT_FALSE(image.empty());
  }
}

TEST_F(Restore, UpdateDropsTheOldImage) {
  create("changing", "def main(args):\n    return {'v': 1}\n", true);
  std::string old = wait_image("changing");
  ASSERT_FALSE(old.empty());
  std::string path = dir_.file("v2.py");
  std::ofstream(path) << "def main(args):\n    return {'v': 2}\n";
  v1::Request r = test::create_request("changing", v1::PYTHON, path, "f.py");
  v1::Request u;
  u.mutable_update_function()->set_name("changing");
  *u.mutable_update_function()->mutable_config() = r.create_function().config();
  ASSERT_TRUE(send(u).has_function());
  auto a = invoke("changing");
  ASSERT_EQ(a.status(), v1::SUCCESS);
  EXPECT_EQ(json::parse(a.result_json())["v"], 2);
  EXPECT_NE(a.start_kind(), v1::RESTORE) << "the old version's image must not serve the new code";
  ASSERT_FALSE(wait_image("changing", 2).empty());
  EXPECT_EQ(restored("changing")["v"], 2);
}

TEST_F(Restore, AFunctionThatCannotBeCheckpointedStillRuns) {
  // A thread started at import: a multithreaded process is refused.
  create("threaded", "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
                     "def main(args):\n    return {'ok': True}\n", true);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto a = invoke("threaded", json::object(), v1::RESTORE);
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::COLD);
  EXPECT_NE(agent_->log_text().find("no checkpoint image"), std::string::npos) << agent_->log_text();
}

// A refusal is of a version's code: after a delete, a new function of the
// same name starts again at version 1 and gets its image.
TEST_F(Restore, ANewFunctionOfADeletedNameIsCheckpointedDespiteTheOldOnesRefusal) {
  create("reborn", "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
                   "def main(args):\n    return {'ok': True}\n", true);
  auto refused = invoke("reborn", json::object(), v1::RESTORE);  // waits for the build, which is refused
  EXPECT_EQ(refused.start_kind(), v1::COLD);
  ASSERT_NE(agent_->log_text().find("no checkpoint image"), std::string::npos) << agent_->log_text();
  v1::Request del;
  del.mutable_delete_function()->set_name("reborn");
  ASSERT_TRUE(send(del).has_deleted());
  create("reborn", kStateful, true);
  ASSERT_FALSE(wait_image("reborn", 1).empty());
  restored("reborn");
}

}  // namespace
}  // namespace stoke
