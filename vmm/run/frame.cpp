#include "vmm/run/frame.hpp"

#include <algorithm>

#include "guest/protocol/protocol.hpp"

namespace ember::run {

std::vector<uint8_t> encode_frame(uint8_t type, std::span<const uint8_t> payload) {
  std::vector<uint8_t> frame(protocol::kHeaderSize + payload.size());
  protocol::write_header(frame.data(), type, static_cast<uint32_t>(payload.size()));
  std::copy(payload.begin(), payload.end(), frame.begin() + protocol::kHeaderSize);
  return frame;
}

FrameReader::FrameReader(bool from_guest, Handler handler)
    : from_guest_(from_guest), handler_(std::move(handler)) {}

bool FrameReader::feed(std::span<const uint8_t> bytes) {
  if (!error_.empty()) return false;
  while (!bytes.empty()) {
    if (!in_payload_) {
      const size_t take = std::min(bytes.size(), protocol::kHeaderSize - header_fill_);
      std::copy_n(bytes.begin(), take, header_ + header_fill_);
      header_fill_ += take;
      bytes = bytes.subspan(take);
      if (header_fill_ < protocol::kHeaderSize) return true;
      if (const char* reason = protocol::read_header(header_, from_guest_, type_, length_)) {
        error_ = std::string(reason) + " (type 0x" + "0123456789abcdef"[header_[0] >> 4] +
                 "0123456789abcdef"[header_[0] & 15] + ", length " +
                 std::to_string(protocol::get_u32(header_ + 4)) + ")";
        return false;
      }
      header_fill_ = 0;
      in_payload_ = true;
      payload_.clear();
      // A whole frame already in `bytes` is handed over without a copy.
      if (bytes.size() >= length_) {
        in_payload_ = false;
        handler_(type_, bytes.first(length_));
        bytes = bytes.subspan(length_);
        continue;
      }
    }
    const size_t take = std::min<size_t>(bytes.size(), length_ - payload_.size());
    payload_.insert(payload_.end(), bytes.begin(),
                    bytes.begin() + static_cast<std::ptrdiff_t>(take));
    bytes = bytes.subspan(take);
    if (payload_.size() == length_) {
      in_payload_ = false;
      handler_(type_, payload_);
      payload_.clear();
    }
  }
  return true;
}

}  // namespace ember::run
