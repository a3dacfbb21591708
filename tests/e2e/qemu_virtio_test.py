#!/usr/bin/env python3
"""Tier 2 against the reference VMM: the ember test guest's virtio drivers (tests/guest/virtio*) driving
QEMU's virtio devices, so that the same drivers can later be trusted against ember's.

Boots the PVH ELF with `test.virtio=pci` under `-M q35` and `-M microvm,pcie=on`, and with
`test.virtio=mmio` under `-M microvm` (virtio-*-device, `-global virtio-mmio.force-legacy=false`), each
with virtio-rng, two virtio-blk disks (one read-only) holding a seeded pattern, a virtio console and a
virtio-net NIC on a tap device inside a private network namespace (ember-qvt-<pid>), which the test
pings, sends UDP datagrams to, and receives the guest's datagrams from. Nothing is sent outside that
namespace; the namespace is deleted at the end, always.

Checked on the host: the guest's CHECK lines (no FAIL, RESULT fail=0, QEMU exits 0 after the guest's ACPI
power-off), the pattern the guest wrote to the writable image, the read-only image unchanged, the console
bytes and their FNV-1a in the chardev file, console input echoed back (`console_rx got`), ping replies,
UDP datagram counts and contents both ways.

usage: qemu_virtio_test.py ember-test-guest.elf
Builds nothing; run as root (/dev/kvm, network namespaces, tap). A missing QEMU is a failure, not a skip.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from virtio_host import (GUEST_IP, HOST_IP, WRITE_BYTES, WRITE_OFFSET, console_pattern, delete_namespace,
                         disk_pattern, fnv1a, guest_write_pattern, net_problems, run_net_helper)
import virtio_host

import common

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT_S = 120
MEMORY_MIB = 256
DISK_BYTES = 8 << 20
SEED = 11
CONSOLE_BYTES = 1 << 20
CONSOLE_RX_BYTES = 4096  # fits a pipe: a virtconsole drops what its chardev cannot take at once
CONSOLE_INPUT = "hello-virtio-console"
NAMESPACE = "ember-qvt-%d" % os.getpid()
TAP = "qvt0"
TX_MB = 2


# --- running QEMU ---------------------------------------------------------------------------------------------
class Guest:
    """QEMU with the serial console on a pipe, collected by a thread."""

    def __init__(self, arguments):
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.output = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()
        self.start = time.monotonic()

    def _collect(self):
        while True:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return
            with self.lock:
                self.output += chunk

    def text(self):
        with self.lock:
            return self.output.decode(errors="replace")

    def wait_for(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return True
            if self.process.poll() is not None:
                time.sleep(0.1)
                return marker in self.text()
            time.sleep(0.05)
        return False

    def finish(self, timeout):
        remaining = max(1.0, self.start + timeout - time.monotonic())
        try:
            code = self.process.wait(remaining)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self.thread.join(2)
        return code, time.monotonic() - self.start


class Case:
    def __init__(self, name, machine, transport, net=True, console="file", extra_qemu=()):
        self.name = name
        self.machine = machine
        self.transport = transport  # "pci" or "mmio"
        self.net = net
        self.console = console  # "file" (1 MiB) or "pipe" (small, with input)
        self.extra_qemu = list(extra_qemu)


def device(case, kind):
    return "virtio-%s-%s" % (kind, "pci" if case.transport == "pci" else "device")


def qemu_arguments(case, elf, workdir, cmdline):
    args = [QEMU, "-M", case.machine, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "1",
            "-m", str(MEMORY_MIB), "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-no-reboot", "-kernel", elf, "-append", cmdline]
    if case.transport == "mmio":
        args += ["-global", "virtio-mmio.force-legacy=false"]
    args += ["-device", device(case, "rng"),
             "-drive", "file=%s/d0.img,if=none,id=d0,format=raw" % workdir,
             "-device", "%s,drive=d0,serial=rw-disk" % device(case, "blk"),
             "-drive", "file=%s/d1.img,if=none,id=d1,format=raw,readonly=on" % workdir,
             "-device", "%s,drive=d1,serial=ro-disk" % device(case, "blk"),
             "-device", "%s,max_ports=1" % device(case, "serial")]
    if case.console == "file":
        args += ["-chardev", "file,id=c0,path=%s/console.out" % workdir]
    else:
        args += ["-chardev", "pipe,id=c0,path=%s/console" % workdir]
    args += ["-device", "virtconsole,chardev=c0"]
    if case.net:
        args += ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % TAP,
                 "-device", "%s,netdev=n0" % device(case, "net")]
    args += case.extra_qemu
    if case.net:
        args = ["ip", "netns", "exec", NAMESPACE] + args
    return args


def run_case(case, elf, top_workdir, results):
    """Boots one case (in its own directory); returns a list of problems."""
    problems = []
    workdir = os.path.join(top_workdir, case.name)
    os.mkdir(workdir)
    original = disk_pattern(DISK_BYTES, SEED)
    for name in ("d0.img", "d1.img"):
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(original)
    console_bytes = CONSOLE_BYTES if case.console == "file" else CONSOLE_RX_BYTES
    cmdline = "test.virtio=%s test.blk.seed=%d test.console.bytes=%d" % (case.transport, SEED, console_bytes)
    if case.console == "pipe":
        cmdline += " test.console.rx=1"
        for suffix in (".in", ".out"):
            os.mkfifo(os.path.join(workdir, "console" + suffix))
    if case.net:
        cmdline += " test.net.ip=%s test.net.peer=%s test.net.serve_ms=30000 test.net.tx_mb=%d" % (
            GUEST_IP, HOST_IP, TX_MB)
    arguments = qemu_arguments(case, elf, workdir, cmdline)

    console_data = bytearray()
    console_in = out_fd = None
    if case.console == "pipe":
        # O_RDWR: opening a FIFO this way never blocks; QEMU opens both ends the same way.
        out_fd = os.open(os.path.join(workdir, "console.out"), os.O_RDWR)
        console_in = os.open(os.path.join(workdir, "console.in"), os.O_RDWR)

        def read_console():
            while True:
                try:
                    chunk = os.read(out_fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                console_data.extend(chunk)
        threading.Thread(target=read_console, daemon=True).start()

    guest = Guest(arguments)
    net_result = None
    try:
        if case.console == "pipe":
            if guest.wait_for("ember-test-guest: console ready-for-input", 60):
                os.write(console_in, (CONSOLE_INPUT + "\n").encode())
            else:
                problems.append("guest never said `console ready-for-input`")
        if case.net:
            if guest.wait_for("ember-test-guest: net ready", 90):
                net_result, problem = run_net_helper(NAMESPACE, TX_MB << 20, 60)
                if problem:
                    problems.append(problem)
            else:
                problems.append("guest never said `net ready`")
        code, seconds = guest.finish(BOOT_TIMEOUT_S)
    finally:
        if guest.process.poll() is None:
            guest.process.kill()
            guest.process.wait()
        if case.console == "pipe":
            time.sleep(0.2)  # let the reader drain what QEMU wrote last
            os.close(console_in)
            os.close(out_fd)
    output = guest.text()
    lines = [line.rstrip("\r") for line in output.splitlines()]
    results[case.name] = {"seconds": seconds, "lines": lines, "net": net_result}

    # The guest's own verdicts.
    if code is None:
        problems.append("QEMU did not exit within %d s" % BOOT_TIMEOUT_S)
    elif code != 0:
        problems.append("QEMU exited with status %d" % code)
    problems += ["guest: " + l for l in lines if l.startswith("CHECK") and " FAIL" in l]
    problems += ["guest: " + l for l in lines if "EXCEPTION" in l]
    result_lines = [l for l in lines if l.startswith("ember-test-guest: RESULT ")]
    if not result_lines or not result_lines[-1].endswith(" fail=0"):
        problems.append("RESULT: %s" % (result_lines[-1] if result_lines else "none"))

    def expect(prefix):
        if not any(l.startswith(prefix) for l in lines):
            problems.append("missing line `%s...`" % prefix)

    expect("CHECK virtio_%s ok devices=%d" % (case.transport, 5 if case.net else 4))
    expect("CHECK rng ok")
    expect("blk0 id=rw-disk sectors=%d ro=0" % (DISK_BYTES // 512))
    expect("blk1 id=ro-disk sectors=%d ro=1" % (DISK_BYTES // 512))
    for check in ("blk0_read ok", "blk0_write ok", "blk0_queue_depth ok", "blk1_read ok", "blk1_queue_depth ok",
                  "blk_ro_write ok status=1", "console_tx ok"):
        expect("CHECK " + check)

    # Disks: the guest's pattern at sectors [2048, 4096) of d0, nothing else changed; d1 untouched.
    with open(os.path.join(workdir, "d0.img"), "rb") as f:
        d0 = f.read()
    with open(os.path.join(workdir, "d1.img"), "rb") as f:
        d1 = f.read()
    expected_d0 = original[:WRITE_OFFSET] + guest_write_pattern(WRITE_BYTES) + original[WRITE_OFFSET + WRITE_BYTES:]
    if d0 != expected_d0:
        first = next(i for i in range(len(d0)) if d0[i] != expected_d0[i]) if len(d0) == len(expected_d0) else -1
        problems.append("writable image: wrong content from byte %d" % first)
    if d1 != original:
        problems.append("read-only image changed")

    # Console: the bytes in the chardev, the guest's checksum line.
    if case.console == "file":
        with open(os.path.join(workdir, "console.out"), "rb") as f:
            console_data = bytearray(f.read())
    expected_console = console_pattern(console_bytes)
    if bytes(console_data) != expected_console:
        problems.append("console: %d bytes in the chardev, expected %d of the pattern" % (
            len(console_data), console_bytes))
    line = "console_tx bytes=%d fnv1a=%08x" % (console_bytes, fnv1a(expected_console))
    if line not in lines:
        problems.append("missing `%s`" % line)
    if case.console == "pipe" and "console_rx got " + CONSOLE_INPUT not in lines:
        problems.append("missing `console_rx got %s`" % CONSOLE_INPUT)

    # Network: ping replies, datagrams both ways.
    if case.net and net_result is not None:
        problems += net_problems(lines, net_result, TX_MB << 20)
    return problems


def setup_namespace():
    return virtio_host.setup_namespace(NAMESPACE, TAP)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("elf", nargs="?", default=os.environ.get("EMBER_TEST_GUEST_ELF"))
    parser.add_argument("--case", action="append", help="run only these cases (by name)")
    parser.add_argument("--keep-output", action="store_true", help="print every guest line")
    options = parser.parse_args()
    print("tier 2 (ember test guest virtio drivers) under QEMU on %s" % common.host_kind(), flush=True)
    passed = failed = 0
    if shutil.which(QEMU) is None:
        print("FAIL setup: %s not found (install Debian's qemu-system-x86)" % QEMU)
        print("0 passed, 1 failed")
        return 1
    if not options.elf or not os.path.isfile(options.elf):
        print("FAIL setup: test guest ELF not found: %r" % options.elf)
        print("0 passed, 1 failed")
        return 1
    if os.geteuid() != 0 or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("FAIL setup: needs root (/dev/kvm, network namespaces, tap)")
        print("0 passed, 1 failed")
        return 1

    cases = [
        Case("q35-pci", "q35", "pci"),
        Case("microvm-pcie-pci", "microvm,pcie=on", "pci", console="pipe"),
        Case("microvm-mmio", "microvm", "mmio"),
        Case("microvm-mmio-console-rx", "microvm", "mmio", net=False, console="pipe"),
    ]
    if options.case:
        cases = [c for c in cases if c.name in options.case]
    # meson stops a test with SIGTERM on timeout: leave through the finally below (namespace deletion).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    elf = os.path.abspath(options.elf)
    workdir = tempfile.mkdtemp(prefix="ember-qvt-")
    results = {}
    try:
        error = setup_namespace() if any(c.net for c in cases) else None
        if error:
            print("FAIL setup: network namespace: %s" % error)
            failed += 1
            cases = [c for c in cases if not c.net]
        for case in cases:
            problems = run_case(case, elf, workdir, results)
            info = results.get(case.name, {})
            lines = info.get("lines", [])
            timing = [l for l in lines if "virtio checks took" in l]
            summary = "%.2f s wall, %s" % (info.get("seconds", 0), timing[-1].split(": ", 1)[-1] if timing else "")
            if info.get("net"):
                net = info["net"]
                summary += ", ping rtt ms %s, udp to guest %d, from guest %d" % (
                    net["ping_rtt_ms"], net["udp_sent"], net["udp_received"])
            print("%s %s: %s" % ("PASS" if not problems else "FAIL", case.name, summary), flush=True)
            if problems or options.keep_output:
                for problem in problems:
                    print("    " + problem)
                print("    --- guest output ---")
                for line in lines[-80:] if not options.keep_output else lines:
                    if "e820" not in line:
                        print("    | " + line)
            if problems:
                failed += 1
            else:
                passed += 1
    finally:
        delete_namespace(NAMESPACE)
        shutil.rmtree(workdir, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
