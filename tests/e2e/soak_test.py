#!/usr/bin/env python3
"""Soak: many `ember run`s back to back and at once, then nothing left behind.

Runs `ember run` RUNS times back to back (default 100) and CONCURRENT at once (default 20), cycling
through what a run can hold on the host: a plain run, a virtio-fs share (-v: a virtiofsd), a tap
with a published port (--net tap -p), stdin (-i), each in the jail (the default as root). All of
it inside a network namespace of its own (taps and ports stay there). Before and after, it counts
what could leak: this long-lived parent's open fds, threads and RSS; ember and virtiofsd processes;
taps; network namespaces; namespaces of every kind on the host; scratch disks; virtiofsd socket
dirs; ember cgroups. The counts must be back where they started (RSS within a margin).

With the test guest playing ember-init (`--kernel GUEST --kernel-args test.init_stub=1`) this is a
tier-2 test on any host with /dev/kvm; with --image and the default kernel it soaks real Linux
guests (the lab or hardware KVM; tools/soak).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("ember")
parser.add_argument("--guest", help="the test guest ELF (plays ember-init); else --image with the default kernel")
parser.add_argument("--image", help="an image to run (default: a root directory the test guest accepts)")
parser.add_argument("--runs", type=int, default=100)
parser.add_argument("--concurrent", type=int, default=20)
parser.add_argument("--rss-margin-kib", type=int, default=4096)
options = parser.parse_args()

RUN_TIMEOUT_S = 300
tally = common.Tally()
work = tempfile.mkdtemp(prefix="ember-soak-")
ENV = dict(os.environ, EMBER_CACHE=os.environ.get("EMBER_CACHE", os.path.join(work, "cache")))
NETNS = f"ember-soak-{os.getpid()}"


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].split()[0]
    return "0"


def processes_of_this_soak(name):
    """Processes called NAME whose command line names this soak's directory (a VMM whose ember died
    would have been handed to init: not among this process's descendants, but still found here)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if comm.read().strip() == name and work.encode() in cmdline.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def host_namespaces():
    """Distinct namespaces of each kind held by any process on the host."""
    kinds = {kind: set() for kind in ("net", "pid", "mnt", "ipc", "uts", "cgroup")}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for kind in kinds:
            try:
                kinds[kind].add(os.readlink(f"/proc/{pid}/ns/{kind}"))
            except OSError:
                pass
    return {kind: len(found) for kind, found in kinds.items()}


def ember_cgroups():
    found = []
    for root in ("/sys/fs/cgroup",):
        for dirpath, dirnames, _ in os.walk(root):
            found += [os.path.join(dirpath, name) for name in dirnames if name.startswith("ember-")]
            if dirpath.count("/") > 6:
                dirnames.clear()
    return sorted(found)


def taps():
    listing = subprocess.run(["ip", "-n", NETNS, "-o", "link"], capture_output=True, text=True).stdout
    return sorted(line.split(":")[1].strip() for line in listing.splitlines() if ": ember" in line)


def scratch_disks():
    directory = os.path.join(ENV["EMBER_CACHE"], "scratch")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def snapshot():
    tmp = tempfile.gettempdir()
    return {
        "parent fds": len(os.listdir("/proc/self/fd")),
        "parent threads": len(os.listdir("/proc/self/task")),
        "parent RSS KiB": int(status_field("self", "VmRSS")),
        "ember processes of this soak": len(processes_of_this_soak("ember")),
        "virtiofsd processes of this soak": len(processes_of_this_soak("virtiofsd")),
        "taps": len(taps()),
        "network namespaces (ip netns)": len(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                           text=True).stdout.splitlines()),
        "host namespaces": host_namespaces(),
        "scratch disks": len(scratch_disks()),
        "virtiofsd socket dirs": len([n for n in os.listdir(tmp) if n.startswith("ember-virtiofsd-")]),
        "ember cgroups": len(ember_cgroups()),
    }


def variants(rootfs, share):
    """The run variants, cycled: (name, ember run options, command, stdin)."""
    command = ["exit", "0"] if options.guest else ["true"]
    cat = ["cat"]
    return [
        ("plain", [], command, None),
        ("-v share", ["-v", f"{share}:/share"], command, None),
        ("--net tap -p", ["--net", "tap", "-p", "18080:80"], command, None),
        ("-i", ["-i"], cat, b"soak\n"),
    ]


