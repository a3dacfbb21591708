// virtio block device (virtio 1.2 §5.2): capacity, GET_ID, reads checked against the host's pattern,
// writes (one 1 MiB descriptor, and 64-descriptor chains through INDIRECT_DESC), FLUSH, read-only
// behaviour and 32 requests in flight.
//
// Disk pattern written by the host: byte i = (i * 131 + i / 4096 + seed) & 0xff, seed = test.blk.seed
// (default 7). Pattern the guest writes to sectors [2048, 4096): byte i (from the start of that range)
// = (i * 71 + 3) & 0xff.
#pragma once

#include "virtio.hpp"

namespace guest::virtio {

// Runs the checks on disk `number` (discovery order): prints `blk<N> id=<id> sectors=<n> ro=<0|1>`, then
// CHECK blk<N>_read, blk<N>_write (writable disks) or blk_ro_write (read-only ones), blk<N>_queue_depth.
void check_blk(Device& device, uint32_t number, uint64_t seed);

}  // namespace guest::virtio
