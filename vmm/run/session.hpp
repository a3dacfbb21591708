// ember's side of the `ember run` conversation (guest/protocol/protocol.hpp) with ember-init, free
// of the VM: guest bytes in (receive), host bytes out (outbox, drained by the caller into hvc0 as
// the guest makes room), the payload's output to two sinks, and the outcome. The guest is
// untrusted: anything outside the protocol ends the run as a protocol error, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/run/frame.hpp"

namespace ember::run {

class Session {
 public:
  using Sink = std::function<void(std::span<const uint8_t>)>;
  struct Sinks {
    Sink stdout_sink;  // kStdout payloads
    Sink stderr_sink;  // kStderr payloads
  };
  enum class State { kWaitingForHello, kRunning, kFinished, kFailed };

  // `spec_json`: the launch spec (kStart's payload). `stdin_open`: kStdin frames will follow (else
  // kStdinEof goes right after kStart). `terminal_size`: rows, cols for a kResize after kStart.
  Session(std::string spec_json, bool stdin_open,
          std::optional<std::pair<uint16_t, uint16_t>> terminal_size, Sinks sinks);

  // Bytes from hvc0.
  void receive(std::span<const uint8_t> bytes);

  // Host -> guest; ignored unless running (before kHello nothing may be sent but kStart).
  void send_stdin(std::span<const uint8_t> bytes);
  void send_stdin_eof();
  void send_signal(int number);
  void send_resize(uint16_t rows, uint16_t cols);

  // Bytes waiting for hvc0: offer them with `push` (returns how many it took) until it takes none.
  void flush(const std::function<size_t(std::span<const uint8_t>)>& push);
  size_t outbox_bytes() const { return outbox_.size() - outbox_offset_; }

  State state() const { return state_; }
  bool running() const { return state_ == State::kRunning; }
  bool stdin_closed() const { return stdin_eof_sent_; }
  // Once kFinished: the payload's status (kExit: code or 128+signal; kError: its status).
  int status() const { return status_; }
  // kError's message (kFinished) or what went wrong (kFailed: "guest protocol error: ...").
  const std::string& message() const { return message_; }

 private:
  void on_frame(uint8_t type, std::span<const uint8_t> payload);
  void fail(const std::string& reason);
  void queue(uint8_t type, std::span<const uint8_t> payload = {});

  std::string spec_json_;
  bool stdin_open_;
  std::optional<std::pair<uint16_t, uint16_t>> terminal_size_;
  Sinks sinks_;
  FrameReader reader_;
  State state_ = State::kWaitingForHello;
  bool stdin_eof_sent_ = false;
  int status_ = 0;
  std::string message_;
  std::vector<uint8_t> outbox_;
  size_t outbox_offset_ = 0;
};

}  // namespace ember::run
