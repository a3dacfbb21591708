// Frames of the `ember run` protocol (guest/protocol/protocol.hpp) on ember's side: an encoder for
// host -> guest frames and an incremental reader for the guest's byte stream, which arrives cut
// anywhere (virtio-console buffers know nothing of frames).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace ember::run {

// Header + payload, ready to send. The caller keeps payloads within protocol::max_payload(type).
std::vector<uint8_t> encode_frame(uint8_t type, std::span<const uint8_t> payload = {});

class FrameReader {
 public:
  using Handler = std::function<void(uint8_t type, std::span<const uint8_t> payload)>;

  // `from_guest`: the stream is the guest's (ember's side); false for ember-init's side.
  FrameReader(bool from_guest, Handler handler);

  // Consumes bytes, calling the handler for each complete frame in order. On a malformed header it
  // stops for good and returns false; error() then says why. Returns false at once after an error.
  bool feed(std::span<const uint8_t> bytes);
  const std::string& error() const { return error_; }
  // Bytes of an unfinished frame held back (for a "stream ended mid-frame" diagnosis).
  size_t buffered() const { return header_fill_ + payload_.size(); }

 private:
  bool from_guest_;
  Handler handler_;
  uint8_t header_[8] = {};
  size_t header_fill_ = 0;
  bool in_payload_ = false;
  uint8_t type_ = 0;
  uint32_t length_ = 0;
  std::vector<uint8_t> payload_;
  std::string error_;
};

}  // namespace ember::run
