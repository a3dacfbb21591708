// virtio network device (virtio 1.2 §5.1) with just enough IPv4 to be tested from the host: it answers ARP
// for its address and ICMP echo requests, counts and checks UDP datagrams to port 7779, stops serving on a
// UDP datagram "done" to port 7777, and can send a stream of UDP datagrams to the peer's port 7778.
//
// Command line: test.net.ip=a.b.c.d (default 10.0.2.2), test.net.peer=a.b.c.d (default 10.0.2.1),
// test.net.serve_ms=N (default 10000), test.net.tx_mb=N (default 0: send nothing).
// Datagrams: payload byte j of datagram k = (k + j) & 0xff, 1400-byte payloads (the last one shorter to
// make exactly N MiB). Received ones are checked the same way with k = payload byte 0.
// Prints `ember-test-guest: net ready mac=.. ip=..` once it serves, then
// `net_tx datagrams=<n> bytes=<n>` (if asked) and `net_rx datagrams=<n> bytes=<n> bad=<n>`.
#pragma once

#include "bootinfo.hpp"
#include "virtio.hpp"

namespace guest::virtio {

void check_net(Device& device, uint32_t number, const BootInfo& boot);

}  // namespace guest::virtio
