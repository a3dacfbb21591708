#!/usr/bin/env python3
"""Tier 1 (no VM): the two halves of `ember run --net tap -p` against the real kernel, in network
namespaces this test creates (ember-gn-<pid>-*) and always deletes; nothing is sent outside them.

1. ember-init's network set-up (guest/init/network.cpp, through guest_network_probe): a veth pair
   between a "host" namespace (172.30.0.1/30 on its end, 10.99.0.1/32 on lo) and a "guest" namespace
   whose end carries the spec's MAC under another name. After the probe: lo up with 127.0.0.1/8, the
   interface renamed to eth0 with 172.30.0.2/30 and the spec's MTU, up, default route via 172.30.0.1;
   the guest namespace pings the gateway and 10.99.0.1 (only reachable over the default route);
   ROOT/etc/resolv.conf and ROOT/etc/hosts hold what the spec says, a symlinked resolv.conf is replaced,
   not followed; without a network only hosts is written; an unknown MAC is a one-line error.
2. create_run_network + configure_network + PortForwarder together (run_network_probe): the run's tap in
   a host namespace, a second tap in a guest namespace configured from RunNetwork::spec(), frames copied
   between the two tap fds by the probe (standing in for the VM); TCP through the forwarded port to the
   guest namespace, the guest's default route to the host, and the tap deleted afterwards.

usage: guest_network_test.py GUEST_NETWORK_PROBE RUN_NETWORK_PROBE     (as root)
"""
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

import common
from virtio_host import icmp_checksum

PREFIX = "ember-gn-%d" % os.getpid()
GUEST_MAC = "02:65:6d:00:00:07"
MTU = 1400
BEYOND_GATEWAY = "10.99.0.1"

tally = common.Tally()


def run(command, check=True):
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(command), (result.stderr or result.stdout).strip()))
    return result


def ip_json(namespace, *args):
    return json.loads(run(["ip", "-n", namespace, "-j"] + list(args)).stdout or "[]")


