// ember-init's end of the `ember run` protocol (guest/protocol/protocol.hpp): frames out, written
// whole, and frames in, cut from whatever the byte stream delivers. The fd is /dev/hvc0 in the VM
// or the socket a test hands over with --channel-fd.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/unique_fd.hpp"

namespace ember::init {

struct Frame {
  uint8_t type = 0;
  std::vector<uint8_t> payload;
};

class Channel {
 public:
  explicit Channel(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }

  // Writes the header and payload completely (blocking; retried on EINTR/EAGAIN). Throws
  // ember::Error.
  void send(uint8_t type, std::span<const uint8_t> payload = {});
  void send_u32s(uint8_t type, std::initializer_list<uint32_t> words);
  // kError: the status, then one line of text.
  void send_error(uint32_t status, std::string_view message);
  void send_log(std::string_view line);

  // One read() into the receive buffer. Returns false at end of file. Throws ember::Error on a read
  // error.
  bool fill();
  // The next complete frame in the buffer, if any. Throws ember::Error ("protocol error: ...")
  // for a frame the protocol forbids.
  std::optional<Frame> next();
  // Blocks until a whole frame has arrived. Throws ember::Error at end of file.
  Frame receive();

 private:
  UniqueFd fd_;
  std::vector<uint8_t> buffer_;
  size_t offset_ = 0;  // bytes of buffer_ already handed out
};

}  // namespace ember::init
