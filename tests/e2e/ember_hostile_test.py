#!/usr/bin/env python3
"""Tier 2: the ember test guest as a hostile guest (test.hostile=1, tests/guest/hostile.hpp) against ember's
virtio devices, transports, PCI/MSI-X, legacy devices, and ember run's protocol (tests/guest/init_stub.hpp).

1. Hostile boots, `ember boot --console virtio` with virtio-rng, a 4 MiB disk of the seeded pattern, virtio-net
   on a tap in a private network namespace (ember-hst-<pid>, the host end at 10.0.2.1 answers ARP), virtio-fs
   (--share, served by virtiofsd: transport attacks only, its rings are virtiofsd's to walk), 2 vCPUs (the
   second hammers each device's registers while the first uses it), over
   --transport pci (3136 MiB of RAM: the RAM region ends at the 32-bit hole and a second one starts at 4 GiB)
   and mmio (256 MiB), two seeds each (one each in the lab); the second pair with --seccomp off so that an
   ASan build's LeakSanitizer runs at exit. ember's stdin is kept full so hvc0's receive queue is exercised. Checks: ember
   exits 0 after the guest's power-off (no signal, no hang), RESULT fail=0, every device (rng, blk, console,
   net, fs) printed its summary with 0 unexpected answers and 0 devices left broken, one line per attack and as
   many as the summary says, the core attacks all there, the platform fuzz recovered every device, the same
   number of file descriptors and threads (io_uring workers aside) at the guest's two checkpoints (after one
   ordinary use of every device, and after all attacks), stderr only the warnings a hostile guest earns, no
   more of them than the rate limits allow, no sanitizer report, and the disk's first 2 MiB unchanged.
2. An ordinary VM afterwards (the normal test.virtio=pci checks with the same disk and tap): RESULT fail=0.
3. ember run with the test guest playing ember-init and sending malformed frames (test.hostile.frame=...):
   exit 125 with one "ember: guest protocol error: ..." line, or for a stream cut mid-frame one line saying the
   guest powered off; well-formed frames of random bytes: the kError's status and one printable line. Then an
   ordinary `ember run ... -- echo` works.

usage: ember_hostile_test.py EMBER GUEST_ELF [--transport pci|mmio]... [--keep-output]
Run as root (/dev/kvm, network namespaces, tap)."""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import common
from virtio_host import (GUEST_IP, HOST_IP, delete_namespace, disk_pattern, require_root_kvm,
                         setup_namespace)

SEED_BLK = 11
DISK_BYTES = 4 << 20
UNTOUCHED_BYTES = 2 << 20       # sector 4096 on: the hostile guest's writes; [2048, 4096): the normal boot's
LAB = common.in_lab()
BOOT_TIMEOUT_S = 600 if LAB else 180
QUIET_MS = 500 if LAB else 50   # how long the guest waits for an answer that may rightly not come
PAUSE_MS = 4000 if LAB else 1500
FUZZ = 500 if LAB else 2000
NAMESPACE = "ember-hst-%d" % os.getpid()
TAP = "hst0"
DEVICES = ("rng", "blk", "console", "net", "fs")
FS_TAG = "hostilefs"
# Attacks every device must have been through (the guest prints more; see tests/guest/hostile.cpp). virtio-fs
# rings are walked by virtiofsd, not ember: it gets the transport attacks only.
RING_ATTACKS = ("desc_self_loop", "desc_loop_to_head", "chain_longer_than_queue", "head_out_of_range",
                "avail_idx_jump", "buffer_outside_ram", "length_0xffffffff", "address_overflows",
                "chain_over_4g_aliased", "indirect_nested", "indirect_loop", "indirect_not_negotiated")
TRANSPORT_ATTACKS = ("rings_outside_ram", "desc_table_misaligned", "queue_size_0", "queue_size_3",
                     "queue_size_twice_max", "notify_missing_queues", "notify_before_driver_ok",
                     "reset_with_requests_in_flight", "register_fuzz", "concurrent_register_storm")
PCI_ATTACKS = ("msix_vectors_out_of_range", "msix_table_odd_sizes_and_offsets",
               "msix_message_addresses_anywhere", "msix_masking_toggled_under_load")
PER_DEVICE = {"blk": ("blk_header_device_writable", "blk_read_into_device_readable", "blk_status_device_readable",
                      "blk_sector_2^64-1", "blk_discard_past_end"),
              "rng": ("rng_buffer_device_readable",),
              "console": ("console_tx_device_writable", "console_rx_loop"),
              "net": ("net_tx_bogus_gso_header", "net_rx_loop", "net_rx_8_byte_buffer"),
              "fs": ()}
