#!/usr/bin/env python3
"""Tier 3: `ember run` with a real Linux kernel and ember-init, on real KVM (hardware, or the lab on
other hosts: tests/e2e/on_kvm.py user-space).

Both test images (busybox-static; a dynamically linked program with its libraries), in OCI layout
and docker-archive form, under the default kernel (Debian's cloud kernel with its modules in
ember's initrd): exit codes, stdin/stdout/stderr, env, -w, -u, 10 MB of output, signals, the
read-only image with a writable layer, -v read-write and read-only sharing (virtio-fs), --net tap
with -p, all inside a private network namespace.

usage: ember_run_linux_test.py EMBER"""
import concurrent.futures
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import common
import images

EMBER = sys.argv[1]
NAMESPACE = f"ember-run-{os.getpid()}"
tally = common.Tally()


LOGS = tempfile.mkdtemp(prefix="ember-run-linux-logs-")
runs = itertools.count()


class LoggedResult(common.Result):
    """A run's result whose description ends with ember's debug log (--log-file): a failure says
    what the VMM and the guest's console saw, not just ember's one line."""

    def __init__(self, result, log_path):
        super().__init__(result.returncode, result.stdout, result.stderr, result.seconds, result.timed_out)
        self.log_path = log_path

    def describe(self):
        try:
            with open(self.log_path, errors="replace") as log:
                tail = "\n".join(log.read().splitlines()[-30:])
        except OSError as error:
            tail = f"(no log: {error})"
        return f"{super().describe()}\nember's log ({self.log_path}), last lines:\n{tail}"


def ember_run(args, timeout=240, stdin_data=None, env=None, namespace=False):
    log_path = os.path.join(LOGS, f"run-{next(runs)}.log")
    command = [EMBER, "run", "--log-level", "debug", "--log-file", log_path, *args]
    if namespace:
        command = ["ip", "netns", "exec", NAMESPACE, *command]
    return LoggedResult(common.run(command, timeout, stdin_data=stdin_data, env=env), log_path)


def exit_codes(image, form):
    r = ember_run([image, "--", "true"])
    tally.check(f"{form}: true -> 0", r.returncode == 0, r.describe())
    r = ember_run([image, "--", "sh", "-c", "exit 7"])
    tally.check(f"{form}: sh -c 'exit 7' -> 7", r.returncode == 7, r.describe())
    r = ember_run([image, "--", "sh", "-c", "kill -9 $$"])
    tally.check(f"{form}: killed by SIGKILL -> 137", r.returncode == 137, r.describe())


def stdin_to_cat(image, form):
    r = ember_run(["-i", image, "--", "cat"], stdin_data=b"a\nb\n")
    tally.check(f"{form}: printf 'a\\nb\\n' | ember run -i -- cat", r.returncode == 0 and
                r.stdout == "a\nb\n", r.describe())


def streams_and_options(image):
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


def bulk_and_overlay(image):
    r = ember_run([image, "--", "sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' x"])
    tally.check("10 MB of stdout intact", r.stdout == "x" * 10_000_000,
                f"exit {r.returncode}, {len(r.stdout)} bytes")
    r = ember_run([image, "--", "sh", "-c", "echo changed > /bin/busybox-was-here; cat /proc/mounts"])
    tally.check("root is an overlay over the read-only image", " / overlay " in r.stdout or
                "overlay / overlay" in r.stdout, r.describe())
    r = ember_run([image, "--", "ls", "/bin/busybox-was-here"])
    tally.check("the image itself never changes (--rm is the default)", r.returncode != 0,
                r.describe())


def sigterm(image):
    """SIGTERM to ember reaches the payload, which traps it."""
    process = subprocess.Popen([EMBER, "run", image, "--", "sh", "-c",
                                "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    tally.check("SIGTERM to ember reaches the payload (trap -> 42)",
                ready == b"ready\n" and process.returncode == 42, f"exit {process.returncode}")


def dynamic_image(dynamic, form):
    r = ember_run([dynamic[form], "--", *dynamic["probe"]])
    tally.check(f"dynamic image ({form}) runs its dynamically linked program",
                r.returncode == 0 and dynamic["expect"] in r.stdout, r.describe())


def volumes(image, work):
    """-v: live read-write and read-only sharing."""
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


def network(image):
    """--net tap and -p, inside a private namespace."""
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
            process.wait()
        tally.check("-p 18080:8080: a host connection reaches the guest's listener",
                    ready == b"ready\n" and b"hello-from-guest" in reply, repr(reply))
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], stderr=subprocess.DEVNULL)


def full_suite(work, built):
    """Everything the issue lists, on the default kernel (Debian's cloud kernel + modules). The
    groups are independent VMs, so they run a few at a time (each check is its own `ember run`)."""
    busybox, dynamic = built["busybox"], built["dynamic"]
    image = busybox["oci"]
    jobs = [lambda: network(image), lambda: volumes(image, work), lambda: sigterm(image),
            lambda: bulk_and_overlay(image), lambda: streams_and_options(image)]
    for form in ("oci", "docker-archive"):
        jobs += [lambda form=form: exit_codes(busybox[form], form),
                 lambda form=form: stdin_to_cat(busybox[form], form),
                 lambda form=form: dynamic_image(dynamic, form)]
    workers = max(2, min(4, os.cpu_count() or 2))
    print(f"{len(jobs)} groups of checks, {workers} at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def main():
    common.announce(3, "ember run with Linux and ember-init, the full suite")
    work = tempfile.mkdtemp(prefix="ember-run-linux-")
    try:
        built = images.build_test_images(os.path.join(work, "images"))
        full_suite(work, built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(LOGS, ignore_errors=True)
    tally.finish()


main()
