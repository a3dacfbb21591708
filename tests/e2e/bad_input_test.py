#!/usr/bin/env python3
"""Tier 1 (ember's command line and setup, no guest instruction runs): every bad input named by
the boot issue gets one line on stderr naming the thing and the reason, and a non-zero exit
without a core dump. Each bad file or option is also tried with no /dev/kvm at all (a private
mount namespace): ember names the bad input, not the missing KVM, since it checks the user's files
and options before it opens /dev/kvm. The checks that need a KVM (KVM's vCPU limit, /dev/kvm's
permissions) run here, or in the lab (tools/lab) on a host without /dev/kvm.

usage: bad_input_test.py EMBER [--only-kvm]"""
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

import common

EMBER = sys.argv[1]
ONLY_KVM = sys.argv[2:] == ["--only-kvm"]
tally = common.Tally()
work = tempfile.mkdtemp(prefix="ember-bad-input-")


def path(name):
    return os.path.join(work, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


def expect_error(name, arguments, needles, codes=(1,), run_as=None, needs_kvm=False):
    """One bad input: here, and (unless it is about KVM itself) again with no /dev/kvm."""
    if ONLY_KVM and not needs_kvm:
        return
    if needs_kvm and not HAVE_KVM:
        return  # Checked in the lab (the end of this test).
    command = [EMBER, *arguments]
    if run_as:
        command = ["setpriv", f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups",
                   *command]
    variants = [("", command), (" (no /dev/kvm)", common.without_dev_kvm(command))]
    if needs_kvm:
        variants = variants[:1]
    elif not HAVE_KVM:
        variants = variants[1:]
    for where, line in variants:
        result = common.run(line, 30)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        ok = (result.returncode in codes and len(lines) == 1 and
              all(needle in lines[0] for needle in needles))
        tally.check(f"{name}{where}: exit {'/'.join(map(str, codes))} and one line naming {needles}",
                    ok, f"exit {result.returncode}, stderr {result.stderr!r}")


def elf_header(machine, elf_class=2):
    # e_ident, e_type ET_EXEC, e_machine, e_version, then zeros for the rest of the header.
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHI", 2, machine, 1) + bytes(48)


HAVE_KVM = os.path.exists("/dev/kvm")
common.announce(1, "ember command line and machine setup, bad input" +
                (": the checks that need /dev/kvm" if ONLY_KVM else ""))
random.seed(7)
random_bytes = write("random.bin", bytes(random.getrandbits(8) for _ in range(1 << 16)))
with open(common.FIXTURE_BZIMAGE, "rb") as f:
    truncated = write("truncated-bzImage", f.read(64 * 1024))
aarch64 = write("aarch64.elf", elf_header(183) + bytes(4096))
elf32 = write("i386.elf", elf_header(3, elf_class=1) + bytes(4096))
empty = write("empty", b"")
big_initrd = path("big-initrd")
with open(big_initrd, "wb") as f:
    f.truncate(100 * 1024 * 1024)
kernel = str(common.FIXTURE_BZIMAGE)

expect_error("missing kernel", ["boot", "--kernel", path("no-such-kernel")],
             [path("no-such-kernel"), "No such file"])
expect_error("kernel is a directory", ["boot", "--kernel", work], [work, "directory"])
expect_error("empty kernel", ["boot", "--kernel", empty], [empty, "empty"])
expect_error("random bytes", ["boot", "--kernel", random_bytes],
             [random_bytes, "not a Linux kernel"])
expect_error("truncated bzImage", ["boot", "--kernel", truncated], [truncated, "truncated"])
expect_error("ELF for AArch64", ["boot", "--kernel", aarch64], [aarch64, "x86-64"])
expect_error("32-bit ELF", ["boot", "--kernel", elf32], [elf32, "32-bit"])
expect_error("missing initrd", ["boot", "--kernel", kernel, "--initrd", path("no-initrd")],
             [path("no-initrd"), "No such file"])
expect_error("kernel + initrd larger than --memory",
             ["boot", "--kernel", kernel, "--initrd", big_initrd, "--memory", "64M"],
             [big_initrd, "does not fit"])
expect_error("--cpus 0", ["boot", "--kernel", kernel, "--cpus", "0"], ["--cpus 0"])
expect_error("--cpus above KVM's limit", ["boot", "--kernel", kernel, "--cpus", "100000"],
             ["--cpus 100000", "KVM allows"], needs_kvm=True)
expect_error("--memory below 64M", ["boot", "--kernel", kernel, "--memory", "32M"],
             ["--memory 32 MiB", "minimum"])
expect_error("--memory above host memory", ["boot", "--kernel", kernel, "--memory", "100000G"],
             ["--memory", "host"])
expect_error("--memory not a size", ["boot", "--kernel", kernel, "--memory", "12X"],
             ["--memory 12X", "not a size"], codes=(2,))
expect_error("--log-file in a missing directory", ["boot", "--kernel", kernel, "--log-file",
                                                   "/nonexistent-ember-dir/ember.log"],
             ["--log-file", "/nonexistent-ember-dir"], codes=(2,))
expect_error("no --kernel", ["boot"], ["--kernel"], codes=(2,))
expect_error("unknown option", ["boot", "--kernel", kernel, "--frobnicate"], ["frobnicate"],
             codes=(2,))
unreadable = write("root-only-kernel", b"\0" * 4096)
os.chmod(unreadable, 0o600)
expect_error("kernel not readable by the user", ["boot", "--kernel", unreadable],
             [unreadable, "Permission denied"], run_as="65534")
expect_error("missing --disk file", ["boot", "--kernel", kernel, "--disk", path("no-disk.img")],
             [path("no-disk.img"), "No such file"])
expect_error("unknown --disk option", ["boot", "--kernel", kernel, "--disk", f"{empty},rw"],
             ["--disk", "unknown option 'rw'"], codes=(2,))
expect_error("bad --net mac", ["boot", "--kernel", kernel, "--net", "tap=t0,mac=01:02:03:04:05:06"],
             ["--net", "mac"], codes=(2,))
expect_error("more virtio-mmio devices than IOAPIC pins",
             ["boot", "--kernel", kernel, "--transport", "mmio",
              *[argument for _ in range(8) for argument in ("--disk", f"{empty},ro")]],
             ["--transport mmio", "at most 8"])
expect_error("/dev/kvm missing", ["boot", "--kernel", kernel, "--kvm", path("no-kvm")],
             [path("no-kvm"), "no such device"])
expect_error("bad kernel named before the missing /dev/kvm",
             ["boot", "--kernel", random_bytes, "--kvm", path("no-kvm")],
             [random_bytes, "not a Linux kernel"])
world_readable_kernel = write("kernel-for-anyone", open(kernel, "rb").read())
os.chmod(work, 0o755)
os.chmod(world_readable_kernel, 0o644)
expect_error("/dev/kvm not accessible", ["boot", "--kernel", world_readable_kernel],
             ["/dev/kvm", "permission"], run_as="65534", needs_kvm=True)
if not ONLY_KVM:
    expect_error("ember host without /dev/kvm", ["host", "--kvm", path("no-kvm")],
                 [path("no-kvm"), "missing"])

if not HAVE_KVM and not ONLY_KVM:
    print("the checks that need /dev/kvm, in the lab (this host has none):", flush=True)
    lab = subprocess.run([sys.executable, str(common.LAB_TOOL), "--timeout", "150", "--",
                          sys.executable, os.path.abspath(__file__), EMBER, "--only-kvm"])
    tally.check("the checks that need /dev/kvm pass in the lab", lab.returncode == 0,
                f"exit {lab.returncode}")
shutil.rmtree(work, ignore_errors=True)
tally.finish()
