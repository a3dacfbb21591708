#!/usr/bin/env python3
"""The host side shared by the tests that drive virtio devices with the ember test guest
(qemu_virtio_test.py against QEMU's devices, ember_virtio_test.py against ember's):

- the data patterns the guest uses (tests/guest/virtio_*.hpp) and FNV-1a;
- a private network namespace with a tap device in it;
- the network helper, run inside that namespace (`virtio_host.py --net-helper EXPECT_BYTES`): it pings
  the guest, sends it UDP datagrams, says "done" and receives the guest's datagrams, and prints JSON;
- net_problems(): what the guest's lines and the helper's counts must agree on.

Nothing here sends traffic outside the namespace it is run in.
"""
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time

import common

HOST_IP = "10.0.2.1"
GUEST_IP = "10.0.2.2"
PINGS = 3
UDP_TO_GUEST = 200
TO_GUEST_BURST = 128      # bulk host->guest: datagrams per burst,
# and the pause after each: at most ~90 MB/s offered; ~6 MB/s in the lab, where the guest runs at
# QEMU TCG speed and a faster flood overflows the tap's queue (UDP has no flow control).
TO_GUEST_PAUSE_S = 0.03 if common.in_lab() else 0.002
PAYLOAD = 1400
WRITE_OFFSET = 2048 * 512   # where the guest writes its pattern on blk0: sectors [2048, 4096)
WRITE_BYTES = 1 << 20


# --- patterns (tests/guest/virtio_*.hpp) -------------------------------------------------------------------
def disk_pattern(size, seed):
    """byte i = (i * 131 + i / 4096 + seed) & 0xff; i * 131 mod 256 repeats every 4 KiB block."""
    base = bytes((i * 131) & 0xff for i in range(4096))
    out = bytearray()
    for block in range(size // 4096):
        shift = (block + seed) & 0xff
        out += base.translate(bytes((x + shift) & 0xff for x in range(256)))
    return bytes(out)


def guest_write_pattern(size):
    return bytes((i * 71 + 3) & 0xff for i in range(size))


def console_pattern(size):
    return bytes((i * 13 + 5) & 0xff for i in range(size))


def udp_payload(k, length):
    return bytes((k + j) & 0xff for j in range(length))


def fnv1a(data):
    h = 0x811c9dc5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h


# --- the network namespace -----------------------------------------------------------------------------------
def require_root_kvm(tally, files):
    """Ends the test with a failed set-up check unless every file in FILES (what -> path) exists and
    it runs as root with /dev/kvm (the tests need /dev/kvm, ip netns and a tap)."""
    for what, path in files.items():
        if not os.path.isfile(path):
            tally.check(f"setup: {what} exists", False, path)
            tally.finish()
    if os.geteuid() != 0 or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        tally.check("setup: running as root with /dev/kvm", False, "needs root (/dev/kvm, ip netns, tap)")
        tally.finish()


def setup_namespace(namespace, tap):
    """Creates the namespace with lo up and the tap at HOST_IP/24; returns None or an error string."""
    commands = [["ip", "netns", "add", namespace],
                ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
                ["ip", "netns", "exec", namespace, "ip", "tuntap", "add", "dev", tap, "mode", "tap"],
                ["ip", "netns", "exec", namespace, "ip", "link", "set", tap, "txqueuelen", "10000"],
                ["ip", "netns", "exec", namespace, "ip", "addr", "add", HOST_IP + "/24", "dev", tap],
                ["ip", "netns", "exec", namespace, "ip", "link", "set", tap, "up"]]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return "%s: %s" % (" ".join(command), result.stderr.strip())
    return None


def delete_namespace(namespace):
    subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


# --- the network helper, run inside the namespace ------------------------------------------------------------
def icmp_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def net_helper(expect_bytes, to_guest_bytes=0):
    """Pings the guest, sends it UDP datagrams, says "done", receives its datagrams; prints JSON."""
    result = {"ping_replies": 0, "ping_rtt_ms": [], "udp_sent": 0, "udp_sent_bytes": 0,
              "udp_received": 0, "udp_received_bytes": 0, "udp_bad": 0, "udp_sources": [],
              "udp_receive_s": 0.0}
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    receiver.bind((HOST_IP, 7778))

    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    for seq in range(1, PINGS + 1):
        body = b"ember-qvt" + bytes(range(47))
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, icmp_checksum(header + body), ident, seq) + body
        start = time.monotonic()
        icmp.sendto(packet, (GUEST_IP, 0))
        deadline = start + 2.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([icmp], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data, address = icmp.recvfrom(2048)
            ihl = (data[0] & 0xf) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if address[0] == GUEST_IP and kind == 0 and rid == ident and rseq == seq and data[ihl + 8:] == body:
                result["ping_replies"] += 1
                result["ping_rtt_ms"].append(round((time.monotonic() - start) * 1000, 3))
                break
        time.sleep(0.1)

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST_IP, 0))
    to_guest_ramp = bytes(i & 0xff for i in range(256 + PAYLOAD))
    if to_guest_bytes:
        # Bulk: full datagrams, paced so the guest's receive buffers and the tap's queue keep up
        # (UDP has no flow control; a drop shows as a count mismatch in the guest's net_rx line).
        remaining, k = to_guest_bytes, 0
        start = time.monotonic()
        while remaining > 0:
            length = min(PAYLOAD, remaining)
            sender.sendto(to_guest_ramp[k & 0xff:(k & 0xff) + length], (GUEST_IP, 7779))
            result["udp_sent"] += 1
            result["udp_sent_bytes"] += length
            remaining -= length
            k += 1
            if k % TO_GUEST_BURST == 0:
                time.sleep(TO_GUEST_PAUSE_S)
        result["udp_send_s"] = round(time.monotonic() - start, 3)
    else:
        for k in range(UDP_TO_GUEST):
            length = 1 + (k * 37) % PAYLOAD
            sender.sendto(udp_payload(k, length), (GUEST_IP, 7779))
            result["udp_sent"] += 1
            result["udp_sent_bytes"] += length
            if k % 32 == 31:
                time.sleep(0.01)  # the guest has 256 receive buffers; the VMM leaves the rest in the tap queue
    time.sleep(0.3)
    sender.sendto(b"done", (GUEST_IP, 7777))

    # The guest's datagrams: k counts them in order; the payload tells its k (byte 0 = k & 0xff).
    receiver.settimeout(5.0 if expect_bytes else 0.5)
    ramp = bytes(i & 0xff for i in range(256 + 65536))
    k = 0
    first = last = None
    while result["udp_received_bytes"] < expect_bytes:
        try:
            data, address = receiver.recvfrom(65536)
        except socket.timeout:
            break
        if address[0] != GUEST_IP:
            continue
        last = time.monotonic()
        if first is None:
            first = last
        if data != ramp[k & 0xff:(k & 0xff) + len(data)]:  # == udp_payload(k, len(data)), without a loop
            result["udp_bad"] += 1
        result["udp_received"] += 1
        result["udp_received_bytes"] += len(data)
        k += 1
        receiver.settimeout(3.0)
    if first is not None:
        result["udp_receive_s"] = round(last - first, 3)  # first to last datagram, as the host saw them
    print(json.dumps(result), flush=True)


