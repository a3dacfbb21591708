#include "devices/backends/raw_file.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "vmm/error.hpp"

namespace ember {
namespace {

constexpr unsigned kMaxQueueDepth = 4096;
constexpr int kPunchHole = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
constexpr int kZeroRange = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

uint64_t total_length(std::span<const iovec> buffers) {
  uint64_t total = 0;
  for (const auto& buffer : buffers) total += buffer.iov_len;
  return total;
}

// Drops the first `bytes` of `buffers` after a short transfer.
void advance(std::vector<iovec>& buffers, uint64_t bytes) {
  auto first = buffers.begin();
  while (first != buffers.end() && bytes >= first->iov_len) {
    bytes -= first->iov_len;
    ++first;
  }
  buffers.erase(buffers.begin(), first);
  if (!buffers.empty() && bytes > 0) {
    buffers.front().iov_base = static_cast<std::byte*>(buffers.front().iov_base) + bytes;
    buffers.front().iov_len -= bytes;
  }
}

uint64_t size_of(int fd, const std::string& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) throw system_error("disk " + path + ": fstat");
  if (S_ISREG(info.st_mode)) return static_cast<uint64_t>(info.st_size);
  if (S_ISBLK(info.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0)
      throw system_error("disk " + path + ": BLKGETSIZE64");
    return bytes;
  }
  throw Error("disk " + path + ": not a regular file or block device");
}

constexpr int kFixedFile = 0;  // The disk's index in the ring's registered files.

// Whether the running kernel's io_uring has every operation RawFile issues.
bool ring_supports_operations(io_uring* ring) {
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  if (probe == nullptr) return false;
  const bool supported = io_uring_opcode_supported(probe, IORING_OP_READV) &&
                         io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
                         io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
                         io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
  io_uring_free_probe(probe);
  return supported;
}

// Requests on a ring bypass seccomp, so the ring is locked down before it is enabled: only the disk
// file (registered as fixed file 0, every entry must say IOSQE_FIXED_FILE) and only the four
// operations above. A taken-over VMM thread gets nothing from it beyond this disk. 0 or -errno.
int restrict_ring(io_uring* ring, int file) {
  if (const int result = io_uring_register_files(ring, &file, 1); result < 0) return result;
  io_uring_restriction rules[5]{};
  const uint8_t operations[] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
                                IORING_OP_FALLOCATE};
  for (size_t i = 0; i < 4; ++i) {
    rules[i].opcode = IORING_RESTRICTION_SQE_OP;
    rules[i].sqe_op = operations[i];
  }
  rules[4].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
  rules[4].sqe_flags = IOSQE_FIXED_FILE;
  // Through the raw register call: Debian's liburing 2.3 does not export the two wrappers.
  const auto ring_fd = static_cast<unsigned>(ring->ring_fd);
  if (const int result = io_uring_register(ring_fd, IORING_REGISTER_RESTRICTIONS, rules, 5);
      result < 0)
    return result;
  return io_uring_register(ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
}

}  // namespace

RawFile::RawFile(const std::string& path, RawFileOptions options) : path_(path), options_(options) {
  options_.queue_depth = std::clamp(options_.queue_depth, 1u, kMaxQueueDepth);
  int flags = (options_.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (options_.direct) flags |= O_DIRECT;
  file_.reset(::open(path.c_str(), flags));
  if (!file_) throw system_error("disk " + path);
  size_ = size_of(file_.get(), path);
  event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_) throw system_error("disk " + path + ": eventfd");
  if (options_.force_synchronous) return;

  ring_ = std::make_unique<io_uring>();
  io_uring_params params{};
  params.flags = IORING_SETUP_R_DISABLED;  // Enabled by restrict_ring().
  int result = io_uring_queue_init_params(options_.queue_depth, ring_.get(), &params);
  if (result < 0) {
    spdlog::info("disk {}: io_uring unavailable ({}), using synchronous I/O", path,
                 std::strerror(-result));
    ring_.reset();
    return;
  }
  result = io_uring_register_eventfd(ring_.get(), event_.get());
  if (result >= 0 && !ring_supports_operations(ring_.get())) result = -EOPNOTSUPP;
  if (result >= 0) result = restrict_ring(ring_.get(), file_.get());
  if (result < 0) {
    spdlog::info("disk {}: io_uring lacks eventfd, operations or restrictions ({}), using "
                 "synchronous I/O", path, std::strerror(-result));
    io_uring_queue_exit(ring_.get());
    ring_.reset();
    return;
  }
  ring_ready_ = true;
  slots_.resize(options_.queue_depth);
  for (size_t slot = options_.queue_depth; slot > 0; --slot) free_slots_.push_back(slot - 1);
}

