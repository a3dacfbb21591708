#!/usr/bin/env python3
"""Tier 3: `ember run` with a real Linux kernel and ember-init (the issue's "full end-to-end on
hardware KVM").

On hardware KVM: both test images (busybox-static; a dynamically linked program with its libraries),
in OCI layout and docker-archive form, under the default kernel (Debian's cloud kernel with its
modules in ember's initrd): exit codes, stdin/stdout/stderr, env, -w, -u, 10 MB of output, signals,
the read-only image with a writable layer, -v read-write and read-only sharing (virtio-fs), --net tap
with -p, all inside a private network namespace.
On an emulating KVM (kvm_pvm): guest user space cannot make system calls (../shared/HOSTS.md), so
ember-init can never run. What runs instead, in one boot: `ember run` prepares the image, builds the
initrd and both disks, boots the fixture kernel (default kernel for this host kind) to
`Run /init as init process` with the image disk, the scratch disk and the protocol console probed;
init dies at its first system call, the kernel panics, and ember must say that the guest died before
the container reported (exit 125), leaving no scratch disk behind. Everything of the full suite is
then reported as skipped, with the reason, by name.

usage: ember_run_linux_test.py EMBER"""
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import common
import images

EMBER = sys.argv[1]
NAMESPACE = f"ember-run-{os.getpid()}"
tally = common.Tally()


def ember_run(args, timeout=240, stdin_data=None, env=None, namespace=False):
    command = [EMBER, "run", *args]
    if namespace:
        command = ["ip", "netns", "exec", NAMESPACE, *command]
    return common.run(command, timeout, stdin_data=stdin_data, env=env)


def emulating_host_boot(work, built):
    """The part of `ember run` this host can run: everything up to the guest's /init."""
    cache = os.path.join(work, "cache")
    env = dict(os.environ, EMBER_CACHE=cache)
    # The default kernel lives in the real cache (tools/setup); point this run at it explicitly
    # through the same directory layout.
    default_kernel = os.path.join(os.environ.get("EMBER_CACHE", os.path.expanduser("~/.cache/ember")),
                                  "default-kernel")
    os.makedirs(cache, exist_ok=True)
    os.symlink(default_kernel, os.path.join(cache, "default-kernel"))
    image = built["busybox"]["oci"]
    result = ember_run(["--log-level", "debug", "--memory", "256M", image, "--", "true"],
                       timeout=540, env=env)
    log = result.stderr
    print(f"ember run took {result.seconds:.1f}s wall; exit {result.returncode}", flush=True)
    tally.check("ember names the default kernel it uses (--log-level info)",
                "default kernel" in log and "vmlinux-6.12-microvm" in log, result.describe())
    tally.check("the guest kernel ran ember-init from ember's initrd",
                "Run /init as init process" in log, result.describe())
    tally.check("the image disk and the scratch disk were probed (vda, vdb)",
                re.search(r"\[vda\] \d+ 512-byte logical blocks", log) is not None and
                re.search(r"\[vdb\] \d+ 512-byte logical blocks", log) is not None,
                result.describe())
    tally.check("nothing but the payload's output on stdout (the kernel log goes to ember's log)",
                result.stdout == "", repr(result.stdout[:200]))
    last = [line for line in log.splitlines() if line.strip()][-1:] or [""]
    tally.check("ember exits 125 and says the guest kernel died before ember-init started",
                result.returncode == 125 and last[0].startswith("ember: the guest kernel panicked before"),
                result.describe())
    tally.check("... quoting the kernel's panic line (not the backtrace after it)",
                "Kernel panic - not syncing" in last[0], last[0])
    scratch = os.path.join(cache, "scratch")
    left = os.listdir(scratch) if os.path.isdir(scratch) else []
    tally.check("no scratch disk left behind (--rm is the default)", left == [], str(left))