def ember_line(rootfs, extra, command, index):
    line = ["ip", "netns", "exec", NETNS, options.ember, "run", "--name", f"soak{index}"]
    if options.guest:
        line += ["--kernel", options.guest, "--kernel-args", "test.init_stub=1"]
    # Concurrent runs with -p would fight over one host port: each gets its own.
    extra = [f"{18080 + index}:80" if arg == "18080:80" else arg for arg in extra]
    return line + extra + [options.image or rootfs, "--", *command]


def main():
    kind = "tier 2 (soak: ember run against the test guest playing ember-init)" if options.guest else \
        "tier 3 (soak: ember run of a real image)"
    common.announce(2 if options.guest else 3, kind.split("(", 1)[1].rstrip(")"))
    rootfs = os.path.join(work, "rootfs")
    share = os.path.join(work, "share")
    for directory in (os.path.join(rootfs, "etc"), os.path.join(rootfs, "bin"), share):
        os.makedirs(directory, exist_ok=True)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        # One run first: caches (initrd, image) are made once and are not leaks.
        first = subprocess.run(ember_line(rootfs, [], variants(rootfs, share)[0][2], 0), capture_output=True,
                               timeout=RUN_TIMEOUT_S, env=ENV)
        tally.check("a first run (fills the caches)", first.returncode == 0, first.stderr.decode()[-400:])
        before = snapshot()
        print(f"before: {before}", flush=True)
        cycle = variants(rootfs, share)

        failures, start = [], time.monotonic()
        for index in range(options.runs):
            name, extra, command, stdin = cycle[index % len(cycle)]
            result = subprocess.run(ember_line(rootfs, extra, command, index), input=stdin, capture_output=True,
                                    timeout=RUN_TIMEOUT_S, env=ENV)
            if result.returncode != 0 or (stdin and result.stdout != stdin):
                failures.append(f"run {index} ({name}): exit {result.returncode}, "
                                f"stderr {result.stderr.decode(errors='replace')[-300:]}")
        elapsed = time.monotonic() - start
        print(f"{options.runs} runs back to back: {elapsed:.1f} s, {options.runs / elapsed:.1f} runs/s", flush=True)
        tally.check(f"{options.runs} runs back to back, every variant: all exit 0 (cat echoes stdin)",
                    not failures, "; ".join(failures[:3]))

        start = time.monotonic()
        running = []
        for index in range(options.concurrent):
            name, extra, command, stdin = cycle[index % len(cycle)]
            process = subprocess.Popen(ember_line(rootfs, extra, command, 1000 + index), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
            running.append((index, name, stdin, process))
        failures = []
        for index, name, stdin, process in running:
            try:
                out, err = process.communicate(stdin, timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            if process.returncode != 0 or (stdin and out != stdin):
                failures.append(f"run {index} ({name}): exit {process.returncode}, "
                                f"stderr {err.decode(errors='replace')[-300:]}")
        elapsed = time.monotonic() - start
        print(f"{options.concurrent} runs at once: {elapsed:.1f} s for all", flush=True)
        tally.check(f"{options.concurrent} runs at once: all exit 0", not failures, "; ".join(failures[:3]))

        # Namespaces and cgroups of processes that just exited go a moment later.
        deadline = time.monotonic() + 10
        after = snapshot()
        while time.monotonic() < deadline:
            after = snapshot()
            if all(after[key] == before[key] for key in before if key != "parent RSS KiB"):
                break
            time.sleep(0.2)
        print(f"after:  {after}", flush=True)
        for key in before:
            if key == "parent RSS KiB":
                grown = after[key] - before[key]
                tally.check(f"{key}: {before[key]} -> {after[key]} (within {options.rss_margin_kib} KiB)",
                            grown <= options.rss_margin_kib, "")
            else:
                tally.check(f"{key}: {before[key]} -> {after[key]}", after[key] == before[key],
                            f"taps {taps()}, cgroups {ember_cgroups()}, scratch {scratch_disks()}")
    finally:
        subprocess.run(["ip", "netns", "del", NETNS])
        shutil.rmtree(work, ignore_errors=True)
    tally.finish()


main()
