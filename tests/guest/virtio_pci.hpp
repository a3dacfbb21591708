// virtio over PCI, modern interface only (virtio 1.2 §4.1): vendor capabilities for the common, notify,
// ISR and device configuration structures (§4.1.4), MSI-X vectors per queue (§4.1.4.3, §4.1.5.1.2).
#pragma once

#include "virtio.hpp"

namespace guest::virtio {

// Finds the virtio functions (vendor 0x1af4, §4.1.2) in PCI enumeration order and maps their structures and
// MSI-X tables (assigning BARs firmware left unassigned). Prints one line per device; devices it cannot
// use are reported with a FAIL. Returns the number stored in `out`.
uint32_t discover_pci(Device* out, uint32_t capacity);

}  // namespace guest::virtio