def ping_helper(address):
    """Inside a namespace: one ICMP echo to address; prints 'reply' or 'none'."""
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident, body = os.getpid() & 0xffff, b"ember-guest-network"
    for seq in range(1, 4):
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        icmp.sendto(struct.pack("!BBHHH", 8, 0, icmp_checksum(header + body), ident, seq) + body, (address, 0))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([icmp], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data, source = icmp.recvfrom(2048)
            ihl = (data[0] & 0xf) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if source[0] == address and kind == 0 and rid == ident and rseq == seq:
                print("reply")
                return
    print("none")


def pings(namespace, address):
    result = run(["ip", "netns", "exec", namespace, sys.executable, os.path.abspath(__file__), "--ping", address],
                 check=False)
    return result.stdout.strip() == "reply"


def read(path):
    with open(path) as f:
        return f.read()


def guest_setup(probe):
    host_ns, guest_ns = PREFIX + "-h", PREFIX + "-g"
    for command in (["ip", "netns", "add", host_ns], ["ip", "netns", "add", guest_ns],
                    ["ip", "-n", host_ns, "link", "set", "lo", "up"],
                    ["ip", "-n", host_ns, "addr", "add", BEYOND_GATEWAY + "/32", "dev", "lo"],
                    ["ip", "-n", host_ns, "link", "add", "gnv-host", "type", "veth", "peer", "name", "gnv-guest",
                     "netns", guest_ns],
                    ["ip", "-n", host_ns, "addr", "add", "172.30.0.1/30", "dev", "gnv-host"],
                    ["ip", "-n", host_ns, "link", "set", "gnv-host", "up"],
                    ["ip", "-n", guest_ns, "link", "set", "gnv-guest", "address", GUEST_MAC]):
        run(command)
    with tempfile.TemporaryDirectory(prefix="ember-gn-") as root:
        os.mkdir(os.path.join(root, "etc"))
        outside = os.path.join(root, "outside-resolv.conf")
        with open(outside, "w") as f:
            f.write("untouched\n")
        os.symlink(outside, os.path.join(root, "etc", "resolv.conf"))
        result = run(["ip", "netns", "exec", guest_ns, probe, root, "box-1", "eth0", GUEST_MAC.upper(),
                      "172.30.0.2/30", "172.30.0.1", str(MTU), "10.0.0.53", "172.30.0.1"], check=False)
        tally.check("probe configures the guest namespace", result.returncode == 0 and result.stdout == "ok\n",
                    result.stdout + result.stderr)

        links = {link["ifname"]: link for link in ip_json(guest_ns, "addr", "show")}
        tally.check("interface found by MAC and renamed to eth0", "eth0" in links and "gnv-guest" not in links,
                    str(sorted(links)))
        eth0 = links.get("eth0", {})
        addresses = [(a["local"], a["prefixlen"]) for a in eth0.get("addr_info", []) if a["family"] == "inet"]
        tally.check("eth0 has 172.30.0.2/30", addresses == [("172.30.0.2", 30)], str(addresses))
        tally.check("eth0 mtu %d" % MTU, eth0.get("mtu") == MTU, str(eth0.get("mtu")))
        tally.check("eth0 up", "UP" in eth0.get("flags", []), str(eth0.get("flags")))
        lo = links.get("lo", {})
        lo_addresses = [(a["local"], a["prefixlen"]) for a in lo.get("addr_info", []) if a["family"] == "inet"]
        tally.check("lo up with 127.0.0.1/8", "UP" in lo.get("flags", []) and ("127.0.0.1", 8) in lo_addresses,
                    str(lo.get("flags")) + " " + str(lo_addresses))
        defaults = [r for r in ip_json(guest_ns, "route", "show") if r.get("dst") == "default"]
        tally.check("default route via 172.30.0.1 dev eth0",
                    len(defaults) == 1 and defaults[0].get("gateway") == "172.30.0.1"
                    and defaults[0].get("dev") == "eth0", str(defaults))
        tally.check("guest pings the gateway", pings(guest_ns, "172.30.0.1"))
        tally.check("guest reaches %s over the default route" % BEYOND_GATEWAY, pings(guest_ns, BEYOND_GATEWAY))

        resolv = os.path.join(root, "etc", "resolv.conf")
        tally.check("resolv.conf replaced the symlink, not its target",
                    not os.path.islink(resolv) and read(outside) == "untouched\n")
        tally.check("resolv.conf lists the spec's servers",
                    read(resolv).splitlines()[1:] == ["nameserver 10.0.0.53", "nameserver 172.30.0.1"],
                    repr(read(resolv)))
        hosts = read(os.path.join(root, "etc", "hosts"))
        tally.check("hosts has localhost, ::1 and the hostname at the guest address",
                    hosts == "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n172.30.0.2\tbox-1\n",
                    repr(hosts))
        tally.check("hosts and resolv.conf are mode 0644",
                    all(os.stat(os.path.join(root, "etc", n)).st_mode & 0o777 == 0o644 for n in ("hosts", "resolv.conf")))
        tally.check("no temporary files left in etc", sorted(os.listdir(os.path.join(root, "etc"))) == ["hosts", "resolv.conf"],
                    str(os.listdir(os.path.join(root, "etc"))))

    with tempfile.TemporaryDirectory(prefix="ember-gn-") as root:
        result = run([probe, "--no-network", root, "box-2"], check=False)
        tally.check("without a network only hosts is written",
                    result.returncode == 0 and os.listdir(os.path.join(root, "etc")) == ["hosts"]
                    and read(os.path.join(root, "etc", "hosts")).endswith("127.0.1.1\tbox-2\n"),
                    result.stdout + str(os.listdir(root)))
        result = run(["ip", "netns", "exec", guest_ns, probe, root, "box-3", "eth1", "02:00:00:00:00:99",
                      "172.30.0.6/30", "172.30.0.5", "1500"], check=False)
        tally.check("unknown MAC is a one-line error",
                    result.returncode == 1 and result.stdout.count("\n") == 1
                    and "no network interface has MAC 02:00:00:00:00:99" in result.stdout, result.stdout)


def run_network_check(probe):
    host_ns, guest_ns = PREFIX + "-rh", PREFIX + "-rg"
    for command in (["ip", "netns", "add", host_ns], ["ip", "netns", "add", guest_ns],
                    ["ip", "-n", host_ns, "link", "set", "lo", "up"],
                    ["ip", "-n", host_ns, "addr", "add", BEYOND_GATEWAY + "/32", "dev", "lo"]):
        run(command)
    stderr = ""
    try:
        result = subprocess.run(["ip", "netns", "exec", host_ns, probe, guest_ns, BEYOND_GATEWAY],
                                capture_output=True, text=True, timeout=90)
        output, stderr = result.stdout, result.stderr.strip()
    except subprocess.TimeoutExpired as timeout:
        output = (timeout.stdout or b"").decode() + "check probe fail timed out after 90 s\n"
    checks = [line.split(" ", 3) for line in output.splitlines() if line.startswith("check ")]
    for fields in checks:
        tally.check("run network: " + fields[1], fields[2] == "ok", fields[3] if len(fields) > 3 else "")
    names = [fields[1] for fields in checks]
    expected = ["run-network-created", "guest-interface-renamed", "port-forward-through-tap",
                "guest-default-route", "run-network-tap-deleted"]
    tally.check("run network: every check reported", names == expected,
                "%s; stderr: %s" % (names, stderr))
    links = [link["ifname"] for link in ip_json(host_ns, "link", "show")]
    tally.check("run network: no emb-* tap left in the host namespace",
                not any(name.startswith("emb-") for name in links), str(links))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--ping":
        ping_helper(sys.argv[2])
        return
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    common.announce(1, "ember-init's network set-up and ember run's host network, in network namespaces")
    guest_probe, run_probe = sys.argv[1], sys.argv[2]
    try:
        try:
            guest_setup(guest_probe)
        except Exception as error:  # A set-up command failed: one failure naming it, then go on.
            tally.check("guest network set-up", False, str(error))
        try:
            run_network_check(run_probe)
        except Exception as error:
            tally.check("run network set-up", False, str(error))
    finally:
        for suffix in ("-h", "-g", "-rh", "-rg"):
            subprocess.run(["ip", "netns", "delete", PREFIX + suffix], capture_output=True)
    tally.finish()


if __name__ == "__main__":
    main()
