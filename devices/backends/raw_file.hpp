// A DiskBackend on a raw image file or a host block device.
//
// Requests go through io_uring (up to queue_depth in flight, more wait in a host-side queue) and
// complete through an eventfd registered with the ring. When the kernel refuses io_uring (EPERM
// under seccomp or io_uring_disabled, ENOSYS on old kernels), or when forced for tests, every
// request runs synchronously at submission (preadv/pwritev/fdatasync/fallocate) and its completion
// is signalled through the same kind of eventfd, so the device code path does not change.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/backends/disk.hpp"
#include "vmm/unique_fd.hpp"

struct io_uring;  // liburing's ring, kept out of this header.

namespace ember {

struct RawFileOptions {
  bool read_only = false;          // Open O_RDONLY and refuse writes.
  bool direct = false;             // O_DIRECT: guest buffers and offsets must then suit the device.
  bool force_synchronous = false;  // Skip io_uring (tests, or hosts where it misbehaves).
  unsigned queue_depth = 128;      // io_uring entries, and requests in flight at once.
};

class RawFile final : public DiskBackend {
 public:
  // Opens `path` (a regular file or a block device). Throws Error naming the path.
  explicit RawFile(const std::string& path, RawFileOptions options = {});
  RawFile(const RawFile&) = delete;
  RawFile& operator=(const RawFile&) = delete;
  ~RawFile() override;

  uint64_t size() const override { return size_; }
  bool read_only() const override { return options_.read_only; }

  void read(uint64_t offset, std::span<const iovec> buffers, uint64_t token) override;
  void write(uint64_t offset, std::span<const iovec> buffers, uint64_t token) override;
  void flush(uint64_t token) override;
  void discard(uint64_t offset, uint64_t length, uint64_t token) override;
  void write_zeroes(uint64_t offset, uint64_t length, bool unmap, uint64_t token) override;

  int completion_fd() const override { return event_.get(); }
  void drain_completions(const CompletionHandler& handler) override;
  void abandon_in_flight() override;

  // Whether requests go through io_uring (false: the synchronous fallback).
  bool uses_io_uring() const { return ring_ready_; }
  // Requests submitted to the kernel and not yet drained (io_uring only).
  size_t in_flight() const { return in_flight_; }

 private:
  enum class Kind { kRead, kWrite, kFlush, kFallocate };
  struct Operation {
    Kind kind;
    uint64_t token;
    uint64_t offset;
    uint64_t length;  // Bytes to transfer, or the fallocate range.
    int fallocate_mode;
    std::vector<iovec> buffers;  // Owned here until completion: the kernel may read them late.
  };
  struct Completion {
    uint64_t token;
    int32_t result;
  };

  void submit(Operation operation);
  // Queues `operation` (held in slots_[slot]) on the ring; false if the SQ had no room.
  bool start_on_ring(Operation& operation, size_t slot);
  int32_t run_synchronously(const Operation& operation) const;
  // Accounts for one system call's result: the request's final result, or nullopt when the rest of
  // it (after a short transfer, or with a fallback fallocate mode) must be issued again.
  static std::optional<int32_t> after(Operation& operation, int32_t result);
  void post(uint64_t token, int32_t result);
  void clear_event() const;

  std::string path_;
  RawFileOptions options_;
  UniqueFd file_;
  UniqueFd event_;
  uint64_t size_ = 0;

  std::unique_ptr<io_uring> ring_;
  bool ring_ready_ = false;
  std::vector<std::optional<Operation>> slots_;  // Indexed by the SQE's user_data in the kernel.
  std::vector<size_t> free_slots_;
  size_t in_flight_ = 0;
  std::deque<Operation> waiting_;  // Beyond queue_depth: submitted as slots free up.

  std::vector<Completion> completed_;  // Finished synchronously, not yet drained.
};

}  // namespace ember
