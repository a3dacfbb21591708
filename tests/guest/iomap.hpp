// Uncached, user-accessible mappings of device MMIO (PCI ECAM, BARs, virtio-mmio) in the guest's identity
// page tables (entry.S), done from CPL3: the tables are themselves mapped user-writable. Below 4 GiB the
// existing 2 MiB entries get PCD|PWT; above, page-directory pages come from a small pool. One CR3 reload
// (through the port I/O trap) makes the changes visible.
#pragma once

#include <stdint.h>

namespace guest {

// Maps [address, address + size) (rounded out to 2 MiB) identity, uncached (PAT UC with the default PAT),
// user, writable. False if the page-table pool is exhausted or the address is beyond 48 bits.
bool map_uncached(uint64_t address, uint64_t size);

}  // namespace guest