RawFile::~RawFile() {
  abandon_in_flight();
  if (ring_ready_) io_uring_queue_exit(ring_.get());
}

void RawFile::read(uint64_t offset, std::span<const iovec> buffers, uint64_t token) {
  submit({Kind::kRead, token, offset, total_length(buffers), 0, {buffers.begin(), buffers.end()}});
}

void RawFile::write(uint64_t offset, std::span<const iovec> buffers, uint64_t token) {
  if (options_.read_only) return post(token, -EROFS);
  submit({Kind::kWrite, token, offset, total_length(buffers), 0, {buffers.begin(), buffers.end()}});
}

void RawFile::flush(uint64_t token) {
  submit({Kind::kFlush, token, 0, 0, 0, {}});
}

void RawFile::discard(uint64_t offset, uint64_t length, uint64_t token) {
  if (options_.read_only) return post(token, -EROFS);
  submit({Kind::kFallocate, token, offset, length, kPunchHole, {}});
}

void RawFile::write_zeroes(uint64_t offset, uint64_t length, bool unmap, uint64_t token) {
  if (options_.read_only) return post(token, -EROFS);
  submit({Kind::kFallocate, token, offset, length, unmap ? kPunchHole : kZeroRange, {}});
}

void RawFile::submit(Operation operation) {
  if (!ring_ready_) return post(operation.token, run_synchronously(operation));
  if (free_slots_.empty()) {
    waiting_.push_back(std::move(operation));
    return;
  }
  const size_t slot = free_slots_.back();
  free_slots_.pop_back();
  slots_[slot] = std::move(operation);
  ++in_flight_;
  start_on_ring(*slots_[slot], slot);
}

bool RawFile::start_on_ring(Operation& operation, size_t slot) {
  // A free slot means fewer than queue_depth requests in the kernel, so the SQ has room.
  io_uring_sqe* entry = io_uring_get_sqe(ring_.get());
  if (entry == nullptr) return false;
  const auto offset = static_cast<off_t>(operation.offset);
  const auto count = static_cast<unsigned>(operation.buffers.size());
  switch (operation.kind) {
    case Kind::kRead:
      io_uring_prep_readv(entry, kFixedFile, operation.buffers.data(), count, offset);
      break;
    case Kind::kWrite:
      io_uring_prep_writev(entry, kFixedFile, operation.buffers.data(), count, offset);
      break;
    case Kind::kFlush:
      io_uring_prep_fsync(entry, kFixedFile, IORING_FSYNC_DATASYNC);
      break;
    case Kind::kFallocate:
      io_uring_prep_fallocate(entry, kFixedFile, operation.fallocate_mode, offset,
                              static_cast<off_t>(operation.length));
      break;
  }
  io_uring_sqe_set_flags(entry, IOSQE_FIXED_FILE);
  io_uring_sqe_set_data64(entry, slot);
  int submitted;
  do {
    submitted = io_uring_submit(ring_.get());
  } while (submitted == -EINTR);
  // On other errors the entry stays in the SQ and goes with the next submission.
  if (submitted < 0) spdlog::warn("disk {}: io_uring_submit: {}", path_, std::strerror(-submitted));
  return true;
}