def run_net_helper(namespace, expect_bytes, timeout, to_guest_bytes=0):
    """Runs net_helper inside the namespace; returns (result dict or None, problem or None)."""
    try:
        helper = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, os.path.abspath(__file__),
                                 "--net-helper", str(expect_bytes), str(to_guest_bytes)],
                                capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "network helper did not finish within %d s" % timeout
    try:
        return json.loads(helper.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, "network helper failed: %s %s" % (helper.stdout, helper.stderr)


def net_problems(lines, net_result, tx_bytes):
    """What the guest's lines and the helper's counts must agree on; returns a list of problems, each
    starting with what it is about: "ping: ", "udp to guest: " or "udp from guest: "."""
    problems = []
    if net_result["ping_replies"] != PINGS:
        problems.append("ping: %d of %d replies" % (net_result["ping_replies"], PINGS))
    rx_line = "net_rx datagrams=%d bytes=%d bad=0" % (net_result["udp_sent"], net_result["udp_sent_bytes"])
    if rx_line not in lines:
        got = [l for l in lines if l.startswith("net_rx ")]
        problems.append("udp to guest: expected `%s`, guest said %s" % (rx_line, got))
    tx_match = [re.match(r"net_tx datagrams=(\d+) bytes=(\d+)$", l) for l in lines]
    tx_match = [m for m in tx_match if m]
    if not tx_match:
        problems.append("udp from guest: no net_tx line")
    else:
        datagrams, sent = int(tx_match[0].group(1)), int(tx_match[0].group(2))
        if sent != tx_bytes:
            problems.append("udp from guest: guest sent %d bytes, expected %d" % (sent, tx_bytes))
        if net_result["udp_received"] != datagrams or net_result["udp_received_bytes"] != sent:
            problems.append("udp from guest: host received %d datagrams / %d bytes of the guest's %d / %d" % (
                net_result["udp_received"], net_result["udp_received_bytes"], datagrams, sent))
        if net_result["udp_bad"]:
            problems.append("udp from guest: %d datagrams with a wrong payload" % net_result["udp_bad"])
    if not any(l.startswith("CHECK net ok") and "done=1" in l for l in lines):
        problems.append("udp to guest: the guest did not see the `done` datagram")
    return problems


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--net-helper":
        net_helper(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 0)
        sys.exit(0)
    print("usage: virtio_host.py --net-helper EXPECT_BYTES (inside a network namespace)", file=sys.stderr)
    sys.exit(2)
