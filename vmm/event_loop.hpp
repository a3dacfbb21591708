// The I/O thread's epoll loop: fds with callbacks, run until stop() from any thread. add() and
// remove() may be called from any thread (devices register backend fds when activated on a vCPU
// thread); handlers always run on the loop's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "vmm/unique_fd.hpp"

namespace ember {

class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;

  EventLoop();

  // Watches fd for events (EPOLLIN etc.); the handler runs on the loop's thread.
  void add(int fd, uint32_t events, Handler handler);
  void remove(int fd);
  // Called on the loop's thread after each wake-up, and at least every period while a caller on
  // the loop's thread has it enabled (so an idle loop sleeps without waking).
  void set_idle(std::chrono::milliseconds period, std::function<void()> idle);
  void enable_idle_timer(bool enabled) { idle_timer_ = enabled; }

  // Runs until stop(); exceptions from handlers propagate to the caller.
  void run();
  void stop();  // Thread-safe.

 private:
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd that stop() writes.
  std::atomic<bool> stopping_{false};
  std::mutex handlers_mutex_;
  std::map<uint64_t, Handler> handlers_;  // By registration number (epoll_event.data.u64).
  std::map<int, uint64_t> registrations_;  // Each watched fd's current registration.
  uint64_t next_registration_ = 1;
  std::chrono::milliseconds idle_period_{-1};
  std::function<void()> idle_;
  bool idle_timer_ = false;
};

}  // namespace ember
