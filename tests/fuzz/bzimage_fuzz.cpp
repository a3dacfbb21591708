// The bzImage loader (boot/bzimage.cpp) and the zero page built from its setup header
// (boot/boot_params.cpp). Input: the kernel file, loaded into 4 MiB of guest memory.
#include "boot/boot_params.hpp"
#include "boot/bzimage.hpp"
#include "boot/e820.hpp"
#include "boot/layout.hpp"
#include "tests/fuzz/boot_fuzz.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto image = as_image({data, size});
  const GuestMemory& memory = boot_memory();
  boot::is_bzimage(image);
  try {
    const boot::BzImageLoad load = boot::load_bzimage(memory, "fuzz", image);
    FUZZ_CHECK(load.load_address == layout::kHighRamStart);
    FUZZ_CHECK(load.entry == load.load_address + 0x200);
    FUZZ_CHECK(load.end > load.load_address && load.end <= kBootMemorySize);
    FUZZ_CHECK(inside(load.setup_header, image));
    const auto e820 = boot::build_e820(memory.regions());
    boot::build_boot_params({.setup_header = load.setup_header,
                             .cmdline_address = layout::kCmdline,
                             .initrd_address = 0,
                             .initrd_size = 0,
                             .e820 = e820,
                             .rsdp_address = 0});
  } catch (const Error&) {
    // A one-line error naming the kernel: what a bad file gets.
  }
  return 0;
}
