// virtio benchmarks (never checks: nothing here judges a number), run instead of the per-device checks
// when the command line has `test.bench=blk`, `test.bench=net` or `test.bench=blk,net` (with
// test.virtio=pci|mmio). Everything runs at CPL3 and completions are found by polling the used rings
// with interrupts suppressed (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event kept out of reach with
// EVENT_IDX), so the numbers measure the VMM's devices, not this host's emulated CPL0 interrupt path.
// Time is the TSC: tsc_khz() unless `test.tsc_khz=N` overrides it (the host's KVM_GET_TSC_KHZ).
//
// blk (first writable disk): seq-read, seq-write (1 MiB requests, sequential, wrapping at the end of the
// disk), rand-read, rand-write (4 KiB requests at random 4 KiB-aligned offsets), each at queue depth 1
// and 32, for test.bench.mb MiB (default 64) or test.bench.ms milliseconds (default 1000), whichever
// ends first. One line per case:
//   BENCH blk <seq|rand>-<read|write> qd=<1|32> bs=<bytes> ops=<n> bytes=<n> us=<n> iops=<n> mbps=<MB/s>
//   lat_us=<mean submit-to-completion time of one request>
// (MB = 10^6 bytes.) At qd=32 the window is kept full: a completed request is replaced at once.
//
// net (first NIC; guest test.net.ip, default 10.0.2.2, peer test.net.peer, default 10.0.2.1):
//   tx: ARP for the peer, then test.bench.mb MiB of UDP datagrams (1400-byte payloads) to peer port 7778,
//       timed from the first submission to the return of the last transmit buffer:
//       `BENCH net tx datagrams=<n> bytes=<n> us=<n> mbps=<MB/s>`
//   then prints `BENCH net rx-ready` and counts UDP datagrams to port 7779 until a datagram "done" to
//   port 7777 (or test.bench.net_idle_ms, default 3000, without any datagram once some came, or 20 s in
//   all), timed from the first to the last datagram received:
//       `BENCH net rx datagrams=<n> bytes=<n> us=<n> mbps=<MB/s>`
#pragma once

#include <stdint.h>

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::virtio {

// True if the command line asks for a benchmark (then the caller skips the device checks).
bool bench_requested(const BootInfo& boot);
void run_bench(const BootInfo& boot, Device* devices, uint32_t count);

}  // namespace guest::virtio
