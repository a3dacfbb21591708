#!/usr/bin/env python3
"""Tier 2: ember's virtio devices (virtio-blk, virtio-rng, virtio-console, virtio-net, virtio-fs) driven by the
ember test guest's own virtio drivers (tests/guest/virtio*, test.virtio=pci|mmio), over both transports
(`--transport pci` and `--transport mmio`).

For each transport:
- one boot with everything: two disk images the test fills with the seeded pattern (4 MiB read-write with
  id=rw-disk, 2 MiB `,ro` with id=ro-disk), virtio-rng (on by default), `--console virtio` with the guest
  writing 1 MiB to hvc0, and `--net tap=evt0` on a tap in a private network namespace (ember-evt-<pid>)
  with ember itself run inside the namespace; the host pings the guest, sends it UDP datagrams, says
  "done" and receives and pattern-checks the guest's datagrams (virtio_host.py, shared with the QEMU test).
  After ember exits the host reads the images back: the guest's pattern at sectors [2048, 4096) of the
  writable one, everything else unchanged, the read-only one byte-for-byte unchanged (SHA-256).
- one boot with `test.console.rx=1`: a line written to ember's stdin after `console ready-for-input` must
  reach the guest through hvc0 (`console_rx got <line>`).
- two boots with `--share DIR:emberfs` (virtio-fs served by virtiofsd) and `test.fs.tag=emberfs`: the guest
  checks the tag, FUSE_INIT, reads DIR/hello.txt (LOOKUP, OPEN, READ; `fs_read content=` must be the
  file), FORGETs on the high-priority queue and creates and writes from-guest.txt, which must then be on
  the host with the guest's text; then `--share DIR:emberfs:ro` with `test.fs.ro=1`: the guest's CREATE
  must fail (EROFS/EACCES) and nothing may appear in DIR.
Every boot: ember exits 0 (the guest powers off), nothing on stderr, no FAIL lines, RESULT fail=0.
Nothing is sent outside the namespace; the namespace is deleted at the end, always.

usage: ember_virtio_test.py EMBER GUEST_ELF [--transport pci|mmio]... [--tx-mb N] [--keep-output]
Run as root (/dev/kvm, network namespaces, tap, virtiofsd's sandbox).
"""
import argparse
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import shutil
import threading
import time

import common
from virtio_host import (GUEST_IP, HOST_IP, WRITE_BYTES, WRITE_OFFSET, console_pattern, delete_namespace,
                         disk_pattern, fnv1a, guest_write_pattern, net_problems, require_root_kvm,
                         run_net_helper, setup_namespace)

BOOT_TIMEOUT_S = 120
SEED = 11
DISK0_BYTES = 4 << 20
DISK1_BYTES = 2 << 20
CONSOLE_BYTES = 1 << 20
CONSOLE_RX_BYTES = 4096
CONSOLE_INPUT = "hello-ember-hvc0"
FS_TAG = "emberfs"
FS_HOST_TEXT = "hello from the host, shared through ember's virtio-fs"
FS_GUEST_TEXT = "written by the ember test guest through virtio-fs"  # kFsGuestText in tests/guest/virtio_fs.hpp
# MiB the guest sends over UDP: 100 MiB took 1-1.4 s of guest time (75-110 MB/s) on the emulating-KVM
# development hosts, both transports, with the host receiving and checking every datagram. In the lab
# both ends run at QEMU TCG speed (the guest sent 14 MB/s, the host's receiver lost a sixth of 100 MiB
# behind its 64 MiB socket buffer): 8 MiB each way there, every datagram still checked.
TX_MB = 8 if common.in_lab() else 100
NAMESPACE = "ember-evt-%d" % os.getpid()
TAP = "evt0"

tally = common.Tally()


