#include "guest/init/channel.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "guest/protocol/protocol.hpp"
#include "vmm/error.hpp"

namespace ember::init {

namespace {

void write_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {  // A non-blocking channel: wait until it takes more.
        pollfd waiting{fd, POLLOUT, 0};
        ::poll(&waiting, 1, -1);
        continue;
      }
      throw system_error("writing to the host channel");
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
}

}  // namespace

void Channel::send(uint8_t type, std::span<const uint8_t> payload) {
  uint8_t header[protocol::kHeaderSize];
  protocol::write_header(header, type, static_cast<uint32_t>(payload.size()));
  write_all(fd_.get(), header, sizeof(header));
  write_all(fd_.get(), payload.data(), payload.size());
}

void Channel::send_u32s(uint8_t type, std::initializer_list<uint32_t> words) {
  std::vector<uint8_t> payload(words.size() * 4);
  size_t at = 0;
  for (uint32_t word : words) {
    protocol::put_u32(payload.data() + at, word);
    at += 4;
  }
  send(type, payload);
}

void Channel::send_error(uint32_t status, std::string_view message) {
  std::vector<uint8_t> payload(4);
  protocol::put_u32(payload.data(), status);
  for (char c : message.substr(0, protocol::kMaxPayload - 4))
    payload.push_back(c == '\n' || c == '\r' ? ' ' : static_cast<uint8_t>(c));
  send(protocol::kError, payload);
}

void Channel::send_log(std::string_view line) {
  line = line.substr(0, protocol::kMaxPayload);
  send(protocol::kLog, std::span(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
}

bool Channel::fill() {
  if (offset_ > 0 && offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  } else if (offset_ > (1u << 20)) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<ptrdiff_t>(offset_));
    offset_ = 0;
  }
  constexpr size_t kChunk = 128 * 1024;
  const size_t old_size = buffer_.size();
  buffer_.resize(old_size + kChunk);
  ssize_t got;
  do {
    got = ::read(fd_.get(), buffer_.data() + old_size, kChunk);
  } while (got < 0 && errno == EINTR);
  buffer_.resize(old_size + static_cast<size_t>(got > 0 ? got : 0));
  if (got < 0) {
    if (errno == EAGAIN) return true;
    throw system_error("reading the host channel");
  }
  return got > 0;
}

std::optional<Frame> Channel::next() {
  const size_t available = buffer_.size() - offset_;
  if (available < protocol::kHeaderSize) return std::nullopt;
  const uint8_t* header = buffer_.data() + offset_;
  uint8_t type = 0;
  uint32_t length = 0;
  if (const char* reason = protocol::read_header(header, false, type, length)) {
    char detail[96];
    std::snprintf(detail, sizeof(detail), " (type 0x%02x, flags 0x%02x, length %u)", header[0],
                  header[1], length);
    throw Error(std::string("protocol error: ") + reason + detail);
  }
  if (available < protocol::kHeaderSize + length) return std::nullopt;
  Frame frame{type, std::vector<uint8_t>(header + protocol::kHeaderSize,
                                         header + protocol::kHeaderSize + length)};
  offset_ += protocol::kHeaderSize + length;
  return frame;
}

Frame Channel::receive() {
  while (true) {
    if (auto frame = next()) return std::move(*frame);
    if (!fill()) throw Error("the host closed the channel");
  }
}

}  // namespace ember::init
