// The virtio checks, run when the command line says `test.virtio=pci` or `test.virtio=mmio`:
// discovery on that transport, then every device found, by type (rng, blk, console, net), each type in
// discovery order. Other keys: test.blk.seed, test.console.bytes, test.console.rx, test.net.* (see the
// device files), test.pci_window (virtio_pci / pci.hpp). With test.hostile=1 the devices found are attacked
// instead of checked (hostile.hpp).
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"

namespace guest {

void run_virtio_checks(const BootInfo& boot, uint32_t bsp_apic_id);

}  // namespace guest
