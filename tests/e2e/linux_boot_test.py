#!/usr/bin/env python3
"""Tier 3: a real Linux kernel booted by `ember boot`, all checks in one boot, on real KVM (hardware,
or the lab on other hosts: tests/e2e/on_kvm.py user-space).

Debian's stock linux-image-cloud-amd64 (a bzImage; tools/setup unpacks it) with 2 vCPUs boots into
a busybox /init, which prints what user space sees and powers off; ember must exit 0. The kernel
log (over the 16550 UART) must show both vCPUs, the memory size, the exact command line, clean
ACPI, the UART as a 16550A, and no kernel warning of any kind.

usage: linux_boot_test.py EMBER"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import common
import initrd

EMBER = sys.argv[1]
CPUS = 2
MEMORY_MIB = 256
BOOT_TIMEOUT = 540
tally = common.Tally()

INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "ember-linux-init: cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)"
echo "ember-linux-init: memtotal=$(/bin/busybox awk '/MemTotal/ {print $2}' /proc/meminfo)"
echo "ember-linux-init: cmdline=$(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
"""


def tsc_khz():
    output = subprocess.run([EMBER, "host"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"tsc-khz: (\d+)", output).group(1))


def main():
    common.announce(3, "Debian's linux-image-cloud-amd64 into user space")
    kernel = common.DEBIAN_KERNEL
    if not kernel.exists():
        tally.check(f"kernel {kernel} exists (tools/setup prepares it)", False)
        tally.finish()
    work = tempfile.mkdtemp(prefix="ember-linux-")
    initrd_path = os.path.join(work, "initrd.cpio")
    initrd.busybox_initrd(initrd_path, INIT)
    # Hardware-reduced ACPI has no PIT for Linux to calibrate against; on this AMD-or-Intel-neutral
    # path the kernel is told the TSC frequency KVM gives it (../shared/HOSTS.md).
    cmdline = f"console=ttyS0 tsc_early_khz={tsc_khz()} ember.e2e_token=7f3a9"
    command = [EMBER, "boot", "--kernel", str(kernel), "--initrd", initrd_path,
               "--cpus", str(CPUS), "--memory", f"{MEMORY_MIB}M", "--cmdline", cmdline]
    print("running: " + " ".join(command), flush=True)
    result = common.run(command, BOOT_TIMEOUT)
    log = result.stdout
    print(f"boot took {result.seconds:.1f}s wall; exit {result.returncode}", flush=True)

    tally.check("kernel received the exact command line", f"Command line: {cmdline}" in log,
                result.describe())
    tally.check(f"all {CPUS} vCPUs came up (MADT)",
                f"smp: Brought up 1 node, {CPUS} CPUs" in log, result.describe())
    memory = re.search(r"Memory: \d+K/(\d+)K available", log)
    tally.check(f"memory size is {MEMORY_MIB} MiB less the low holes",
                memory is not None and (MEMORY_MIB - 1) * 1024 < int(memory.group(1)) <=
                MEMORY_MIB * 1024, memory.group(0) if memory else "no Memory: line")
    tally.check("ACPI tables accepted without errors",
                "ACPI: FACP" in log and "ACPI: APIC" in log and "ACPI: DSDT" in log and
                "ACPI Error" not in log and "ACPI BIOS Error" not in log, result.describe())
    # Linux numbers the IRQ itself (with no legacy PIC in hardware-reduced mode GSI 4 gets a
    # dynamic number); the GSI comes from the DSDT's _CRS, which the ACPI unit tests check.
    tally.check("UART found as a 16550A at 0x3f8 through ACPI",
                re.search(r"ttyS0 at I/O 0x3f8 \(irq = \d+, base_baud = \d+\) is a 16550A", log)
                is not None, result.describe())
    tally.check("kernel reached Run /init", "Run /init as init process" in log,
                result.describe())
    tally.check("user space sees the vCPUs", f"ember-linux-init: cpus={CPUS}" in log,
                result.describe())
    tally.check("user space sees the command line", f"cmdline={cmdline}" in log,
                result.describe())
    tally.check("poweroff ends ember with status 0", result.returncode == 0,
                result.describe())
    warnings = common.kernel_warnings(log)
    tally.check("no kernel warning, error or call trace in the whole log", warnings == [],
                "\n".join(warnings))
    if tally.failed:
        print("---- full guest console log ----\n" + log + "---- ember stderr ----\n" +
              result.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
