#include "vmm/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <array>

#include "vmm/error.hpp"

namespace ember {

EventLoop::EventLoop() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw system_error("epoll_create1");
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) throw system_error("eventfd");
  add(wake_.get(), EPOLLIN, [this](uint32_t) {
    uint64_t value;
    while (::read(wake_.get(), &value, sizeof(value)) > 0) {
    }
  });
}

void EventLoop::add(int fd, uint32_t events, Handler handler) {
  std::lock_guard lock(handlers_mutex_);
  // Events carry a registration number, not the fd: an fd closed and its number reused by a new
  // registration while events for the old one are still in run()'s batch must not reach the new
  // handler (a stale readable event looked like an expired connect timer to -p).
  const uint64_t registration = next_registration_++;
  epoll_event event{};
  event.events = events;
  event.data.u64 = registration;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0)
    throw system_error("epoll_ctl add fd " + std::to_string(fd));
  registrations_[fd] = registration;
  handlers_[registration] = std::move(handler);
}

void EventLoop::remove(int fd) {
  std::lock_guard lock(handlers_mutex_);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  const auto found = registrations_.find(fd);
  if (found == registrations_.end()) return;
  handlers_.erase(found->second);
  registrations_.erase(found);
}

void EventLoop::set_idle(std::chrono::milliseconds period, std::function<void()> idle) {
  idle_period_ = period;
  idle_ = std::move(idle);
}

void EventLoop::run() {
  std::array<epoll_event, 16> events;
  while (!stopping_.load(std::memory_order_acquire)) {
    const int timeout = idle_ && idle_timer_ ? static_cast<int>(idle_period_.count()) : -1;
    const int count = ::epoll_wait(epoll_.get(), events.data(), events.size(), timeout);
    if (count < 0) {
      if (errno == EINTR) continue;
      throw system_error("epoll_wait");
    }
    for (int i = 0; i < count; ++i) {
      Handler callback;
      {
        // Copied under the lock and called without it: a handler may add or remove fds, itself
        // included. A registration removed since epoll_wait returned is no longer found and is
        // skipped, even if its fd number has been registered again since.
        // epoll_event is packed on x86-64: its data.u64 is misaligned, so copy it out rather than
        // bind find()'s reference to it (undefined behaviour; UBSan under the fuzzer saw it).
        const uint64_t registration = events[i].data.u64;
        std::lock_guard lock(handlers_mutex_);
        auto handler = handlers_.find(registration);
        if (handler == handlers_.end()) continue;
        callback = handler->second;
      }
      callback(events[i].events);
    }
    if (idle_) idle_();
  }
}

void EventLoop::stop() {
  stopping_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(wake_.get(), &one, sizeof(one));
}

}  // namespace ember
