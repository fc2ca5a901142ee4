// Group commit of activation records: every completion runs on the loop,
// after its record is stored, in the order the writes were handed over.
#include "agent/activation_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

v1::Activation record(const std::string& id) {
  v1::Activation a;
  a.set_activation_id(id);
  a.set_function("f");
  a.set_version(1);
  a.set_start_ms(1000);
  return a;
}

// A loop and a fresh registry for each test.
class ActivationWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::create();
    if (!loop) GTEST_SKIP() << "io_uring unavailable here";
    loop_ = std::move(loop.value());
    auto reg = Registry::open(dir_.file("state.db"));
    ASSERT_TRUE(reg.ok()) << reg.error().message();
    registry_ = std::move(reg.value());
  }
  test::TempDir dir_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(ActivationWriterTest, EachCompletionRunsOnTheLoopAfterItsRecordIsStoredInOrder) {
  Registry& registry = *registry_;
  const std::thread::id loop_thread = std::this_thread::get_id();
  constexpr int kPerThread = 300;
  std::vector<std::vector<int>> done_order(2);
  int completions = 0, stored_when_done = 0, on_loop = 0;
  {
    ActivationWriter writer(registry, *loop_);
    // Two threads hand over begin+finish pairs, as the loop and a worker do.
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string id = std::to_string(t);
          id += '-';
          id += std::to_string(i);
          writer.write(Registry::ActivationWrite::kBegin, record(id), nullptr);
          v1::Activation fin = record(id);
          fin.set_status(v1::SUCCESS);
          writer.write(Registry::ActivationWrite::kFinish, fin, [&, t, i, id, loop_thread](Status s) {
            EXPECT_TRUE(s.ok()) << s.error().message();
            on_loop += std::this_thread::get_id() == loop_thread;
            auto got = registry.get_activation(id);
            stored_when_done += got.ok() && got->status() == v1::SUCCESS;
            done_order[t].push_back(i);
            if (++completions == 2 * kPerThread) loop_->stop();
          });
        }
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_TRUE(loop_->run().ok());
    EXPECT_LE(writer.batches(), writer.writes());
    EXPECT_EQ(writer.writes(), 4u * kPerThread);
    std::printf("%llu writes in %llu transactions\n", static_cast<unsigned long long>(writer.writes()),
                static_cast<unsigned long long>(writer.batches()));
  }
  EXPECT_EQ(completions, 2 * kPerThread);
  EXPECT_EQ(on_loop, 2 * kPerThread);
  EXPECT_EQ(stored_when_done, 2 * kPerThread) << "a completion ran before its record was stored";
  for (const auto& order : done_order) EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(registry.count_activations().value(), 2u * kPerThread);
}

TEST_F(ActivationWriterTest, StoppingWritesWhatIsQueued) {
  {
    ActivationWriter writer(*registry_, *loop_);
    for (int i = 0; i < 100; ++i) writer.write(Registry::ActivationWrite::kBegin, record(std::to_string(i)), nullptr);
  }  // destroyed at once: nothing queued is dropped
  EXPECT_EQ(registry_->count_activations().value(), 100u);
}

TEST_F(ActivationWriterTest, ABeginHeldBackIsFoldedIntoItsFinishAndALongOneGetsItsRunningRow) {
  Registry& registry = *registry_;
  ActivationWriter writer(registry, *loop_, std::chrono::milliseconds(300));
  // Short: the finish comes within the hold; one row, written once, finished.
  bool begin_done = false;
  writer.write(Registry::ActivationWrite::kBegin, record("short"), [&](Status s) {
    EXPECT_TRUE(s.ok());
    begin_done = true;
  });
  v1::Activation fin = record("short");
  fin.set_status(v1::SUCCESS);
  writer.write(Registry::ActivationWrite::kFinish, fin, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.error().message();
    EXPECT_TRUE(begin_done) << "the folded begin completes with its finish, before it";
    loop_->stop();
  });
  ASSERT_TRUE(loop_->run().ok());
  EXPECT_EQ(registry.get_activation("short")->status(), v1::SUCCESS);
  EXPECT_EQ(writer.folded(), 1u);

  // Long: no finish within the hold; its running row is there after it.
  writer.write(Registry::ActivationWrite::kBegin, record("long"), nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(registry.get_activation("long").ok()) << "written before its hold ended";
  bool stored = false;
  for (int i = 0; i < 200 && !stored; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto got = registry.get_activation("long");
    stored = got.ok() && got->end_ms() == 0;
  }
  EXPECT_TRUE(stored) << "no running row after the hold";
  EXPECT_EQ(writer.folded(), 1u);
}

