// test.hostile=1 (with test.virtio=pci or test.virtio=mmio): the test guest turns against ember's virtio
// devices instead of checking them. For every virtio-rng, -blk, -console, -net and -fs device it found, it runs
// a sequence of named attacks and, after each, resets the device and proves it works again with an ordinary
// request (rng bytes; blk sector 0 against the host's pattern; a byte out of hvc0; an ARP request out of the
// NIC, and with test.hostile.net_rx=1 a frame back in; a FUSE_INIT answered). virtio-fs gets the transport,
// MSI-X and register attacks only: its rings are walked by virtiofsd (vhost-user), not by ember. One line per attack:
//   hostile: <device>/<transport>: <attack>: <what ember answered>; recovered
// ("needs_reset": DEVICE_NEEDS_RESET in the status register; "used len=N [status=S]": the request completed;
// "no completion"; or a note on what a register read back). An answer outside the attack's expected set is
// followed by "UNEXPECTED (wanted ...)" and a FAIL; a device that does not work again afterwards by
// "NOT RECOVERED (...)" and a FAIL. Per device: `hostile: <device>/<transport>: N attacks, U unexpected,
// R not recovered` and CHECK hostile_<device>. Then random reads and writes of every register ember emulates
// (hostile_registers.cpp), every device recovered once more, CHECK hostile_platform.
//
// Attacks (details in hostile.cpp): descriptor loops (next back to itself, to the head, a full-queue ring),
// next and head indices out of range, avail idx jumping ahead, buffers outside RAM, straddling the end of a
// RAM region (the 32-bit hole with more than 3 GiB), lengths 0 and near 2^32, address overflow, chains whose
// buffers total more than 4 GiB (aliasing scratch RAM) and just under, readable after writable, indirect
// tables (nested, looping, with NEXT, bad lengths, outside RAM, not negotiated, > IOV_MAX entries for net),
// per-device semantics (blk header device-writable, data the wrong way, status read-only, unknown type,
// sectors past the end and 2^64-1, GET_ID without room, discard/write-zeroes segments; rng and console
// buffers the wrong way; net frames too short, too long, with a bogus GSO header; receive buffers too small),
// bad rings set before DRIVER_OK (outside RAM, misaligned, straddling), queue sizes 0, 3, too large,
// DRIVER_OK without FEATURES_OK, features not offered, no VERSION_1, notifies of missing queues and before
// DRIVER_OK, queue registers rewritten after DRIVER_OK, out-of-range queue_select, wrong-width accesses,
// device reset with requests in flight (no completion or DMA may follow the reset), and for virtio-pci bad
// MSI-X programming (vectors out of range, table accesses of odd sizes and offsets, message addresses
// anywhere, masking toggled while interrupts fire, MSI-X disabled). With a second vCPU (--cpus 2) that CPU
// hammers each device's registers (resets, notifications, random accesses) while the first keeps setting the
// device up and using it (concurrent_register_storm).
//
// Command line: test.seed=N (default 1) seeds the PRNG; test.hostile.quiet_ms=N (default 50) is how long
// "no answer" is waited for (longer in the lab); test.hostile.fuzz=N random accesses per register range
// (default 2000); test.hostile.storm_ms=N how long the second vCPU hammers each device (default 300);
// test.blk.seed as for the blk checks; test.net.ip / test.net.peer as for the net checks.
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest {

void run_hostile(const BootInfo& boot, virtio::Device* devices, uint32_t count, bool pci);

}  // namespace guest
