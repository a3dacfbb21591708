// ember's side of the `ember run` protocol (vmm/run/session.cpp, vmm/run/frame.cpp): whatever a
// hostile guest writes to hvc0, cut at arbitrary points, must end in a finished run or a protocol
// error, never a crash, and never with frames for the guest left queued after an error.
//
// Input: u8 chunk size (1-256; the guest's bytes arrive in pieces of that size), u8 flags (bit 0:
// stdin open, bit 1: a terminal), then the guest's byte stream. The same stream also goes through
// a FrameReader for the other direction (ember-init's reader of the host's frames).
#include <algorithm>
#include <string>

#include "guest/protocol/protocol.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/quiet_logging.hpp"
#include "vmm/run/frame.hpp"
#include "vmm/run/session.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

void feed_in_chunks(std::span<const uint8_t> bytes, size_t chunk,
                    const std::function<void(std::span<const uint8_t>)>& feed) {
  while (!bytes.empty()) {
    const auto piece = bytes.first(std::min(chunk, bytes.size()));
    feed(piece);
    bytes = bytes.subspan(piece.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const size_t chunk = size_t{input.u8()} + 1;
  const uint8_t flags = input.u8();
  const auto stream = input.rest();

  size_t output_bytes = 0;
  const auto sink = [&](std::span<const uint8_t> bytes) { output_bytes += bytes.size(); };
  std::optional<std::pair<uint16_t, uint16_t>> terminal;
  if (flags & 2) terminal = std::pair<uint16_t, uint16_t>{24, 80};
  run::Session session(R"({"version":1})", (flags & 1) != 0, terminal, {sink, sink});
  feed_in_chunks(stream, chunk, [&](std::span<const uint8_t> piece) {
    session.receive(piece);
    session.send_stdin(piece);
    session.flush(
        [](std::span<const uint8_t> bytes) { return std::min<size_t>(bytes.size(), 100); });
  });
  session.send_signal(15);
  session.send_resize(1, 1);
  session.send_stdin_eof();
  FUZZ_CHECK(output_bytes <= stream.size());
  switch (session.state()) {
    case run::Session::State::kFailed:
      FUZZ_CHECK(session.outbox_bytes() == 0);
      FUZZ_CHECK(session.message().starts_with("guest protocol error: "));
      break;
    case run::Session::State::kFinished:
      FUZZ_CHECK(session.status() >= 0 && session.status() <= 255);
      FUZZ_CHECK(session.message().find('\n') == std::string::npos);
      break;
    default:
      break;
  }

  // The other direction's reader on the same bytes.
  run::FrameReader reader(false, [](uint8_t type, std::span<const uint8_t> payload) {
    FUZZ_CHECK(protocol::host_to_guest(type));
    FUZZ_CHECK(payload.size() <= protocol::max_payload(type));
  });
  bool ok = true;
  feed_in_chunks(stream, chunk,
                 [&](std::span<const uint8_t> piece) { ok = reader.feed(piece) && ok; });
  FUZZ_CHECK(ok == reader.error().empty());
  return 0;
}