TEST_F(ActivationWriterTest, ABusyWriterGathersFinishesThatAreComingIntoFewerCommits) {
  constexpr int kWrites = 200;
  int done = 0;
  uint64_t batches = 0;
  {
    ActivationWriter writer(*registry_, *loop_, std::chrono::milliseconds(0), std::chrono::milliseconds(5));
    std::thread feeder([&] {
      for (int i = 0; i < kWrites; ++i) {
        v1::Activation fin = record("busy-" + std::to_string(i));
        fin.set_status(v1::SUCCESS);
        writer.write(Registry::ActivationWrite::kFinish, fin, [&](Status s) {
          EXPECT_TRUE(s.ok());
          if (++done == kWrites) loop_->stop();
        }, /*more_coming=*/true);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
    ASSERT_TRUE(loop_->run().ok());
    feeder.join();
    batches = writer.batches();
  }
  EXPECT_EQ(done, kWrites);
  EXPECT_EQ(registry_->count_activations().value(), static_cast<uint64_t>(kWrites));
  // ~20 ms of writes, 5 ms gathered at a time: a handful of commits, not one each.
  EXPECT_LE(batches, static_cast<uint64_t>(kWrites / 4)) << batches << " commits for " << kWrites << " writes";
}

TEST_F(ActivationWriterTest, AWriteWithNothingElseComingIsNotHeldForTheLinger) {
  ActivationWriter writer(*registry_, *loop_, std::chrono::milliseconds(0), std::chrono::seconds(2));
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    v1::Activation fin = record("alone-" + std::to_string(i));
    fin.set_status(v1::SUCCESS);
    writer.write(Registry::ActivationWrite::kFinish, fin, [&](Status s) {
      EXPECT_TRUE(s.ok());
      loop_->stop();
    });
    ASSERT_TRUE(loop_->run().ok());
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1)) << "write " << i << " waited";
  }
}

TEST_F(ActivationWriterTest, ABarrierCompletesOnlyAfterEveryWriteBeforeItIsStored) {
  Registry& registry = *registry_;
  ActivationWriter writer(registry, *loop_, std::chrono::milliseconds(0), std::chrono::milliseconds(50));
  for (int i = 0; i < 100; ++i) {
    v1::Activation fin = record("b-" + std::to_string(i));
    fin.set_status(v1::SUCCESS);
    writer.write(Registry::ActivationWrite::kFinish, fin, nullptr, /*more_coming=*/true);
  }
  uint64_t stored_at_barrier = 0;
  writer.barrier([&](Status s) {
    EXPECT_TRUE(s.ok());
    stored_at_barrier = registry.count_activations().value();
    loop_->stop();
  });
  ASSERT_TRUE(loop_->run().ok());
  EXPECT_EQ(stored_at_barrier, 100u);
}

TEST_F(ActivationWriterTest, StoppingWritesBeginsStillHeldBack) {
  {
    ActivationWriter writer(*registry_, *loop_, std::chrono::hours(1));
    for (int i = 0; i < 10; ++i) writer.write(Registry::ActivationWrite::kBegin, record(std::to_string(i)), nullptr);
  }
  EXPECT_EQ(registry_->count_activations().value(), 10u);
}

}  // namespace
}  // namespace stoke::agent