# What ember may say on stderr while a guest attacks it: guest-caused trouble, logged and survived.
ALLOWED_STDERR = [re.compile(pattern) for pattern in (
    r"^ember: warning: virtio-pci device \d+: .*(device needs reset|reset failed)",
    r"^ember: warning: virtio-mmio: device \d+ needs reset: ",
    r"^ember: warning: virtio-(rng|console|blk): ",
    r"^ember: warning: virtio-net \S+: ",
    r"^ember: warning: acpi: guest asked for unsupported sleep type \d+; ignoring$",
    r"^ember: (warning|error): MSI-X vector \d+ of requester 0x[0-9a-f]+: ",
    r"^ember: warning: virtqueue notification at 0x[0-9a-f]+: ",
    r"^ember: warning: --seccomp off: ",
    r"^ember: warning: virtio-fs '" + FS_TAG + "': ",
)]
SANITIZER = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "SUMMARY: ",
             "ThreadSanitizer")
# ember run: (attack, expected exit status, what the last stderr line must match)
FRAME_ATTACKS = (
    ("random", 125, r"^ember: guest protocol error: "),
    ("before_hello", 125, r"^ember: guest protocol error: frame 0x82 before kHello$"),
    ("host_type", 125, r"^ember: guest protocol error: unknown frame type \(type 0x01"),
    ("flags", 125, r"^ember: guest protocol error: non-zero flags or reserved field"),
    ("reserved", 125, r"^ember: guest protocol error: non-zero flags or reserved field"),
    ("length_4g", 125, r"^ember: guest protocol error: frame longer than the protocol allows"),
    ("hello_short", 125, r"^ember: guest protocol error: kHello payload of 3 bytes$"),
    ("hello_version", 125, r"^ember: guest protocol error: ember-init speaks protocol version 4294967295"),
    ("truncated_header", 125, r"^ember: the guest powered off before ember-init started"),
    ("random_after_start", 125, r"^ember: guest protocol error: "),
    ("over_max_payload", 125, r"^ember: guest protocol error: frame longer than the protocol allows"),
    ("hello_again", 125, r"^ember: guest protocol error: unexpected frame 0x81$"),
    ("exit_short", 125, r"^ember: guest protocol error: kExit payload of 4 bytes$"),
    ("exit_how", 125, r"^ember: guest protocol error: kExit with how 7"),
    ("exit_signal_0", 125, r"^ember: guest protocol error: kExit with how 1, value 0$"),
    ("error_status_0", 125, r"^ember: guest protocol error: kError with status 0$"),
    ("truncated_payload", 125, r"^ember: the guest powered off before the container reported its exit"),
    ("hostile_text", 77, r"^ember: ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ"),
)

tally = common.Tally()


