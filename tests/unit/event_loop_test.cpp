#include "vmm/event_loop.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
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

TEST(EventLoop, AStaleEventDoesNotReachTheNextRegistrationOfTheSameFdNumber) {
  // Two ready eventfds in one epoll_wait batch. Whichever handler runs first removes and closes the
  // other, puts a fresh, empty eventfd on the same fd number and registers it: the batch's event for
  // the old fd must not reach the new handler (the new fd never became readable).
  EventLoop loop;
  UniqueFd first(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  UniqueFd second(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  signal(first.get());
  signal(second.get());
  std::atomic<int> stale_calls{0};
  bool swapped = false;
  auto swap_other = [&](UniqueFd& other) {
    if (swapped) return;
    swapped = true;
    const int number = other.get();
    loop.remove(number);
    UniqueFd fresh(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    ASSERT_EQ(::dup3(fresh.get(), number, O_CLOEXEC), number);  // Closes the old fd, reuses its number.
    loop.add(number, EPOLLIN, [&](uint32_t) { ++stale_calls; });
    loop.stop();
  };
  loop.add(first.get(), EPOLLIN, [&](uint32_t) { swap_other(second); });
  loop.add(second.get(), EPOLLIN, [&](uint32_t) { swap_other(first); });
  loop.run();
  EXPECT_TRUE(swapped);
  EXPECT_EQ(stale_calls.load(), 0);
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
