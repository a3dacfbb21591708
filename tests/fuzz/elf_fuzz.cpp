// The ELF64 vmlinux loader (boot/elf_loader.cpp): program headers, PT_LOAD segments, PT_NOTE
// segments or SHT_NOTE sections with the PVH entry note; and the PVH start info built for a kernel
// that has one (boot/pvh_start_info.cpp). Input: the kernel file, loaded into 4 MiB of guest
// memory.
#include "boot/e820.hpp"
#include "boot/elf_loader.hpp"
#include "boot/layout.hpp"
#include "boot/pvh_start_info.hpp"
#include "tests/fuzz/boot_fuzz.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto image = as_image({data, size});
  const GuestMemory& memory = boot_memory();
  boot::is_elf(image);
  try {
    const boot::ElfLoad load = boot::load_elf(memory, "fuzz", image);
    // Everything loaded lies in guest memory above ember's boot data.
    FUZZ_CHECK(load.start >= layout::kHighRamStart);
    FUZZ_CHECK(load.start < load.end && load.end <= kBootMemorySize);
    if (load.pvh_entry) {
      FUZZ_CHECK(*load.pvh_entry < kBootMemorySize);
      const auto e820 = boot::build_e820(memory.regions());
      const auto block = boot::build_pvh_start_info({.address = layout::kPvhStartInfo,
                                                     .cmdline_address = layout::kCmdline,
                                                     .rsdp_address = 0,
                                                     .initrd_address = 0,
                                                     .initrd_size = 0,
                                                     .memmap = e820});
      FUZZ_CHECK(block.size() >= boot::pvh::kStartInfoSize);
    } else {
      FUZZ_CHECK(load.entry < kBootMemorySize);
    }
  } catch (const Error&) {
    // A one-line error naming the kernel: what a bad file gets.
  }
  return 0;
}