def hardware_host_suite(work, built):
    """Everything the issue lists, on the default kernel (Debian's cloud kernel + modules)."""
    busybox = built["busybox"]
    dynamic = built["dynamic"]
    for form in ("oci", "docker-archive"):
        image = busybox[form]
        r = ember_run([image, "--", "true"])
        tally.check(f"{form}: true -> 0", r.returncode == 0, r.describe())
        r = ember_run([image, "--", "sh", "-c", "exit 7"])
        tally.check(f"{form}: sh -c 'exit 7' -> 7", r.returncode == 7, r.describe())
        r = ember_run([image, "--", "sh", "-c", "kill -9 $$"])
        tally.check(f"{form}: killed by SIGKILL -> 137", r.returncode == 137, r.describe())
        r = ember_run(["-i", image, "--", "cat"], stdin_data=b"a\nb\n")
        tally.check(f"{form}: printf 'a\\nb\\n' | ember run -i -- cat", r.returncode == 0 and
                    r.stdout == "a\nb\n", r.describe())
    image = busybox["oci"]
    r = ember_run([image, "--", "sh", "-c", "echo out; echo err >&2"])
    tally.check("stdout and stderr stay separate", r.stdout == "out\n" and r.stderr == "err\n",
                r.describe())
    r = ember_run(["-e", "GREETING=hi there", image, "--", "sh", "-c", "echo \"$GREETING\""])
    tally.check("-e reaches the payload", r.stdout == "hi there\n", r.describe())
    r = ember_run(["-w", "/work/sub", image, "--", "pwd"])
    tally.check("-w sets (and creates) the working directory", r.stdout == "/work/sub\n",
                r.describe())
    r = ember_run(["-u", "1000:1000", image, "--", "id", "-u"])
    tally.check("-u 1000:1000", r.stdout.strip() == "1000", r.describe())
    r = ember_run([image, "--", "sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' x"])
    tally.check("10 MB of stdout intact", r.stdout == "x" * 10_000_000,
                f"exit {r.returncode}, {len(r.stdout)} bytes")
    r = ember_run([image, "--", "sh", "-c", "echo changed > /bin/busybox-was-here; cat /proc/mounts"])
    tally.check("root is an overlay over the read-only image", " / overlay " in r.stdout or
                "overlay / overlay" in r.stdout, r.describe())
    r = ember_run([image, "--", "ls", "/bin/busybox-was-here"])
    tally.check("the image itself never changes (--rm is the default)", r.returncode != 0,
                r.describe())
    # Signals: SIGTERM to ember reaches the payload, which traps it.
    process = subprocess.Popen([EMBER, "run", image, "--", "sh", "-c",
                                "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    tally.check("SIGTERM to ember reaches the payload (trap -> 42)",
                ready == b"ready\n" and process.returncode == 42, f"exit {process.returncode}")
    for form in ("oci", "docker-archive"):
        r = ember_run([dynamic[form], "--", *dynamic["probe"]])
        tally.check(f"dynamic image ({form}) runs its dynamically linked program",
                    r.returncode == 0 and dynamic["expect"] in r.stdout, r.describe())
    # -v: live read-write and read-only sharing.
    shared = os.path.join(work, "shared")
    os.makedirs(shared)
    with open(os.path.join(shared, "from-host"), "w") as f:
        f.write("host data\n")
    r = ember_run(["-v", f"{shared}:/data", image, "--", "sh", "-c",
                   "cat /data/from-host; echo guest data > /data/from-guest"])
    written = open(os.path.join(shared, "from-guest")).read() if os.path.exists(
        os.path.join(shared, "from-guest")) else None
    tally.check("-v: the guest reads the host's file and its write appears on the host",
                r.stdout == "host data\n" and written == "guest data\n", r.describe())
    r = ember_run(["-v", f"{shared}:/data:ro", image, "--", "sh", "-c",
                   "echo no > /data/ro-write"])
    tally.check("-v ...:ro: writes fail in the guest and nothing appears on the host",
                r.returncode != 0 and not os.path.exists(os.path.join(shared, "ro-write")),
                r.describe())
    # --net tap and -p, inside a private namespace.
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"],
                       check=True)
        r = ember_run(["--net", "tap", image, "--", "sh", "-c", "ip addr; ip route"],
                      namespace=True)
        tally.check("--net tap: the guest has an address and a default route",
                    "inet 172.30." in r.stdout and "default via 172.30." in r.stdout,
                    r.describe())
        process = subprocess.Popen(
            ["ip", "netns", "exec", NAMESPACE, EMBER, "run", "--net", "tap", "-p", "18080:8080",
             image, "--", "sh", "-c", "echo ready; echo hello-from-guest | nc -l -p 8080"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready = process.stdout.readline()
        reply = subprocess.run(["ip", "netns", "exec", NAMESPACE, "busybox", "nc", "127.0.0.1",
                                "18080"], capture_output=True, timeout=60, input=b"").stdout
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        tally.check("-p 18080:8080: a host connection reaches the guest's listener",
                    ready == b"ready\n" and b"hello-from-guest" in reply, repr(reply))
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], stderr=subprocess.DEVNULL)


FULL_SUITE = ["exit codes 0/7/137 on OCI layout and docker-archive", "-i stdin", "stdout/stderr",
              "-e", "-w", "-u", "10 MB of output", "overlay root / image unchanged",
              "SIGTERM relay", "dynamic image", "-v read-write and :ro", "--net tap", "-p"]


def main():
    emulating = common.is_emulating_host()
    common.announce(3, "ember run with Linux and ember-init" + (
        ": boot to /init only" if emulating else ": the full suite"))
    work = tempfile.mkdtemp(prefix="ember-run-linux-")
    try:
        built = images.build_test_images(os.path.join(work, "images"))
        if emulating:
            emulating_host_boot(work, built)
            print("SKIPPED on this host (emulating KVM kvm_pvm: guest user space cannot make system "
                  "calls, so ember-init never runs; ../shared/HOSTS.md): " + "; ".join(FULL_SUITE),
                  flush=True)
        else:
            hardware_host_suite(work, built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
