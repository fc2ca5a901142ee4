// The io_uring event loop on real file descriptors (no privileges needed).
#include "agent/event_loop.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <thread>

namespace stoke::agent {
namespace {

std::unique_ptr<EventLoop> make_loop() {
  auto loop = EventLoop::create();
  if (!loop.ok()) return nullptr;
  return std::move(loop.value());
}

TEST(EventLoop, ReadsWhatAPipeDeliversAndPolls) {
  auto loop = make_loop();
  if (!loop) GTEST_SKIP() << "io_uring unavailable here";
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  char buf[16] = {};
  int got = -1, polled = -1;
  loop->poll(p[0], POLLIN, [&](int res) { polled = res; });
  loop->read(p[0], buf, sizeof buf, [&](int res) {
    got = res;
    loop->stop();
  });
  loop->write(p[1], "hello", 5, [](int) {});
  ASSERT_TRUE(loop->run().ok());
  EXPECT_EQ(got, 5);
  EXPECT_STREQ(buf, "hello");
  EXPECT_GT(polled, 0);
  close(p[0]);
  close(p[1]);
}

TEST(EventLoop, TimersFireInOrderAndCancelledOnesReportCancelled) {
  auto loop = make_loop();
  if (!loop) GTEST_SKIP() << "io_uring unavailable here";
  std::vector<int> order;
  int cancelled_result = 1;
  uint64_t doomed = loop->timer(std::chrono::milliseconds(200), [&](int res) { cancelled_result = res; });
  loop->timer(std::chrono::milliseconds(30), [&](int res) {
    order.push_back(30);
    EXPECT_EQ(res, 0);
  });
  loop->timer(std::chrono::milliseconds(10), [&](int) {
    order.push_back(10);
    loop->cancel_timer(doomed);
  });
  loop->timer(std::chrono::milliseconds(60), [&](int) { loop->stop(); });
  ASSERT_TRUE(loop->run().ok());
  EXPECT_EQ(order, (std::vector<int>{10, 30}));
  EXPECT_EQ(cancelled_result, -ECANCELED);
}

TEST(EventLoop, PostFromAnotherThreadRunsOnTheLoop) {
  auto loop = make_loop();
  if (!loop) GTEST_SKIP() << "io_uring unavailable here";
  std::thread::id ran_on;
  std::thread t([&] {
    loop->post([&] {
      ran_on = std::this_thread::get_id();
      loop->stop();
    });
  });
  ASSERT_TRUE(loop->run().ok());
  t.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

}  // namespace
}  // namespace stoke::agent
