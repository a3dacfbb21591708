#include "vmm/event_loop.hpp"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <atomic>
#include <thread>

namespace ember {
namespace {

void signal(int fd) {
  const uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof(one)), 8);
}

TEST(EventLoop, RunsHandlersAndStopsFromAnotherThread) {
  EventLoop loop;
  UniqueFd event(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::atomic<int> calls{0};
  loop.add(event.get(), EPOLLIN, [&](uint32_t) {
    uint64_t value;
    while (::read(event.get(), &value, sizeof(value)) > 0) {
    }
    if (++calls == 3) loop.stop();
  });
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) {
      signal(event.get());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  loop.run();
  producer.join();
  EXPECT_EQ(calls.load(), 3);
}

TEST(EventLoop, AddAndRemoveFromOtherThreadsWhileRunning) {
  EventLoop loop;
  std::thread runner([&] { loop.run(); });
  std::atomic<int> calls{0};
  for (int round = 0; round < 200; ++round) {
    UniqueFd event(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    loop.add(event.get(), EPOLLIN, [&, fd = event.get()](uint32_t) {
      uint64_t value;
      while (::read(fd, &value, sizeof(value)) > 0) {
      }
      ++calls;
    });
    signal(event.get());
    loop.remove(event.get());
  }
  loop.stop();
  runner.join();
  EXPECT_LE(calls.load(), 200);
}

TEST(EventLoop, HandlerMayRemoveItself) {
  EventLoop loop;
  UniqueFd event(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  int calls = 0;
  loop.add(event.get(), EPOLLIN, [&](uint32_t) {
    ++calls;
    loop.remove(event.get());
    loop.stop();
  });
  signal(event.get());
  loop.run();
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, IdleTimerRunsOnlyWhileEnabled) {
  EventLoop loop;
  std::atomic<int> idles{0};
  loop.set_idle(std::chrono::milliseconds(1), [&] {
    if (++idles == 5) loop.enable_idle_timer(false);
  });
  loop.enable_idle_timer(true);
  std::thread stopper([&] {
    while (idles.load() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // Any further timer would fire now.
    loop.stop();
  });
  loop.run();
  stopper.join();
  // Five timer wake-ups, then none until stop() woke the loop once more.
  EXPECT_EQ(idles.load(), 6);
}

}  // namespace
}  // namespace ember
