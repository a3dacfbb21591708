#include "vmm/run/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "guest/protocol/protocol.hpp"

namespace ember::run {

namespace {

// Bytes of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code points past
// U+10FFFF) that `bytes` starts with, or 0 if it does not start with one.
size_t utf8_sequence(std::span<const uint8_t> bytes) {
  const uint8_t lead = bytes[0];
  size_t length = 0;
  uint8_t low = 0x80, high = 0xbf;  // range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (bytes.size() < length || bytes[1] < low || bytes[1] > high) return 0;
  for (size_t i = 2; i < length; ++i)
    if (bytes[i] < 0x80 || bytes[i] > 0xbf) return 0;
  return length;
}

// kError/kLog text is the guest's: keep one printable line of bounded length. Well-formed UTF-8 stays;
// control characters (C0, DEL, and C1, which terminals act on as escapes) and bytes that are not UTF-8
// become '?', line breaks and tabs a space.
std::string one_line(std::span<const uint8_t> bytes) {
  constexpr size_t kMaxLength = 512;
  bytes = bytes.first(std::min(bytes.size(), kMaxLength));
  std::string text;
  for (size_t at = 0; at < bytes.size();) {
    const uint8_t byte = bytes[at];
    if (byte < 0x80) {
      const bool space = byte == '\n' || byte == '\r' || byte == '\t';
      text.push_back(space ? ' ' : byte < 0x20 || byte == 0x7f ? '?' : static_cast<char>(byte));
      ++at;
      continue;
    }
    const size_t length = utf8_sequence(bytes.subspan(at));
    const bool c1_control = length == 2 && byte == 0xc2 && bytes[at + 1] < 0xa0;  // U+0080..U+009F
    if (length == 0 || c1_control) {
      text.push_back('?');
      at += length == 0 ? 1 : length;
      continue;
    }
    text.append(reinterpret_cast<const char*>(bytes.data() + at), length);
    at += length;
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace

Session::Session(std::string spec_json, bool stdin_open,
                 std::optional<std::pair<uint16_t, uint16_t>> terminal_size, Sinks sinks)
    : spec_json_(std::move(spec_json)),
      stdin_open_(stdin_open),
      terminal_size_(terminal_size),
      sinks_(std::move(sinks)),
      reader_(true,
              [this](uint8_t type, std::span<const uint8_t> payload) { on_frame(type, payload); }) {
}

void Session::receive(std::span<const uint8_t> bytes) {
  if (state_ == State::kFailed) return;
  if (!reader_.feed(bytes) && state_ != State::kFailed) fail(reader_.error());
}

void Session::on_frame(uint8_t type, std::span<const uint8_t> payload) {
  if (state_ == State::kFailed) return;
  if (type == protocol::kLog) {
    spdlog::debug("ember-init: {}", one_line(payload));
    return;
  }
  if (state_ == State::kFinished) {
    spdlog::debug("guest frame 0x{:02x} after the end of the run ignored", type);
    return;
  }
  if (state_ == State::kWaitingForHello) {
    if (type != protocol::kHello)
      return fail("frame 0x" + fmt::format("{:02x}", type) + " before kHello");
    if (payload.size() != 4)
      return fail("kHello payload of " + std::to_string(payload.size()) + " bytes");
    const uint32_t version = protocol::get_u32(payload.data());
    if (version != protocol::kVersion)
      return fail("ember-init speaks protocol version " + std::to_string(version) + ", ember " +
                  std::to_string(protocol::kVersion));
    spdlog::debug("ember-init said hello (protocol {}): sending the launch spec", version);
    state_ = State::kRunning;
    queue(protocol::kStart,
          std::span(reinterpret_cast<const uint8_t*>(spec_json_.data()), spec_json_.size()));
    if (terminal_size_) send_resize(terminal_size_->first, terminal_size_->second);
    if (!stdin_open_) send_stdin_eof();
    return;
  }
  switch (type) {
    case protocol::kStdout:
      if (sinks_.stdout_sink) sinks_.stdout_sink(payload);
      return;
    case protocol::kStderr:
      if (sinks_.stderr_sink) sinks_.stderr_sink(payload);
      return;
    case protocol::kExit: {
      if (payload.size() != 8)
        return fail("kExit payload of " + std::to_string(payload.size()) + " bytes");
      const uint32_t how = protocol::get_u32(payload.data());
      const uint32_t value = protocol::get_u32(payload.data() + 4);
      if (how == protocol::kExited && value <= 255) {
        status_ = static_cast<int>(value);
      } else if (how == protocol::kSignaled && value >= 1 && value <= 64) {
        status_ = 128 + static_cast<int>(value);
      } else {
        return fail("kExit with how " + std::to_string(how) + ", value " + std::to_string(value));
      }
      state_ = State::kFinished;
      return;
    }
    case protocol::kError: {
      if (payload.size() < 4)
        return fail("kError payload of " + std::to_string(payload.size()) + " bytes");
      const uint32_t status = protocol::get_u32(payload.data());
      if (status < 1 || status > 255) return fail("kError with status " + std::to_string(status));
      status_ = static_cast<int>(status);
      message_ = one_line(payload.subspan(4));
      if (message_.empty()) message_ = "ember-init failed without saying why";
      state_ = State::kFinished;
      return;
    }
    default:  // kHello again
      return fail("unexpected frame 0x" + fmt::format("{:02x}", type));
  }
}

void Session::fail(const std::string& reason) {
  state_ = State::kFailed;
  message_ = "guest protocol error: " + reason;
  outbox_.clear();
  outbox_offset_ = 0;
}

void Session::queue(uint8_t type, std::span<const uint8_t> payload) {
  uint8_t header[protocol::kHeaderSize];
  protocol::write_header(header, type, static_cast<uint32_t>(payload.size()));
  outbox_.insert(outbox_.end(), header, header + sizeof(header));
  outbox_.insert(outbox_.end(), payload.begin(), payload.end());
}

void Session::send_stdin(std::span<const uint8_t> bytes) {
  if (!running() || stdin_eof_sent_) return;
  while (!bytes.empty()) {
    const size_t length = std::min<size_t>(bytes.size(), protocol::kMaxPayload);
    queue(protocol::kStdin, bytes.first(length));
    bytes = bytes.subspan(length);
  }
}

void Session::send_stdin_eof() {
  if (!running() || stdin_eof_sent_) return;
  stdin_eof_sent_ = true;
  queue(protocol::kStdinEof);
}

void Session::send_signal(int number) {
  if (!running()) return;
  uint8_t payload[4];
  protocol::put_u32(payload, static_cast<uint32_t>(number));
  queue(protocol::kSignal, payload);
}

void Session::send_resize(uint16_t rows, uint16_t cols) {
  if (!running()) return;
  uint8_t payload[4];
  protocol::put_u16(payload, rows);
  protocol::put_u16(payload + 2, cols);
  queue(protocol::kResize, payload);
}

void Session::flush(const std::function<size_t(std::span<const uint8_t>)>& push) {
  while (outbox_offset_ < outbox_.size()) {
    const size_t taken = push(std::span(outbox_).subspan(outbox_offset_));
    if (taken == 0) break;
    outbox_offset_ += taken;
  }
  // Compact once most of the buffer has gone, so it does not grow with the run.
  if (outbox_offset_ == outbox_.size()) {
    outbox_.clear();
    outbox_offset_ = 0;
  } else if (outbox_offset_ > (1u << 20)) {
    outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(outbox_offset_));
    outbox_offset_ = 0;
  }
}

}  // namespace ember::run
