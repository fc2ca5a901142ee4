// The state filesystem (registry, code, images) is shared by every tenant; no
// client or function may fill it. The configured code limits are enforced by
// the agent itself, finished activation records are pruned past their
// retention, and a checkpoint build whose function writes to its dump fd is
// stopped before the dump outgrows the function's memory.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class CodeLimits : public test::AgentTest {
 protected:
  std::string extra_config() override { return "max_code_bytes: 4096\nmax_code_unpacked_bytes: 65536\n"; }
};

TEST_F(CodeLimits, UploadOverMaxCodeBytesIsRefusedAsResourceExhausted) {
  std::string path = dir_.file("big.py");
  std::ofstream(path) << "def main(args):\n    return {}\n" << std::string(8000, '#') << "\n";
  auto r = send(test::create_request("big", v1::PYTHON, path, "big.py"));
  ASSERT_TRUE(r.has_error());
  EXPECT_EQ(r.error().code(), v1::Error::RESOURCE_EXHAUSTED) << r.error().message();
  EXPECT_NE(r.error().message().find("max_code_bytes"), std::string::npos) << r.error().message();
  // Under the limit is fine.
  std::ofstream(path) << "def main(args):\n    return {}\n";
  auto ok = send(test::create_request("small", v1::PYTHON, path, "small.py"));
  EXPECT_FALSE(ok.has_error() && ok.error().code() != v1::Error::OK) << ok.error().message();
}

