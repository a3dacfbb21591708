// ember-init's side of the `ember run` protocol (guest/init/channel.cpp, guest/init/spec.cpp): the
// frames it cuts from the host's byte stream, and the launch spec in kStart. Input: the byte
// stream, read from a memfd as ember-init reads hvc0.
#include <sys/mman.h>
#include <unistd.h>

#include "guest/init/channel.hpp"
#include "guest/init/spec.hpp"
#include "guest/protocol/protocol.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

void check_spec(std::span<const uint8_t> payload) {
  try {
    const init::LaunchSpec spec = init::parse_launch_spec(as_text(payload));
    FUZZ_CHECK(!spec.args.empty() && !spec.args.front().empty());
    FUZZ_CHECK(!spec.cwd.empty() && spec.cwd.front() == '/');
    for (const init::Rlimit& limit : spec.rlimits) FUZZ_CHECK(limit.soft <= limit.hard);
    init::env_value(spec.env, "PATH");
  } catch (const Error&) {
    // ember-init reports it to the host with kError and powers off.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  UniqueFd file(::memfd_create("ember-fuzz-channel", MFD_CLOEXEC));
  FUZZ_CHECK(file && ::write(file.get(), data, size) == static_cast<ssize_t>(size));
  FUZZ_CHECK(::lseek(file.get(), 0, SEEK_SET) == 0);
  init::Channel channel(std::move(file));
  try {
    for (;;) {
      const init::Frame frame = channel.receive();
      FUZZ_CHECK(protocol::host_to_guest(frame.type));
      FUZZ_CHECK(frame.payload.size() <= protocol::max_payload(frame.type));
      if (frame.type == protocol::kStart) check_spec(frame.payload);
    }
  } catch (const Error&) {
    // End of the stream, or a protocol error that ends the run.
  }
  return 0;
}
