// The image config parser (guest/image/oci_layout.cpp, parse_image_config): the config blob of an
// OCI or docker image as JSON (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts), and the
// command docker's rules make of it (guest/image/command.cpp). Input: the config blob.
#include <algorithm>
#include <string>

#include "guest/image/command.hpp"
#include "guest/image/oci_layout.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(as_text({data, size}));
  try {
    const image::ImageConfig config = image::parse_image_config(text, "config");
    FUZZ_CHECK(std::is_sorted(config.exposed_ports.begin(), config.exposed_ports.end()));
    try {
      const auto command = image::resolve_command(config.entrypoint, config.cmd, {});
      FUZZ_CHECK(command.size() == config.entrypoint.size() + config.cmd.size());
    } catch (const Error&) {
      FUZZ_CHECK(config.entrypoint.empty() && config.cmd.empty());
    }
  } catch (const Error& error) {
    // One line naming the blob, whatever the JSON library said.
    FUZZ_CHECK(std::string(error.what()).find('\n') == std::string::npos);
  }
  try {
    image::digest_hex(text, "config");
  } catch (const Error&) {
  }
  return 0;
}
