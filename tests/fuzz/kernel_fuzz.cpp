// The whole kernel load (boot/kernel_loader.cpp) as `ember boot` does it without KVM: format
// detection, the bzImage or ELF loader, initrd placement below the kernel's initrd_addr_max, the
// command line, boot_params or the PVH start info, and the boot vCPU's GDT, page tables and
// registers. Guest memory is 4 MiB.
//
// Input: le32 initrd size (bytes, taken modulo 4 MiB; its contents are zeros), u8 command line
// length, the command line, then the kernel file.
#include <linux/kvm.h>

#include <string>
#include <vector>

#include "boot/kernel_loader.hpp"
#include "boot/layout.hpp"
#include "tests/fuzz/boot_fuzz.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  static const std::vector<std::byte> initrd(kBootMemorySize);
  const uint32_t initrd_size = input.u32() % kBootMemorySize;
  const auto cmdline = as_text(input.bytes(input.u8()));
  const GuestMemory& memory = boot_memory();
  boot::BootSpec spec{.kernel_path = "fuzz-kernel",
                      .kernel = as_image(input.rest()),
                      .initrd_path = "fuzz-initrd",
                      .initrd = std::span(initrd).first(initrd_size),
                      .cmdline = std::string(cmdline),
                      .rsdp_address = layout::kAcpiStart};
  try {
    const boot::BootInfo info = boot::load_kernel(memory, spec);
    FUZZ_CHECK(info.entry < kBootMemorySize);
    if (initrd_size > 0) {
      FUZZ_CHECK(info.initrd_address >= info.kernel_end);
      FUZZ_CHECK(info.initrd_address + initrd_size <= kBootMemorySize);
    }
    kvm_regs regs{};
    kvm_sregs sregs{};
    boot::setup_boot_cpu(memory, info, regs, sregs);
  } catch (const Error&) {
    // A one-line error naming the kernel, initrd or command line.
  }
  return 0;
}