TEST_F(CodeLimits, ArchiveUnpackingPastMaxCodeUnpackedBytesIsRefusedAsInvalid) {
  // 1 MiB of zeros gzips to about 1 KiB: under max_code_bytes, over the
  // unpacked limit.
  std::string src = dir_.file("bomb");
  std::filesystem::create_directories(src);
  std::ofstream(src + "/__main__.py") << "def main(args):\n    return {}\n";
  std::ofstream(src + "/zeros.bin") << std::string(1 << 20, '\0');
  std::string tarball = dir_.file("bomb.tar.gz");
  auto t = test::run_command({"tar", "-czf", tarball, "-C", src, "__main__.py", "zeros.bin"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  v1::Request r = test::create_request("bomb", v1::PYTHON, tarball, "");
  r.mutable_create_function()->mutable_config()->set_code_format(v1::TAR);
  r.mutable_create_function()->mutable_config()->clear_code_file_name();
  auto c = send(r);
  ASSERT_TRUE(c.has_error());
  EXPECT_EQ(c.error().code(), v1::Error::INVALID_ARGUMENT) << c.error().message();
  EXPECT_NE(c.error().message().find("max_code_unpacked_bytes"), std::string::npos) << c.error().message();
  // Nothing of it stays in the store.
  size_t trees = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/state/code")) {
    (void)e;
    ++trees;
  }
  EXPECT_EQ(trees, 0u);
}

// Per function, the code store holds the current version's tree: an update's
// previous trees are collected at the agent's next start (no activation can
// run an old version then), so updating a function over and over does not
// fill the disk across restarts.
TEST_F(CodeLimits, UpdatesLeaveOnlyTheCurrentVersionsCodeAfterARestart) {
  std::string path = dir_.file("f.py");
  auto trees = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/state/code"))
      n += e.path().filename().string().size() == 64 ? 1 : 0;
    return n;
  };
  for (int v = 1; v <= 4; ++v) {
    std::ofstream(path) << "def main(args):\n    return {'v': " << v << "}\n";
    v1::Request r = test::create_request("churn", v1::PYTHON, path, "f.py");
    if (v > 1) {
      v1::Request u;
      u.mutable_update_function()->set_name("churn");
      *u.mutable_update_function()->mutable_config() = r.create_function().config();
      r = u;
    }
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  EXPECT_EQ(trees(), 4u) << "each version's tree is stored";
  agent_->restart();
  EXPECT_EQ(trees(), 1u) << "only the current version's tree survives a restart";
  auto a = invoke_with("churn");
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(json::parse(a.result_json())["v"], 4);
}

class Retention : public test::AgentTest {
 protected:
  std::string extra_config() override {
    return "activation_max_per_function: 3\nactivation_prune_interval_ms: 100\n"
           "zygotes { enabled: false }\ncheckpoints: false\n";
  }
  std::vector<std::string> listed(const std::string& function) {
    v1::Request list;
    list.mutable_list_activations()->set_function(function);
    list.mutable_list_activations()->set_limit(100);
    std::vector<std::string> ids;
    v1::Response r = send(list);
    for (const auto& a : r.activation_list().activations()) ids.push_back(a.activation_id());
    return ids;
  }
};

TEST_F(Retention, ActivationsBeyondTheCountPerFunctionArePrunedNewestKept) {
  std::string path = dir_.file("f.py");
  std::ofstream(path) << "def main(args):\n    return {'i': args.get('i')}\n";
  for (const char* name : {"busy", "quiet"}) {
    auto c = send(test::create_request(name, v1::PYTHON, path, "f.py"));
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto a = invoke_with("busy", "{\"i\": " + std::to_string(i) + "}");
    ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    ids.push_back(a.activation_id());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct start_ms
  }
  auto q = invoke_with("quiet");
  ASSERT_EQ(q.status(), v1::SUCCESS);
  std::vector<std::string> left;
  for (int i = 0; i < 100; ++i) {
    left = listed("busy");
    if (left.size() <= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<std::string> newest(ids.rbegin(), ids.rbegin() + 3);
  EXPECT_EQ(left, newest);
  EXPECT_EQ(listed("quiet"), std::vector<std::string>{q.activation_id()}) << "another function's records are its own";
  // A pruned record is gone for good; a kept one is whole.
  v1::Request get;
  get.mutable_get_activation()->set_activation_id(ids.front());
  auto gone = send(get);
  ASSERT_TRUE(gone.has_error());
  EXPECT_EQ(gone.error().code(), v1::Error::NOT_FOUND);
  get.mutable_get_activation()->set_activation_id(ids.back());
  EXPECT_EQ(json::parse(send(get).activation().result_json())["i"], 6);
}

class RetentionByBytes : public Retention {
 protected:
  std::string extra_config() override {
    return "activation_max_bytes_per_function: 100000\nactivation_prune_interval_ms: 100\n"
           "zygotes { enabled: false }\ncheckpoints: false\n";
  }
};

// Each activation logs ~30 kB: of 8, the newest three fit in 100 kB; the
// count limit (default 10,000) plays no part.
TEST_F(RetentionByBytes, AFunctionsRecordsPastItsByteCapArePrunedOldestFirst) {
  std::string path = dir_.file("f.py");
  std::ofstream(path) << "def main(args):\n    print('x' * 30000)\n    return {'i': args.get('i')}\n";
  auto c = send(test::create_request("chatty", v1::PYTHON, path, "f.py"));
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    auto a = invoke_with("chatty", "{\"i\": " + std::to_string(i) + "}");
    ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    ids.push_back(a.activation_id());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct start_ms
  }
  std::vector<std::string> left;
  for (int i = 0; i < 100; ++i) {
    left = listed("chatty");
    if (left.size() <= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(left, std::vector<std::string>(ids.rbegin(), ids.rbegin() + 3));
}

class DumpBound : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }
};

// The function's import code writes to fd 4 (the dump) far past its 32 MiB of
// memory: the build is stopped and refused, the agent serves on, cold.
TEST_F(DumpBound, CheckpointBuildWritingPastItsMemoryIntoTheDumpIsStopped) {
  std::string path = dir_.file("filler.py");
  std::ofstream(path) << "import os\n"
                         "chunk = b'x' * (1 << 20)\n"
                         "wrote, err = 0, None\n"
                         "try:\n"
                         "    for i in range(600):\n"
                         "        wrote += os.write(4, chunk)\n"
                         "except OSError as e:\n"
                         "    err = str(e)\n"
                         "def main(args):\n    return {'wrote': wrote, 'err': err}\n";
  v1::Request r = test::create_request("filler", v1::PYTHON, path, "f.py", 32ULL << 20);
  r.mutable_create_function()->set_checkpoint(true);
  auto c = send(r);
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  std::string log;
  for (int i = 0; i < 300; ++i) {
    log = agent_->log_text();
    if (log.find("no checkpoint image") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(log.find("its dump took more than 64 MiB of disk"), std::string::npos) << log;
  auto a = invoke_with("filler");
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_NE(a.start_kind(), v1::RESTORE) << a.result_json();
}

}  // namespace
}  // namespace stoke
