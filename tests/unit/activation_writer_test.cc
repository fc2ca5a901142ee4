// Group commit of activation records: every completion runs on the loop,
// after its record is stored, in the order the writes were handed over.
#include "agent/activation_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
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

TEST(ActivationWriter, EachCompletionRunsOnTheLoopAfterItsRecordIsStoredInOrder) {
  auto loop = EventLoop::create();
  if (!loop) GTEST_SKIP() << "io_uring unavailable here";
  test::TempDir dir;
  auto reg = Registry::open(dir.file("state.db"));
  ASSERT_TRUE(reg.ok()) << reg.error().message();
  Registry& registry = *reg.value();
  const std::thread::id loop_thread = std::this_thread::get_id();
  constexpr int kPerThread = 300;
  std::vector<std::vector<int>> done_order(2);
  int completions = 0, stored_when_done = 0, on_loop = 0;
  {
    ActivationWriter writer(registry, **loop);
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
            if (++completions == 2 * kPerThread) (*loop)->stop();
          });
        }
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_TRUE((*loop)->run().ok());
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

TEST(ActivationWriter, StoppingWritesWhatIsQueued) {
  auto loop = EventLoop::create();
  if (!loop) GTEST_SKIP() << "io_uring unavailable here";
  test::TempDir dir;
  auto reg = Registry::open(dir.file("state.db"));
  ASSERT_TRUE(reg.ok());
  {
    ActivationWriter writer(*reg.value(), **loop);
    for (int i = 0; i < 100; ++i) writer.write(Registry::ActivationWrite::kBegin, record(std::to_string(i)), nullptr);
  }  // destroyed at once: nothing queued is dropped
  EXPECT_EQ(reg.value()->count_activations().value(), 100u);
}

}  // namespace
}  // namespace stoke::agent