int32_t RawFile::run_synchronously(const Operation& operation) const {
  Operation rest = operation;
  while (true) {
    ssize_t result = 0;
    const auto offset = static_cast<off_t>(rest.offset);
    const auto count = static_cast<int>(rest.buffers.size());
    switch (rest.kind) {
      case Kind::kRead:
        result = ::preadv(file_.get(), rest.buffers.data(), count, offset);
        break;
      case Kind::kWrite:
        result = ::pwritev(file_.get(), rest.buffers.data(), count, offset);
        break;
      case Kind::kFlush:
        result = ::fdatasync(file_.get());
        break;
      case Kind::kFallocate:
        result =
            ::fallocate(file_.get(), rest.fallocate_mode, offset, static_cast<off_t>(rest.length));
        break;
    }
    if (result < 0 && errno == EINTR) continue;
    const auto step = after(rest, result < 0 ? -errno : static_cast<int32_t>(result));
    if (step) return *step;
  }
}

std::optional<int32_t> RawFile::after(Operation& operation, int32_t result) {
  if (operation.kind == Kind::kFallocate && operation.fallocate_mode == kZeroRange &&
      result == -EOPNOTSUPP) {
    // Some filesystems cannot zero a range in place; a punched hole reads as zeros too.
    operation.fallocate_mode = kPunchHole;
    return std::nullopt;
  }
  if (result < 0) return result;
  if (operation.kind != Kind::kRead && operation.kind != Kind::kWrite) return 0;
  const auto transferred = static_cast<uint64_t>(result);
  if (transferred >= operation.length) return 0;
  if (transferred == 0) return -EIO;  // End of file: the image shrank under us.
  operation.offset += transferred;
  operation.length -= transferred;
  advance(operation.buffers, transferred);
  return std::nullopt;
}

void RawFile::post(uint64_t token, int32_t result) {
  completed_.push_back({token, result});
  const uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(event_.get(), &one, sizeof(one));
}

void RawFile::clear_event() const {
  uint64_t count;
  [[maybe_unused]] auto read = ::read(event_.get(), &count, sizeof(count));
}

void RawFile::drain_completions(const CompletionHandler& handler) {
  // Clear the eventfd first: a completion posted after this raises it again.
  clear_event();
  std::vector<Completion> done = std::exchange(completed_, {});
  if (ring_ready_) {
    io_uring_cqe* entry = nullptr;
    while (io_uring_peek_cqe(ring_.get(), &entry) == 0 && entry != nullptr) {
      const auto slot = static_cast<size_t>(io_uring_cqe_get_data64(entry));
      const int32_t result = entry->res;
      io_uring_cqe_seen(ring_.get(), entry);
      auto& operation = *slots_[slot];
      const auto finished = after(operation, result);
      if (!finished && start_on_ring(operation, slot)) continue;  // The rest goes again.
      done.push_back({operation.token, finished.value_or(-EIO)});
      slots_[slot].reset();
      free_slots_.push_back(slot);
      --in_flight_;
    }
    while (!waiting_.empty() && !free_slots_.empty()) {
      Operation next = std::move(waiting_.front());
      waiting_.pop_front();
      submit(std::move(next));
    }
  }
  for (const auto& completion : done) handler(completion.token, completion.result);
}

void RawFile::abandon_in_flight() {
  waiting_.clear();
  while (ring_ready_ && in_flight_ > 0) {
    // submit_and_wait also pushes any entry an earlier failed submission left in the SQ.
    const int result = io_uring_submit_and_wait(ring_.get(), 1);
    if (result < 0 && result != -EINTR) {
      spdlog::error("disk {}: waiting for in-flight requests: {}", path_, std::strerror(-result));
      break;
    }
    io_uring_cqe* entry = nullptr;
    while (io_uring_peek_cqe(ring_.get(), &entry) == 0 && entry != nullptr) {
      const auto slot = static_cast<size_t>(io_uring_cqe_get_data64(entry));
      io_uring_cqe_seen(ring_.get(), entry);
      slots_[slot].reset();
      free_slots_.push_back(slot);
      --in_flight_;
    }
  }
  completed_.clear();
  clear_event();
}

}  // namespace ember
