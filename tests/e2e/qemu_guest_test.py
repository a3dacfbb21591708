#!/usr/bin/env python3
"""Tier 2 against the reference VMM: boots the ember test guest under QEMU and checks its report.

Boots the PVH ELF under `-M microvm` (hardware-reduced ACPI, GED sleep register) with 1 and 2 vCPUs,
with UART input, and under `-M q35` (full FADT, PM1a control). Each boot must: echo the command line,
print no FAIL line, report `CHECK smp ok cpus=N` and `RESULT pass=.. fail=0`, and make QEMU exit by
itself (the guest's ACPI power-off worked) within the timeout.

usage: qemu_guest_test.py ember-test-guest.elf [--bzimage ember-test-guest.bzimage]
Builds nothing; needs /dev/kvm (run as root). Missing QEMU is a failure, not a skip.
"""
import argparse
import os
import secrets
import select
import shutil
import subprocess
import sys
import time

import common

QEMU = "qemu-system-x86_64"
TIMEOUT_S = 60
MEMORY_MIB = 256
INPUT_LINE = "hello-from-the-host"


def run_qemu(arguments, feed_input=None):
    """Runs QEMU; returns (output text, exit code or None on timeout, seconds)."""
    start = time.monotonic()
    process = subprocess.Popen(arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output = bytearray()
    fed = False
    deadline = start + TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            process.wait()
            return output.decode(errors="replace"), None, time.monotonic() - start
        ready, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
            if feed_input and not fed and b"ember-test-guest: ready-for-input" in output:
                process.stdin.write((feed_input + "\r").encode())
                process.stdin.flush()
                fed = True
    code = process.wait()
    return output.decode(errors="replace"), code, time.monotonic() - start


def check_output(output, code, cmdline, cpus, expect_input):
    """Returns a list of problems (empty when the boot passed)."""
    problems = []
    lines = [line.rstrip("\r") for line in output.splitlines()]
    if code is None:
        problems.append("QEMU did not exit within %d s (guest power-off failed or hung)" % TIMEOUT_S)
    elif code != 0:
        problems.append("QEMU exited with status %d" % code)
    problems += ["guest reported: " + line for line in lines if " FAIL" in line and line.startswith("CHECK")]
    problems += ["guest reported: " + line for line in lines if "EXCEPTION" in line or "poweroff failed" in line]
    if "ember-test-guest: cmdline: " + cmdline not in lines:
        problems.append("command line not echoed")
    if not any(line.startswith("CHECK smp ok cpus=%d" % cpus) for line in lines):
        problems.append("no `CHECK smp ok cpus=%d`" % cpus)
    results = [line for line in lines if line.startswith("ember-test-guest: RESULT ")]
    if not results:
        problems.append("no RESULT line")
    elif not results[-1].endswith(" fail=0"):
        problems.append(results[-1])
    if expect_input and "ember-test-guest: got-input " + INPUT_LINE not in lines:
        problems.append("guest did not echo the UART input line")
    return problems


def boot_case(name, machine, image, cpus, extra_cmdline="", feed_input=None):
    token = "token-" + secrets.token_hex(4)
    cmdline = "expect.cpus=%d expect.mem_mib=%d expect.cmdline_token=%s%s" % (
        cpus, MEMORY_MIB, token, extra_cmdline)
    arguments = [QEMU, "-M", machine, "-enable-kvm", "-cpu", "host,-arch-capabilities",
                 "-smp", str(cpus), "-m", str(MEMORY_MIB), "-nodefaults", "-no-user-config",
                 "-nographic", "-serial", "stdio", "-no-reboot", "-kernel", image, "-append", cmdline]
    output, code, seconds = run_qemu(arguments, feed_input)
    problems = check_output(output, code, cmdline, cpus, feed_input is not None)
    verdict = "PASS" if not problems else "FAIL"
    result_line = next((l.strip() for l in output.splitlines() if "RESULT" in l), "no RESULT")
    print("%s %s: %.2f s wall, %s" % (verdict, name, seconds, result_line), flush=True)
    if problems:
        for problem in problems:
            print("    " + problem)
        print("    --- guest output ---")
        for line in output.splitlines()[-60:]:
            print("    | " + line.rstrip("\r"))
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("elf", nargs="?", default=os.environ.get("EMBER_TEST_GUEST_ELF"))
    parser.add_argument("--bzimage", default=os.environ.get("EMBER_TEST_GUEST_BZIMAGE"),
                        help="accepted for symmetry; QEMU enters a bzImage in real mode, which this guest's "
                             "setup stub does not support, so it is not booted here")
    options = parser.parse_args()

    print("tier 2 (ember test guest) under QEMU on %s" % common.host_kind(), flush=True)
    passed = failed = 0
    if shutil.which(QEMU) is None:
        print("FAIL setup: %s not found (install Debian's qemu-system-x86)" % QEMU)
        failed += 1
    elif not options.elf or not os.path.isfile(options.elf):
        print("FAIL setup: test guest ELF not found: %r" % options.elf)
        failed += 1
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("FAIL setup: /dev/kvm is not accessible (run as root)")
        failed += 1
    else:
        cases = [
            ("microvm-1cpu", "microvm", 1, "", None),
            ("microvm-2cpu", "microvm", 2, "", None),
            ("microvm-2cpu-uart-input", "microvm", 2, " test.uart_rx=1", INPUT_LINE),
            ("q35-2cpu", "q35", 2, "", None),
        ]
        for name, machine, cpus, extra, feed in cases:
            if boot_case(name, machine, options.elf, cpus, extra, feed):
                passed += 1
            else:
                failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
