#!/usr/bin/env python3
"""Tier 3: a real Linux kernel on ember's virtio devices, all checks in one boot, on real KVM
(hardware, or the lab on other hosts: tests/e2e/on_kvm.py user-space).

The fixture kernel (../shared/guest: Linux 6.12 with virtio, ext4 and IP autoconfiguration built in;
Debian's cloud kernel is covered by linux-boot and ember-run-linux) boots with its root file system
on virtio-blk (an ext4 image made by `mkfs.ext4 -d`, `root=/dev/vda rw`), takes a DHCP lease over
virtio-net from busybox udhcpd running in a network namespace the test creates (the tap lives
there too), and logs to hvc0 (virtio console) as well as ttyS0. The kernel log must show the disk
with its size, the ext4 mount, the lease, and lines that arrived over hvc0 (after hvc0 registers,
every line reaches ember's stdout twice: once per console), and no kernel warning. Then /sbin/init
(busybox, from the ext4 root) reads a file of the root file system, writes one back, pings the host
end of the tap and powers off; the file it wrote is checked in the image afterwards.

usage: linux_virtio_test.py EMBER"""
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import common

EMBER = sys.argv[1]
BOOT_TIMEOUT = 560
DISK_MIB = 64
tally = common.Tally()
NAMESPACE = f"ember-lv-{os.getpid()}"
TAP = "lvt0"
HOST_ADDRESS = "10.0.2.1"
GUEST_ADDRESS = "10.0.2.15"

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "ember-linux-init: root=$(/bin/busybox cat /etc/ember-marker)"
echo "ember-linux-init: $(/bin/busybox ip -4 addr show eth0 | /bin/busybox grep inet)"
/bin/busybox ping -c 1 -W 5 10.0.2.1 && echo "ember-linux-init: ping ok"
echo "written by the guest" > /etc/from-guest && /bin/busybox sync
/bin/busybox poweroff -f
"""


def make_root_image(work):
    root = os.path.join(work, "root")
    for directory in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(root, directory))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    with open(os.path.join(root, "sbin", "init"), "w") as f:
        f.write(INIT)
    os.chmod(os.path.join(root, "sbin", "init"), 0o755)
    with open(os.path.join(root, "etc", "ember-marker"), "w") as f:
        f.write("ext4-on-virtio-blk\n")
    image = os.path.join(work, "root.ext4")
    with open(image, "wb") as f:
        f.truncate(DISK_MIB * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, image], check=True)
    return image


def in_namespace(*command):
    return ["ip", "netns", "exec", NAMESPACE, *command]


def start_dhcp_server(work):
    config = os.path.join(work, "udhcpd.conf")
    with open(config, "w") as f:
        f.write(f"start {GUEST_ADDRESS}\nend {GUEST_ADDRESS}\ninterface {TAP}\n"
                f"lease_file {work}/udhcpd.leases\nopt subnet 255.255.255.0\n"
                f"opt router {HOST_ADDRESS}\nopt lease 3600\n")
    open(os.path.join(work, "udhcpd.leases"), "w").close()
    return subprocess.Popen(in_namespace("busybox", "udhcpd", "-f", config),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    common.announce(3, "fixture Linux 6.12 on virtio-blk root, virtio-net DHCP, hvc0, user space")
    work = tempfile.mkdtemp(prefix="ember-linux-virtio-")
    dhcp = None
    try:
        image = make_root_image(work)
        subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
        subprocess.run(in_namespace("ip", "link", "set", "lo", "up"), check=True)
        subprocess.run(in_namespace("ip", "tuntap", "add", "dev", TAP, "mode", "tap"), check=True)
        subprocess.run(in_namespace("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", TAP),
                       check=True)
        subprocess.run(in_namespace("ip", "link", "set", TAP, "up"), check=True)
        dhcp = start_dhcp_server(work)
        tsc = re.search(r"tsc-khz: (\d+)", subprocess.run(
            [EMBER, "host"], capture_output=True, text=True, check=True).stdout).group(1)
        cmdline = (f"console=ttyS0 console=hvc0 tsc_early_khz={tsc} "
                   f"root=/dev/vda rw rootfstype=ext4 ip=dhcp")
        command = in_namespace(EMBER, "boot", "--kernel", str(common.FIXTURE_VMLINUX), "--cpus",
                               "1", "--memory", "256M", "--disk", f"{image},id=rootdisk",
                               "--net", f"tap={TAP}", "--console", "virtio", "--cmdline",
                               cmdline)
        print("running: " + " ".join(command), flush=True)
        result = common.run(command, BOOT_TIMEOUT)
        log = result.stdout
        print(f"boot took {result.seconds:.1f}s wall; exit {result.returncode}", flush=True)

        sectors = DISK_MIB * 2048
        tally.check("virtio-blk disk vda with the image's size",
                    re.search(rf"\[vda\] {sectors} 512-byte logical blocks", log) is not None,
                    result.describe())
        mounted = re.findall(r"EXT4-fs \(vda\): mounted filesystem \S+ r/w", log)
        tally.check("ext4 root mounted read-write from vda", len(mounted) >= 1, result.describe())
        tally.check("DHCP lease over virtio-net from the namespace's udhcpd",
                    f"Got DHCP answer from {HOST_ADDRESS}, my address is {GUEST_ADDRESS}" in log,
                    result.describe())
        tally.check("kernel log also arrived over hvc0 (late lines appear once per console)",
                    len(mounted) >= 2 or log.count("Run /sbin/init as init process") >= 2,
                    result.describe())
        tally.check("kernel ran /sbin/init from the ext4 root",
                    "Run /sbin/init as init process" in log, result.describe())
        tally.check("init read the root file system", "root=ext4-on-virtio-blk" in log,
                    result.describe())
        tally.check("init pinged the host over virtio-net", "ping ok" in log,
                    result.describe())
        tally.check("poweroff ends ember with status 0", result.returncode == 0,
                    result.describe())
        written = subprocess.run(["debugfs", "-R", "cat /etc/from-guest", image],
                                 capture_output=True, text=True).stdout
        tally.check("the guest's write reached the disk image (read back with debugfs)",
                    written == "written by the guest\n", repr(written))
        warnings = common.kernel_warnings(log)
        tally.check("no kernel warning, error or call trace in the whole log", warnings == [],
                    "\n".join(warnings))
        if tally.failed:
            print("---- full console log ----\n" + log + "---- ember stderr ----\n" +
                  result.stderr, flush=True)
    finally:
        if dhcp:
            dhcp.kill()
            dhcp.wait()
        subprocess.run(["ip", "netns", "delete", NAMESPACE], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
