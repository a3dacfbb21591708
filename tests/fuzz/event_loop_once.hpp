// Runs an EventLoop's handlers for what is ready now, on the calling thread: a fuzz target has no
// I/O thread, but device completions (virtio-blk's backend) arrive through the loop.
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "vmm/error.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/unique_fd.hpp"

namespace ember::fuzz {

// One pass of `loop` over the fds ready now; afterwards the loop is stopped for good (make a new
// one for the next pass). An eventfd raised before run() is in the same epoll batch as every fd
// already ready, and its handler stops the loop at the end of that batch.
inline void run_ready_handlers(EventLoop& loop) {
  UniqueFd tick(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!tick) throw system_error("eventfd");
  loop.add(tick.get(), EPOLLIN, [&loop](uint32_t) { loop.stop(); });
  loop.run();
  loop.remove(tick.get());
}

}  // namespace ember::fuzz
