// virtio over MMIO, version 2 only (virtio 1.2 §4.2). Transports come from the DSDT (devices with _HID
// "LNRO0005": Memory32Fixed + Interrupt in _CRS) or, if it has none, from the command line
// (virtio_mmio.device=<size>@<base>:<irq>, as Linux takes them). Each device's interrupt is routed edge,
// with the descriptor's polarity, through the IOAPIC that serves its GSI.
#pragma once

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::virtio {

uint32_t discover_mmio(const BootInfo& boot, Device* out, uint32_t capacity);

}  // namespace guest::virtio
