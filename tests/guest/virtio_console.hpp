// virtio console (virtio 1.2 §5.3), port 0 only (MULTIPORT refused): receiveq 0, transmitq 1.
// Transmits test.console.bytes (default 1 MiB) of byte i = (i * 13 + 5) & 0xff and prints
// `console_tx bytes=N fnv1a=<8 hex digits>` (FNV-1a 32 of the data); with test.console.rx=1 waits for one
// line on the receive queue and prints `console_rx got <line>`.
#pragma once

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::virtio {

void check_console(Device& device, uint32_t number, const BootInfo& boot);

}  // namespace guest::virtio