class Ember:
    """ember with stdout collected as bytes by a thread (hvc0's output is binary), stderr kept apart."""

    def __init__(self, command, stdin=False):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.start = time.monotonic()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._collect, args=(self.process.stdout, self.stdout), daemon=True),
                        threading.Thread(target=self._collect, args=(self.process.stderr, self.stderr), daemon=True)]
        for thread in self.threads:
            thread.start()

    def _collect(self, stream, into):
        while True:
            chunk = os.read(stream.fileno(), 1 << 20)
            if not chunk:
                return
            with self.lock:
                into.extend(chunk)

    def wait_for(self, marker, timeout):
        marker = marker.encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if marker in self.stdout:
                    return True
            if self.process.poll() is not None:
                time.sleep(0.1)
                break
            time.sleep(0.02)
        with self.lock:
            return marker in self.stdout

    def kill_if_running(self):
        """However a test ends, no ember is left behind."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def finish(self):
        """Waits for ember (the rest of BOOT_TIMEOUT_S); returns (exit code or None, seconds)."""
        try:
            code = self.process.wait(max(1.0, self.start + BOOT_TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            code = None
        seconds = time.monotonic() - self.start
        for thread in self.threads:
            thread.join(5)
        return code, seconds


def split_console(out, pattern):
    """Finds hvc0's bytes (`pattern`) in ember's stdout, where the UART's text shares the stream.

    Returns (how, rest, problem): how is "contiguous" or "interleaved", rest is stdout without the
    pattern (the UART's text, for the line checks), problem is None or why the pattern is not there.

    The robust check is the exact one: the guest prints nothing on the UART between queueing its first
    hvc0 chunk and the last chunk coming back used, and ember writes a chunk to stdout before it marks
    it used, so the 1 MiB must appear in one piece, and in order. Searching for it whole (bytes.find) is
    exact and cheap. Only if that fails (a VMM flushing the UART and hvc0 from different threads could
    let a UART line land between two hvc0 writes) do we accept, as a weaker second best, the pattern as a
    subsequence of stdout starting at its first 64 bytes, with the bytes between made of at most 4 KiB of
    printable UART text; that case is reported ("interleaved") so it is seen. Either way the guest's
    FNV-1a of what it sent is checked separately against the pattern (that ties the guest's bytes to the
    host's pattern; this function ties the pattern to ember's stdout).
    """
    at = out.find(pattern)
    if at >= 0:
        return "contiguous", out[:at] + out[at + len(pattern):], None
    start = out.find(pattern[:64])
    if start < 0:
        return None, out, "the pattern's first 64 bytes are not in stdout (%d bytes)" % len(out)
    inserted = bytearray()
    j, position, n = 0, start, len(pattern)
    while j < n and position < len(out):
        if out[position] == pattern[j]:
            j += 1
        else:
            inserted.append(out[position])
        position += 1
    if j < n:
        return None, out, "only %d of %d pattern bytes, in order, from stdout offset %d" % (j, n, start)
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in inserted)
    if len(inserted) > 4096 or not printable:
        return None, out, "%d bytes not of the pattern between its first and last byte (%r...)" % (
            len(inserted), bytes(inserted[:80]))
    return "interleaved", out[:start] + bytes(inserted) + out[position:], None


def text_lines(data):
    """The UART's lines (split on \\n only: str.splitlines would also split on \\x0b, \\x1c, ...)."""
    return [line.decode(errors="replace").rstrip("\r") for line in bytes(data).split(b"\n")]


def ember_command(ember, elf, transport, cmdline, extra):
    return [ember, "boot", "--kernel", elf, "--cmdline", cmdline, "--transport", transport,
            "--console", "virtio"] + extra


def check_common(name, code, seconds, lines, stderr):
    """exit status, stderr, the guest's verdicts."""
    tally.check(f"{name}: ember exits 0 after the guest's power-off", code == 0,
                f"exit {code}{' (killed after %d s)' % BOOT_TIMEOUT_S if code is None else ''} after {seconds:.1f}s")
    tally.check(f"{name}: nothing on stderr", stderr.strip() == "", stderr[-3000:])
    fails = [line for line in lines if "FAIL" in line or "EXCEPTION" in line]
    tally.check(f"{name}: no FAIL lines", not fails, "\n".join(fails[:20]))
    results = [line for line in lines if line.startswith("ember-test-guest: RESULT ")]
    tally.check(f"{name}: RESULT fail=0", bool(results) and results[-1].endswith(" fail=0"),
                results[-1] if results else "no RESULT line")


def expect_line(name, lines, what, prefix, exact=False):
    found = any((line == prefix) if exact else line.startswith(prefix) for line in lines)
    detail = "missing `%s`" % prefix
    if not found:  # show what the guest said instead: lines that start like the expected one
        stem = " ".join(prefix.split(" ")[:2]).split(" ok")[0]
        near = [line for line in lines if line.startswith(stem)]
        if near:
            detail += "; guest said: " + " | ".join(near[:5])
    return tally.check(f"{name}: {what}", found, detail)


def dump(lines, stderr, keep):
    print("    --- guest output (UART; hvc0's bytes removed) ---")
    for line in lines if keep else lines[-60:]:
        if "e820" not in line and line:
            print("    | " + line[:300])
    if stderr.strip():
        print("    --- ember stderr ---")
        for line in stderr.strip().splitlines()[-30:]:
            print("    ! " + line)


def run_main_boot(ember, elf, transport, workdir, tx_mb, net_ok, keep):
    """disks, rng, 1 MiB over hvc0, net: one boot inside the namespace."""
    name = f"{transport}"
    failed_before = tally.failed
    d0 = os.path.join(workdir, f"{transport}-d0.img")
    d1 = os.path.join(workdir, f"{transport}-d1.img")
    original0 = disk_pattern(DISK0_BYTES, SEED)
    original1 = disk_pattern(DISK1_BYTES, SEED)
    with open(d0, "wb") as f:
        f.write(original0)
    with open(d1, "wb") as f:
        f.write(original1)
    with open(d1, "rb") as f:
        d1_hash_before = hashlib.sha256(f.read()).hexdigest()

    cmdline = (f"console=ttyS0 test.virtio={transport} test.blk.seed={SEED} test.console.bytes={CONSOLE_BYTES}")
    extra = ["--disk", f"{d0},id=rw-disk", "--disk", f"{d1},ro,id=ro-disk"]
    if net_ok:
        cmdline += (f" test.net.ip={GUEST_IP} test.net.peer={HOST_IP} test.net.serve_ms=30000"
                    f" test.net.tx_mb={tx_mb}")
        extra += ["--net", f"tap={TAP}"]
    command = ember_command(ember, elf, transport, cmdline, extra)
    if net_ok:
        command = ["ip", "netns", "exec", NAMESPACE] + command

    session = Ember(command)
    net_result, net_problem = None, None
    try:
        if net_ok:
            if session.wait_for("ember-test-guest: net ready", 90):
                net_result, net_problem = run_net_helper(NAMESPACE, tx_mb << 20, 120, tx_mb << 20)  # 100 MiB each way
            else:
                net_problem = "the guest never said `net ready`"
        code, seconds = session.finish()
    finally:
        session.kill_if_running()
    stdout = bytes(session.stdout)
    stderr = session.stderr.decode(errors="replace")

    # The console first: the UART's lines are what is left once hvc0's bytes are taken out.
    expected_console = console_pattern(CONSOLE_BYTES)
    how, rest, problem = split_console(stdout, expected_console)
    lines = text_lines(rest)
    check_common(name, code, seconds, lines, stderr)
    devices = "devices=%d net=%d blk=2 console=1 rng=1" % ((5, 1) if net_ok else (4, 0))
    expect_line(name, lines, f"virtio_{transport} finds the devices ({devices})",
                f"CHECK virtio_{transport} ok {devices}")

    # rng
    expect_line(name, lines, "rng: guest's check", "CHECK rng ok")

    # blk: the guest's checks, then the images read back.
    expect_line(name, lines, "blk0 GET_ID, capacity, writable",
                "blk0 id=rw-disk sectors=%d ro=0" % (DISK0_BYTES // 512), exact=True)
    expect_line(name, lines, "blk1 GET_ID, capacity, read-only",
                "blk1 id=ro-disk sectors=%d ro=1" % (DISK1_BYTES // 512), exact=True)
    for check in ("blk0_read ok", "blk1_read ok", "blk0_write ok", "blk_ro_write ok status=1",
                  "blk0_queue_depth ok requests=32", "blk1_queue_depth ok requests=32"):
        expect_line(name, lines, "blk: " + check.split(" ok")[0] + check.split(" ok")[1], "CHECK " + check)
    with open(d0, "rb") as f:
        image0 = f.read()
    expected0 = (original0[:WRITE_OFFSET] + guest_write_pattern(WRITE_BYTES) +
                 original0[WRITE_OFFSET + WRITE_BYTES:])
    detail = ""
    if image0 != expected0:
        if len(image0) != len(expected0):
            detail = f"image is {len(image0)} bytes, expected {len(expected0)}"
        else:
            first = next(i for i in range(len(image0)) if image0[i] != expected0[i])
            detail = f"first wrong byte at {first} (sector {first // 512}): {image0[first]:#x}, expected " \
                     f"{expected0[first]:#x}"
    tally.check(f"{name}: blk0 image holds the guest's pattern at sectors [2048, 4096), the rest unchanged",
                image0 == expected0, detail)
    with open(d1, "rb") as f:
        d1_hash_after = hashlib.sha256(f.read()).hexdigest()
    tally.check(f"{name}: blk1 (ro) image unchanged (sha256)", d1_hash_after == d1_hash_before,
                f"{d1_hash_before} -> {d1_hash_after}")

    # console
    tally.check(f"{name}: console: the 1 MiB the guest wrote to hvc0 is in ember's stdout, in order",
                problem is None, problem or "")
    if how == "interleaved":
        print(f"     {name}: note: UART text was interleaved inside hvc0's bytes", flush=True)
    fnv_line = "console_tx bytes=%d fnv1a=%08x" % (CONSOLE_BYTES, fnv1a(expected_console))
    expect_line(name, lines, "console: the guest sent exactly the pattern (FNV-1a)", fnv_line, exact=True)
    expect_line(name, lines, "console: guest's transmit check", "CHECK console_tx ok")

    # net
    summary = f"{seconds:.2f}s wall"
    if net_ok:
        tally.check(f"{name}: net: the host-side helper ran", net_result is not None, net_problem or "")
        if net_result is not None:
            problems = net_problems(lines, net_result, tx_mb << 20)
            for aspect in ("ping", "udp to guest", "udp from guest"):
                mine = [p for p in problems if p.startswith(aspect + ": ")]
                tally.check(f"{name}: net: {aspect}", not mine, "; ".join(p[len(aspect) + 2:] for p in mine))
            tx = [re.search(r"CHECK net_tx ok .*time_us=(\d+)", line) for line in lines]
            tx = [m for m in tx if m]
            if tx:
                mb_s = (tx_mb << 20) / int(tx[0].group(1)) if int(tx[0].group(1)) else 0
                summary += f", net tx {tx_mb} MiB in {int(tx[0].group(1)) / 1e6:.2f}s ({mb_s:.1f} MB/s guest-timed"
                if net_result.get("udp_receive_s"):
                    summary += f", {net_result['udp_received_bytes'] / net_result['udp_receive_s'] / 1e6:.1f}" \
                               f" MB/s host-timed"
                summary += ")"
            summary += f", ping rtt ms {net_result['ping_rtt_ms']}"
    timing = [line for line in lines if "virtio checks took" in line]
    if timing:
        summary += ", " + timing[-1].split(": ", 1)[-1]
    console_us = [re.search(r"CHECK console_tx ok .*time_us=(\d+)", line) for line in lines]
    console_us = [m for m in console_us if m]
    if console_us and int(console_us[0].group(1)):
        summary += f", hvc0 1 MiB in {int(console_us[0].group(1)) / 1e3:.1f} ms"
    print(f"     {name}: {summary}", flush=True)
    if keep or tally.failed > failed_before:
        dump(lines, stderr, keep)


def run_console_rx(ember, elf, transport, keep):
    """host stdin -> hvc0: a separate boot that waits for a line."""
    name = f"{transport}-console-rx"
    failed_before = tally.failed
    cmdline = f"console=ttyS0 test.virtio={transport} test.console.rx=1 test.console.bytes={CONSOLE_RX_BYTES}"
    session = Ember(ember_command(ember, elf, transport, cmdline, []), stdin=True)
    try:
        ready = session.wait_for("ember-test-guest: console ready-for-input", 60)
        tally.check(f"{name}: guest asks for input on hvc0", ready)
        if ready:
            try:
                session.process.stdin.write((CONSOLE_INPUT + "\n").encode())
                session.process.stdin.flush()
            except BrokenPipeError:
                pass  # ember is gone; the checks below say so
        got = session.wait_for("console_rx got " + CONSOLE_INPUT, 25)
        code, seconds = session.finish()
    finally:
        session.kill_if_running()
    stdout = bytes(session.stdout)
    stderr = session.stderr.decode(errors="replace")
    how, rest, problem = split_console(stdout, console_pattern(CONSOLE_RX_BYTES))
    lines = text_lines(rest)
    tally.check(f"{name}: ember's stdin reached the guest through hvc0",
                got and "console_rx got " + CONSOLE_INPUT in lines,
                "guest said: " + " | ".join(l for l in lines if "console" in l))
    tally.check(f"{name}: the guest's 4 KiB on hvc0 are in ember's stdout", problem is None, problem or "")
    check_common(name, code, seconds, lines, stderr)
    print(f"     {name}: {seconds:.2f}s wall", flush=True)
    if keep or tally.failed > failed_before:
        dump(lines, stderr, keep)


def run_share(ember, elf, transport, workdir, read_only, keep):
    """virtio-fs: a host directory through virtiofsd; the guest reads hello.txt and writes from-guest.txt."""
    name = f"{transport}-share{'-ro' if read_only else ''}"
    failed_before = tally.failed
    share = tempfile.mkdtemp(prefix=f"share-{transport}-", dir=workdir)
    with open(os.path.join(share, "hello.txt"), "w") as f:
        f.write(FS_HOST_TEXT)
    cmdline = f"console=ttyS0 test.virtio={transport} test.fs.tag={FS_TAG}" + (" test.fs.ro=1" if read_only else "")
    command = [ember, "boot", "--kernel", elf, "--cmdline", cmdline, "--transport", transport,
               "--share", f"{share}:{FS_TAG}" + (":ro" if read_only else "")]
    session = Ember(command)
    try:
        code, seconds = session.finish()
    finally:
        session.kill_if_running()
    lines = text_lines(session.stdout)
    stderr = session.stderr.decode(errors="replace")
    check_common(name, code, seconds, lines, stderr)
    expect_line(name, lines, f"virtio_{transport} finds rng and the virtio-fs device (devices=2)",
                f"CHECK virtio_{transport} ok devices=2 ")
    expect_line(name, lines, "fs: the config tag is the --share tag", f"CHECK fs_tag ok tag={FS_TAG} ")
    expect_line(name, lines, "fs: FUSE_INIT answered with major 7", "CHECK fs_init ok major=7 ")
    expect_line(name, lines, "fs: LOOKUP/OPEN/READ of hello.txt", f"CHECK fs_read ok bytes={len(FS_HOST_TEXT)} ")
    expect_line(name, lines, "fs: the guest read hello.txt's content", "fs_read content=" + FS_HOST_TEXT, exact=True)
    expect_line(name, lines, "fs: FUSE_FORGET on the high-priority queue", "CHECK fs_forget ok queue=0 ")
    with open(os.path.join(share, "hello.txt")) as f:
        tally.check(f"{name}: hello.txt unchanged on the host", f.read() == FS_HOST_TEXT)
    written = os.path.join(share, "from-guest.txt")
    if read_only:
        expect_line(name, lines, "fs: CREATE refused on the read-only share", "CHECK fs_ro ok create_error=")
        left = sorted(os.listdir(share))
        tally.check(f"{name}: nothing written to the host directory", left == ["hello.txt"], f"directory holds {left}")
    else:
        expect_line(name, lines, "fs: CREATE/WRITE/FLUSH/RELEASE of from-guest.txt",
                    f"CHECK fs_write ok bytes={len(FS_GUEST_TEXT)} ")
        content = None
        if os.path.exists(written):
            with open(written, "rb") as f:
                content = f.read()
        tally.check(f"{name}: from-guest.txt is on the host with the guest's text",
                    content == FS_GUEST_TEXT.encode(), "missing" if content is None else f"content {content[:200]!r}")
    print(f"     {name}: {seconds:.2f}s wall", flush=True)
    if keep or tally.failed > failed_before:
        dump(lines, stderr, keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ember")
    parser.add_argument("elf")
    parser.add_argument("--transport", action="append", choices=("pci", "mmio"),
                        help="run only these transports (default: both)")
    parser.add_argument("--tx-mb", type=int, default=TX_MB, help="MiB the guest sends over UDP (default %(default)s)")
    parser.add_argument("--keep-output", action="store_true", help="print every guest line")
    options = parser.parse_args()

    common.announce(2, "ember virtio devices driven by the test guest")
    ember, elf = os.path.abspath(options.ember), os.path.abspath(options.elf)
    require_root_kvm(tally, {"ember": ember, "test guest ELF": elf})

    # meson stops a test with SIGTERM on timeout: leave through the finally below (namespace deletion).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = tempfile.mkdtemp(prefix="ember-evt-")
    start = time.monotonic()
    try:
        error = setup_namespace(NAMESPACE, TAP)
        tally.check(f"setup: network namespace {NAMESPACE} with tap {TAP} at {HOST_IP}/24", error is None,
                    error or "")
        for transport in options.transport or ("pci", "mmio"):
            run_main_boot(ember, elf, transport, workdir, options.tx_mb, error is None, options.keep_output)
            run_console_rx(ember, elf, transport, options.keep_output)
            for read_only in (False, True):
                run_share(ember, elf, transport, workdir, read_only, options.keep_output)
    finally:
        delete_namespace(NAMESPACE)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"     total {time.monotonic() - start:.1f}s", flush=True)
    tally.finish()


if __name__ == "__main__":
    main()