class Ember:
    """ember with stdout and stderr collected by threads, stdin kept full by a third."""

    def __init__(self, command, feed_stdin):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE if feed_stdin else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.start = time.monotonic()
        self.stdout, self.stderr = bytearray(), bytearray()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._collect, args=(self.process.stdout, self.stdout), daemon=True),
                        threading.Thread(target=self._collect, args=(self.process.stderr, self.stderr), daemon=True)]
        if feed_stdin:
            self.threads.append(threading.Thread(target=self._feed, daemon=True))
        for thread in self.threads:
            thread.start()

    def _collect(self, stream, into):
        while chunk := os.read(stream.fileno(), 1 << 16):
            with self.lock:
                into.extend(chunk)

    def _feed(self):
        line = b"hostile-console-input 0123456789\n" * 128
        try:
            while self.process.poll() is None:
                self.process.stdin.write(line)
                self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def has(self, marker):
        with self.lock:
            return marker in self.stdout

    def finish(self, timeout):
        try:
            code = self.process.wait(max(1.0, self.start + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            code = None
        for thread in self.threads[:2]:
            thread.join(5)
        return code, time.monotonic() - self.start

    def kill_if_running(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def resources(pid):
    """(open file descriptors, threads other than io_uring's workers, their names) of a process."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        names = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/comm") as comm:
                    names.append(comm.read().strip())
            except OSError:
                pass
        threads = [name for name in names if not name.startswith("iou-")]
        return fds, len(threads), sorted(threads)
    except OSError as error:
        return None, None, str(error)


def text_lines(data):
    return [line.decode(errors="replace").rstrip("\r").strip() for line in bytes(data).split(b"\n")]


def unexpected_stderr(stderr):
    bad = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        if any(pattern.search(line) for pattern in ALLOWED_STDERR):
            continue
        bad.append(line)
    return bad


def dump(lines, stderr, keep):
    print("    --- guest output (UART and hvc0) ---")
    shown = [line for line in lines if line and "e820" not in line and set(line) != {"."}]
    for line in shown if keep else shown[-50:]:
        print("    | " + line[:300])
    if stderr.strip():
        print("    --- ember stderr (last 30 lines) ---")
        for line in stderr.strip().splitlines()[-30:]:
            print("    ! " + line[:300])


def hostile_boot(ember, elf, transport, seed, disk, share, seccomp, net_ok, keep):
    name = f"hostile {transport} seed={seed}{' seccomp=off' if not seccomp else ''}"
    failed_before = tally.failed
    cmdline = (f"console=ttyS0 test.virtio={transport} test.hostile=1 test.seed={seed} test.blk.seed={SEED_BLK}"
               f" test.hostile.quiet_ms={QUIET_MS} test.hostile.pause_ms={PAUSE_MS} test.hostile.fuzz={FUZZ}"
               f" test.net.ip={GUEST_IP} test.net.peer={HOST_IP}")
    command = [ember, "boot", "--kernel", elf, "--cmdline", cmdline, "--transport", transport, "--console",
               "virtio", "--disk", f"{disk},id=hostile-disk", "--share", f"{share}:{FS_TAG}", "--cpus", "2"]
    if transport == "pci":
        command += ["--memory", "3136M"]
    if not seccomp:
        command += ["--seccomp", "off"]
    if net_ok:
        command = ["ip", "netns", "exec", NAMESPACE] + command + ["--net", f"tap={TAP}"]
        command[command.index("--cmdline") + 1] += " test.hostile.net_rx=1"
    session = Ember(command, feed_stdin=True)
    samples = {}
    try:
        for checkpoint in ("first", "last"):
            marker = f"hostile: checkpoint {checkpoint}".encode()
            while not session.has(marker) and session.process.poll() is None and \
                    time.monotonic() - session.start < BOOT_TIMEOUT_S:
                time.sleep(0.02)
            if session.has(marker) and session.process.poll() is None:
                samples[checkpoint] = resources(session.process.pid)
        code, seconds = session.finish(BOOT_TIMEOUT_S)
    finally:
        session.kill_if_running()
    lines = text_lines(session.stdout)
    stderr = session.stderr.decode(errors="replace")

    tally.check(f"{name}: ember exits 0 after the guest's power-off", code == 0,
                f"exit {code} (negative: killed by signal {-code if code and code < 0 else '-'}; None: hung and "
                f"killed after {BOOT_TIMEOUT_S} s) after {seconds:.1f}s")
    results = [line for line in lines if line.startswith("ember-test-guest: RESULT ")]
    tally.check(f"{name}: RESULT fail=0", bool(results) and results[-1].endswith(" fail=0"),
                results[-1] if results else "no RESULT line")
    fails = [line for line in lines if "FAIL" in line or "EXCEPTION" in line or "UNEXPECTED" in line
             or "NOT RECOVERED" in line]
    tally.check(f"{name}: no FAIL, UNEXPECTED or NOT RECOVERED lines", not fails, "\n".join(fails[:20]))
    devices = [device for device in DEVICES if net_ok or device != "net"]
    for device in devices:
        prefix = f"hostile: {device}/{transport}: "
        attack_lines = [line[len(prefix):] for line in lines if line.startswith(prefix) and
                        (line.endswith("; recovered") or "; NOT RECOVERED (" in line)]
        summary = [re.match(r"(\d+) attacks, (\d+) unexpected, (\d+) not recovered", line[len(prefix):])
                   for line in lines if line.startswith(prefix)]
        summary = [m for m in summary if m]
        count = int(summary[-1].group(1)) if summary else -1
        tally.check(f"{name}: {device}: every attack answered as expected and the device recovered",
                    bool(summary) and summary[-1].group(2) == "0" and summary[-1].group(3) == "0",
                    summary[-1].group(0) if summary else "no summary line")
        named = [line.split(": ", 1)[0] for line in attack_lines]
        tally.check(f"{name}: {device}: one line per attack ({count})", len(named) == count,
                    f"{len(named)} attack lines, summary says {count}")
        wanted = (RING_ATTACKS if device != "fs" else ()) + TRANSPORT_ATTACKS + PER_DEVICE[device] + \
            (PCI_ATTACKS if transport == "pci" else ())
        missing = [attack for attack in wanted if attack not in named]
        tally.check(f"{name}: {device}: the core attacks ran", not missing, f"missing {missing}")
    platform = [line for line in lines if line.startswith(f"hostile: platform/{transport}: fuzz accesses=")]
    tally.check(f"{name}: platform register fuzz, every device recovered afterwards",
                bool(platform) and platform[-1].endswith("all devices recovered"),
                platform[-1] if platform else "no platform line")
    first, last = samples.get("first"), samples.get("last")
    same = first is not None and last is not None and first[0] == last[0] and first[1] == last[1]
    tally.check(f"{name}: file descriptors and threads at the checkpoints (fds, threads): "
                f"{first[:2] if first else None} -> {last[:2] if last else None}", same,
                f"first {first}, last {last}")
    sanitizer = [line for line in stderr.splitlines() if any(word in line for word in SANITIZER)]
    tally.check(f"{name}: no sanitizer report", not sanitizer, "\n".join(sanitizer[:10]))
    bad = unexpected_stderr(stderr)
    tally.check(f"{name}: stderr holds only the warnings a hostile guest earns", not bad, "\n".join(bad[:15]))
    # Guest-caused warnings are rate-limited (once a second per device, once per transport): a guest that
    # breaks and resets devices all the time must not turn into a flood on the host.
    warnings = len(stderr.splitlines())
    bound = 20 + 8 * int(seconds + 1)
    kinds = {}
    for line in stderr.splitlines():
        kind = re.sub(r"0x[0-9a-f]+|\d+", "N", line)
        kinds[kind] = kinds.get(kind, 0) + 1
    per_kind = 2 + int(seconds)  # once a second, or once
    floods = sorted(((count, kind) for kind, count in kinds.items() if count > per_kind), reverse=True)
    tally.check(f"{name}: at most {bound} warning lines in {seconds:.0f} s, none repeated more than "
                f"{per_kind} times (rate-limited)", warnings <= bound and not floods,
                f"{warnings} lines; repeated: " + "; ".join(f"{count}x {kind[:150]}" for count, kind in floods[:5]))
    with open(disk, "rb") as f:
        head = f.read(UNTOUCHED_BYTES)
    tally.check(f"{name}: the disk's first 2 MiB unchanged", head == disk_pattern(UNTOUCHED_BYTES, SEED_BLK))
    attacks = sum(1 for line in lines if line.startswith("hostile: ") and ("; recovered" in line
                                                                        or "NOT RECOVERED" in line))
    print(f"     {name}: {attacks} attacks, {seconds:.1f}s wall, warnings on stderr: "
          f"{len(stderr.splitlines())}", flush=True)
    if keep or tally.failed > failed_before:
        dump(lines, stderr, keep)


def ordinary_boot(ember, elf, disk, net_ok, keep):
    name = "ordinary VM afterwards (pci)"
    failed_before = tally.failed
    cmdline = (f"console=ttyS0 test.virtio=pci test.blk.seed={SEED_BLK} test.console.bytes=4096"
               f" test.net.ip={GUEST_IP} test.net.peer={HOST_IP} test.net.serve_ms=200")
    command = [ember, "boot", "--kernel", elf, "--cmdline", cmdline, "--console", "virtio", "--disk", disk]
    if net_ok:
        command = ["ip", "netns", "exec", NAMESPACE] + command + ["--net", f"tap={TAP}"]
    session = Ember(command, feed_stdin=False)
    try:
        code, seconds = session.finish(BOOT_TIMEOUT_S)
    finally:
        session.kill_if_running()
    lines = text_lines(session.stdout)
    stderr = session.stderr.decode(errors="replace")
    results = [line for line in lines if line.startswith("ember-test-guest: RESULT ")]
    tally.check(f"{name}: ember exits 0, nothing on stderr", code == 0 and not stderr.strip(),
                f"exit {code}; stderr {stderr[-1500:]}")
    tally.check(f"{name}: RESULT fail=0", bool(results) and results[-1].endswith(" fail=0"),
                results[-1] if results else "no RESULT line")
    for check in ("CHECK rng ok", "CHECK blk0_read ok", "CHECK console_tx ok") + (("CHECK net ok",) if net_ok else ()):
        tally.check(f"{name}: {check}", any(line.startswith(check) for line in lines))
    print(f"     {name}: {seconds:.1f}s wall", flush=True)
    if keep or tally.failed > failed_before:
        dump(lines, stderr, keep)


def run_attacks(ember, elf, work):
    rootfs = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(rootfs, "etc"))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    env = dict(os.environ, EMBER_CACHE=os.path.join(work, "cache"))
    timeout = 300 if LAB else 60
    start = time.monotonic()
    for index, (attack, status, pattern) in enumerate(FRAME_ATTACKS):
        args = f"test.init_stub=1 test.hostile=1 test.hostile.frame={attack} test.seed={index + 1}"
        result = common.run([ember, "run", "--kernel", elf, "--kernel-args", args, rootfs, "--", "exit", "0"],
                            timeout, env=env)
        # kStderr frames of random bytes come first in hostile_text: only ember's own last line is judged, and
        # it must be printable: no C0 or C1 control characters, no bytes that are not UTF-8.
        text = result.stderr
        if attack == "hostile_text":
            text = text[text.rfind("ember: ABCDEFGHIJ"):] if "ember: ABCDEFGHIJ" in text else text[-600:]
        lines = [line for line in text.split("\n") if line]  # not splitlines(): U+2028 is not a line break here
        sanitizer = [line for line in result.stderr.splitlines() if any(word in line for word in SANITIZER)]
        one_line = len(lines) == 1 and re.search(pattern, lines[0]) is not None
        printable = bool(lines) and "\ufffd" not in lines[0] and \
            not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in lines[0])
        tally.check(f"ember run, guest sends {attack}: exit {status}, one line on stderr"
                    f"{', printable' if attack == 'hostile_text' else ''}, no sanitizer report",
                    not result.timed_out and result.returncode == status and one_line and not sanitizer and
                    (printable or attack != "hostile_text"),
                    f"{result.describe()}; judged stderr {text[-400:]!r}")
    print(f"     ember run protocol attacks: {len(FRAME_ATTACKS)} runs in {time.monotonic() - start:.1f}s", flush=True)
    result = common.run([ember, "run", "--kernel", elf, "--kernel-args", "test.init_stub=1", rootfs, "--", "echo",
                         "still", "fine"], timeout, env=env)
    tally.check("ember run afterwards: echo works (exit 0, its words, nothing else)",
                result.returncode == 0 and result.stdout == "still fine\n" and result.stderr == "",
                result.describe())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ember")
    parser.add_argument("elf")
    parser.add_argument("--transport", action="append", choices=("pci", "mmio"))
    parser.add_argument("--keep-output", action="store_true", help="print every guest line")
    parser.add_argument("--skip-run", action="store_true", help="leave out the ember run protocol attacks")
    options = parser.parse_args()

    common.announce(2, "the test guest as a hostile guest against ember")
    ember, elf = os.path.abspath(options.ember), os.path.abspath(options.elf)
    require_root_kvm(tally, {"ember": ember, "test guest ELF": elf})
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = tempfile.mkdtemp(prefix="ember-hostile-")
    start = time.monotonic()
    try:
        error = setup_namespace(NAMESPACE, TAP)
        tally.check(f"setup: network namespace {NAMESPACE} with tap {TAP} at {HOST_IP}/24", error is None, error or "")
        disk = os.path.join(work, "disk.img")
        with open(disk, "wb") as f:
            f.write(disk_pattern(DISK_BYTES, SEED_BLK))
        transports = options.transport or ("pci", "mmio")
        # Odd seeds on pci, even ones on mmio; seeds 3 and 4 with --seccomp off. In the lab (TCG speed, ~6x
        # slower) one boot per transport, one of them without seccomp.
        seeds = (1, 4) if LAB else (1, 2, 3, 4)
        plan = [(transport, seed, seed > 2) for seed in seeds for transport in transports
                if (seed % 2 == 1) == (transport == "pci") or len(transports) == 1]
        share = os.path.join(work, "share")
        os.makedirs(share)
        with open(os.path.join(share, "hello.txt"), "w") as f:
            f.write("hello from the host\n")
        for transport, seed, seccomp_off in plan:
            hostile_boot(ember, elf, transport, seed, disk, share, not seccomp_off, error is None,
                         options.keep_output)
        ordinary_boot(ember, elf, disk, error is None, options.keep_output)
        if not options.skip_run:
            run_attacks(ember, elf, work)
    finally:
        delete_namespace(NAMESPACE)
        shutil.rmtree(work, ignore_errors=True)
    print(f"     total {time.monotonic() - start:.1f}s", flush=True)
    tally.finish()


if __name__ == "__main__":
    main()
