// What a block device needs from the storage under it: a size, a read-only flag and asynchronous
// requests that finish later on the I/O thread.
//
// A request is submitted with a caller-chosen token and completes exactly once, with 0 or -errno,
// through drain_completions(). The backend raises completion_fd() (readable, poll/epoll EPOLLIN)
// whenever completions are waiting; the I/O loop watches it and calls drain_completions(). A
// request may complete before its submit call returns (a synchronous backend), but its completion
// is still delivered only by drain_completions(), so callers have one code path.
//
// Buffers are host iovecs into guest memory: they must stay mapped until the request completes or
// abandon_in_flight() returns. Not thread-safe: the owner serializes every call (virtio devices
// call it with their mutex held).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>

namespace ember {

class DiskBackend {
 public:
  using CompletionHandler = std::function<void(uint64_t token, int32_t result)>;

  virtual ~DiskBackend() = default;

  // Size in bytes and whether writes, discards and write-zeroes are refused.
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;

  // Vectored transfers at byte `offset`. A short transfer completes with -EIO.
  virtual void read(uint64_t offset, std::span<const iovec> buffers, uint64_t token) = 0;
  virtual void write(uint64_t offset, std::span<const iovec> buffers, uint64_t token) = 0;
  // Makes completed writes durable (fdatasync).
  virtual void flush(uint64_t token) = 0;
  // Deallocates [offset, offset + length) (a hint: reads may then return zeros or old data).
  virtual void discard(uint64_t offset, uint64_t length, uint64_t token) = 0;
  // Makes [offset, offset + length) read as zeros; `unmap` allows deallocating it.
  virtual void write_zeroes(uint64_t offset, uint64_t length, bool unmap, uint64_t token) = 0;

  // Readable while completions wait for drain_completions().
  virtual int completion_fd() const = 0;
  // Delivers every finished request to `handler` (which may submit new requests).
  virtual void drain_completions(const CompletionHandler& handler) = 0;
  // Waits until no request is in flight and forgets their results: after it returns nothing touches
  // the buffers of earlier requests and no earlier token is ever delivered (device reset).
  virtual void abandon_in_flight() = 0;
};

}  // namespace ember
